"""Two speed-ups for moto's DynamoDB: item-level transaction rollback and fast scalar comparisons.

moto backs up a whole table (``copy.deepcopy``) before every TransactWriteItems so that it can roll
back a cancelled one: the cost of a transaction grows with the table, and importing 100,000 tokens
in 1,000 transactions becomes quadratic. This keeps moto's semantics (all or nothing, the same
cancellation reasons) but saves and restores only the items a transaction touches. It changes
nothing but moto, and only in processes that call ``install()`` (tests, the local stack, benchmarks).

moto also compares attribute values (index queries filter and sort every item of the table) through
``DynamoType.cast_value``, a chain of type tests per comparison: a query on a table of a few
thousand items took 130 ms. Scalars (S, B, N, BOOL) now take a short path with the same result.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

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
