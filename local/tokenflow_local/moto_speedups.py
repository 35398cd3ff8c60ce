"""Speed-ups for moto's DynamoDB (item-level transaction rollback, fast scalar comparisons, queries
that neither sort the whole table nor measure the items they skip) and for moto's SQS clock.

moto backs up a whole table (``copy.deepcopy``) before every TransactWriteItems so that it can roll
back a cancelled one: the cost of a transaction grows with the table, and importing 100,000 tokens
in 1,000 transactions becomes quadratic. This keeps moto's semantics (all or nothing, the same
cancellation reasons) but saves and restores only the items a transaction touches. It changes
nothing but moto, and only in processes that call ``install()`` (tests, the local stack, benchmarks).

moto also compares attribute values (index queries filter and sort every item of the table) through
``DynamoType.cast_value``, a chain of type tests per comparison: a query on a table of a few
thousand items took 130 ms. Scalars (S, B, N, BOOL) now take a short path with the same result.

And moto answers an index query with a range condition (``apk = :p AND ask >= :s``, how the assign
workers find a free token) by sorting the whole partition and measuring the size of every item it
skips on the way to the first match: a claim cost grows with the token stock. The query now sees
only the ``Limit + 1`` first items that match both conditions, picked with a heap; moto's own code
then sorts, limits (``LastEvaluatedKey`` included), filters and projects them as before.
"""

from __future__ import annotations

import copy
import heapq
import threading
import time
from decimal import Decimal
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Item, Table

_installed = False


class _TableSharingCopy:
    """Stands in for the ``copy`` module inside moto.dynamodb.models: tables are not copied."""

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def install() -> None:
    global _installed
    if _installed:
        return
    import moto.dynamodb.models as models

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[Table, Any, Any, Any]] = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName", ""))
            if table is None:
                continue
            if "Item" in op:
                key = {table.hash_key_attr: op["Item"].get(table.hash_key_attr)}
                if table.range_key_attr:
                    key[table.range_key_attr] = op["Item"].get(table.range_key_attr)
            else:
                key = op.get("Key", {})
            try:
                hash_key, range_key = self.get_keys_value(table, key)
            except Exception:  # noqa: S112 (a malformed key: moto's own validation answers it)
                continue
            saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(saved):
                bucket = table.items[hash_key] if table.range_key_attr else table.items
                slot = range_key if table.range_key_attr else hash_key
                if item is None:
                    bucket.pop(slot, None)
                else:
                    bucket[slot] = item
                if table.range_key_attr and not table.items[hash_key]:
                    table.items.pop(hash_key, None)
            raise

    models.copy = _TableSharingCopy  # type: ignore[assignment]
    _fast_comparisons()
    _fast_range_queries()
    _fast_sqs_clock()
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _installed = True


def _fast_comparisons() -> None:
    slow = DynamoType.cast_value.fget  # type: ignore[attr-defined]

    def cast(value: DynamoType) -> Any:
        kind = value.type
        if kind in ("S", "B", "BOOL"):
            return value.value
        if kind == "N":
            return Decimal(value.value)
        return slow(value)

    DynamoType.__hash__ = lambda self: hash((self.type, cast(self)))  # type: ignore[method-assign]
    DynamoType.__eq__ = lambda self, other: self.type == other.type and cast(self) == cast(other)  # type: ignore[method-assign,assignment]
    DynamoType.__ne__ = lambda self, other: self.type != other.type or cast(self) != cast(other)  # type: ignore[method-assign,assignment]
    DynamoType.__lt__ = lambda self, other: cast(self) < cast(other)  # type: ignore[method-assign]
    DynamoType.__le__ = lambda self, other: cast(self) <= cast(other)  # type: ignore[method-assign]
    DynamoType.__gt__ = lambda self, other: cast(self) > cast(other)  # type: ignore[method-assign]
    DynamoType.__ge__ = lambda self, other: cast(self) >= cast(other)  # type: ignore[method-assign]


_query_items = threading.local()


def _fast_range_queries() -> None:
    original_query = Table.query
    original_all_items = Table.all_items

    def all_items(self: Table) -> Any:
        chosen = getattr(_query_items, "items", None)
        if chosen is not None and getattr(_query_items, "table", None) is self:
            return iter(chosen)
        return original_all_items(self)

    def query(self: Table, *args: Any, **kwargs: Any) -> Any:
        # moto's all_items() sorts the whole table, and a query sorts what matches again: a query
        # reads the items unsorted (and, when it can, only the first matches).
        chosen = _first_matches(self, *args, **kwargs)
        if chosen is None:
            chosen = list(_unsorted_items(self))
        _query_items.table, _query_items.items = self, chosen
        try:
            return original_query(self, *args, **kwargs)
        finally:
            _query_items.table = _query_items.items = None

    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]


def _unsorted_items(table: Table) -> Any:
    for hash_set in table.items.values():
        if table.range_key_attr:
            yield from hash_set.values()
        else:
            yield hash_set


def _first_matches(
    table: Table,
    hash_key: Any,
    range_comparison: str | None,
    range_objs: Any,
    limit: int | None,
    exclusive_start_key: Any,
    scan_index_forward: bool,
    projection_expressions: Any,
    index_name: str | None = None,
    consistent_read: bool = False,
    filter_expression: Any = None,
    hash_key_conditions: list | None = None,
    range_key_conditions: list | None = None,
    **_: Any,
) -> list[Item] | None:
    """The ``limit + 1`` first items of an ascending, unpaged index query with one hash and one range
    condition; None for every other query (moto answers it unchanged)."""
    if not (index_name and limit and scan_index_forward and not exclusive_start_key):
        return None
    if len(hash_key_conditions or []) != 1 or len(range_key_conditions or []) != 1:
        return None
    index = next((i for i in table.all_indexes() if i.name == index_name), None)
    if index is None:
        return None
    schema = {k["KeyType"]: k["AttributeName"] for k in index.schema}
    hash_name, hash_value = hash_key_conditions[0]  # type: ignore[index]
    range_name, comparison, values = range_key_conditions[0]  # type: ignore[index]
    if len(index.schema) != 2 or schema.get("HASH") != hash_name or schema.get("RANGE") != range_name:
        return None
    table_keys = [k for k in (table.hash_key_attr, table.range_key_attr) if k]
    wanted_type, wanted = hash_value.type, hash_value.value
    if wanted_type not in ("S", "B"):  # numbers compare by value, not by their text: moto's way
        return None
    matching = []
    for item in _unsorted_items(table):
        value = item.attrs.get(hash_name)
        # Equal raw values of the same type are equal S or B keys.
        if value is None or value.value != wanted or value.type != wanted_type:
            continue
        attrs = item.attrs
        sort_value = attrs.get(range_name)
        if sort_value is not None and sort_value.compare(comparison, values):
            matching.append(item)
    return heapq.nsmallest(
        limit + 1,  # type: ignore[operator]
        matching,
        key=lambda item: (item.attrs[range_name], *(item.attrs[k] for k in table_keys)),
    )


def _fast_sqs_clock() -> None:
    """moto's SQS asks the time through datetime arithmetic for every message it looks at, twice per
    message per receive: the same clock, read directly."""
    import moto.sqs.models as sqs_models

    slow = sqs_models.unix_time_millis

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else slow(dt)

    sqs_models.unix_time_millis = unix_time_millis  # type: ignore[assignment]
