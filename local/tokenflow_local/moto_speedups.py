"""Speed-ups for moto's DynamoDB (item-level transaction rollback, fast scalar comparisons, queries
that neither sort the whole table nor measure the items they skip), for moto's SQS clock and for
the server's choice of a service for each request.

moto backs up a whole table (``copy.deepcopy``) before every TransactWriteItems so that it can roll
back a cancelled one: the cost of a transaction grows with the table, and importing 100,000 tokens
in 1,000 transactions becomes quadratic. This keeps moto's semantics (all or nothing, the same
cancellation reasons) but saves and restores only the items a transaction touches. It changes
nothing but moto, and only in processes that call ``install()`` (tests, the local stack, benchmarks).

moto also compares attribute values (index queries filter and sort every item of the table) through
``DynamoType.cast_value``, a chain of type tests per comparison: a query on a table of a few
thousand items took 130 ms. Scalars (S, B, N, BOOL) now take a short path with the same result.

And moto answers an index query with a range condition (on the ``available`` index's random sort
key, how the assign workers find a free token) by sorting the whole partition and measuring the size
of every item it skips on the way to the first match: a claim cost grows with the token stock.
The query now sees only the ``Limit + 1`` first items that match both conditions, picked with a
heap; moto's own code then sorts, limits (``LastEvaluatedKey`` included), filters and projects them as before.
And those matches are looked for among the items of the queried index partition only: each table
keeps, for every index hash attribute queried so far, its items by that attribute's value
(``_Partitions``), built by one scan at the first such query and kept by every write (put, update,
delete, a transaction's rollback). Before, each query read every item of the table: at 100,000
devices (300,000 items and growing) the search for a free token was a fifth of the fleet
benchmark's process.

And moto's SQS receive looks at every message of the queue several times per message it returns:
it lists the visible ones reading the clock twice per message, and checks each message it returns
against the queue's retention period by computing all the queue's attributes, three counts over
every message among them. At 100,000 queued messages a receive of ten took 1.3 s. The visible ones
are now listed with one clock reading, and the retention period is read from the queue. Sending
computes all the attributes too, for every message, to read ContentBasedDeduplication: a queue's
attributes are now computed one at a time as they are read (the same names, order and values).

And moto's server picks the service of every request by listing moto's own package directory
(``list_of_moto_modules``: an ``os.listdir`` and an ``isdir`` per entry) and trying a few hundred URL
patterns on the Host header, inside a lock every request takes: about a tenth of the local stack's
CPU at 1,000 devices (py-spy). The directory is listed once, and the service found for a Host is
remembered (the patterns never change while the process runs).

And moto parses the same few UpdateExpression strings again for every request, up to three times,
and deep-copies the tree before validating it: the syntax tree of each string is kept (moto only
ever changes copies of it) with its pickle, from which the validator's copy is made; and the
validator's passes over the tree stop rebuilding their processors' fixed maps for every node.

The patches reach into moto's internals, so they are tied to one moto release: ``WRITTEN_FOR``, the
version pinned in requirements-dev.txt. Against any other installed version ``install()`` refuses
(a RuntimeWarning) and moto keeps its own behaviour, slower but right. ``uninstall()`` puts moto's
own code back. tests/integration/test_moto_speedups_parity.py runs one scenario against moto with
and without the patches and requires the same answers: run it (``install(force=True)`` patches any
version) before moving ``WRITTEN_FOR`` to a new moto.
"""

from __future__ import annotations

import bisect
import copy
import functools
import heapq
import importlib.metadata
import itertools
import json
import pickle
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import moto.backends as moto_backends
import moto.dynamodb.models as dynamodb_models
import moto.dynamodb.parsing.validators as moto_validators
import moto.sqs.models as sqs_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Item, Table
from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

# The moto release these patches were written against and checked by the parity test; the same
# version is pinned in requirements-dev.txt (a test keeps the two equal).
WRITTEN_FOR = "5.2.5"
# Checked once, at import: the moto this process runs.
MOTO_VERSION = importlib.metadata.version("moto")

_MISSING = object()
# (owner, attribute, what it was before the patch): what uninstall() puts back, newest first.
_saved: list[tuple[Any, str, Any]] = []


class _TableSharingCopy:
    """Stands in for the ``copy`` module inside moto.dynamodb.models: tables are not copied."""

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def installed() -> bool:
    return bool(_saved)


def install(*, force: bool = False) -> bool:
    """Patch moto (once per process); True when the patches are in place.

    A moto other than ``WRITTEN_FOR`` is left as it is, with a RuntimeWarning, unless ``force``
    (the parity test uses it to check a new moto before ``WRITTEN_FOR`` moves to it).
    """
    if _saved:
        return True
    if MOTO_VERSION != WRITTEN_FOR and not force:
        warnings.warn(
            f"moto {MOTO_VERSION} is installed but tokenflow_local.moto_speedups was written for moto "
            f"{WRITTEN_FOR} (requirements-dev.txt): moto runs unpatched (correct, but slower on large "
            "tables). Run `make venv` to install the pinned moto, or check the patches against this "
            "version with tests/integration/test_moto_speedups_parity.py.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    _patch_transactions()
    _fast_comparisons()
    _fast_range_queries()
    _kept_partitions()
    _fast_sqs_clock()
    _fast_sqs_receive()
    _fast_dispatch()
    _parsed_update_expressions()
    return True


def uninstall() -> None:
    """Put moto's own code back (for the parity test: moto with and without the patches)."""
    while _saved:
        owner, name, before = _saved.pop()
        if before is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, before)


def _patch(owner: Any, name: str, value: Any) -> None:
    """Replace ``owner.name`` (a class's or a module's own attribute), remembering what it was."""
    _saved.append((owner, name, vars(owner).get(name, _MISSING)))
    setattr(owner, name, value)


def _patch_transactions() -> None:
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
                _Partitions.refresh(table, hash_key, range_key)
            raise

    _patch(dynamodb_models, "copy", _TableSharingCopy)
    _patch(DynamoDBBackend, "transact_write_items", transact_write_items)


def _fast_comparisons() -> None:
    slow = DynamoType.cast_value.fget  # type: ignore[attr-defined]

    def cast(value: DynamoType) -> Any:
        kind = value.type
        if kind in ("S", "B", "BOOL"):
            return value.value
        if kind == "N":
            return Decimal(value.value)
        return slow(value)

    _patch(DynamoType, "__hash__", lambda self: hash((self.type, cast(self))))
    _patch(DynamoType, "__eq__", lambda self, other: self.type == other.type and cast(self) == cast(other))
    _patch(DynamoType, "__ne__", lambda self, other: self.type != other.type or cast(self) != cast(other))
    _patch(DynamoType, "__lt__", lambda self, other: cast(self) < cast(other))
    _patch(DynamoType, "__le__", lambda self, other: cast(self) <= cast(other))
    _patch(DynamoType, "__gt__", lambda self, other: cast(self) > cast(other))
    _patch(DynamoType, "__ge__", lambda self, other: cast(self) >= cast(other))


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

    _patch(Table, "all_items", all_items)
    _patch(Table, "query", query)


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
    ordered = _Partitions.of(table).in_order(hash_name, range_name, wanted_type, wanted)
    start = ordered.first(comparison, values) if ordered is not None else None
    if ordered is not None and start is not None:
        # In query order from the first that may match: the first limit + 1 that do are the answer.
        found: list[Item] = []
        for item in itertools.islice(ordered.items, start, None):
            if not item.attrs[range_name].compare(comparison, values):
                if comparison in ("=", "EQ", "BETWEEN"):
                    break  # past the last range value that can match
                continue
            found.append(item)
            if len(found) > limit:  # type: ignore[operator]
                break
        return found
    matching = []
    for item in _Partitions.of(table).items(hash_name, wanted_type, wanted):
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


class _Partitions:
    """For one table, its items by the value of each index hash attribute queried so far: the items
    an index partition holds, without reading the table. Built for an attribute by one scan at its
    first query; every write refreshes the one item it wrote (``refresh``)."""

    _ATTRIBUTE = "_tokenflow_partitions"

    def __init__(self, table: Table) -> None:
        self.table = table
        # attribute -> (type, value) -> item key -> item; and attribute -> item key -> (type, value)
        self.buckets: dict[str, dict[tuple[str, Any], dict[tuple[Any, Any], Item]]] = {}
        self.placed: dict[str, dict[tuple[Any, Any], tuple[str, Any]]] = {}
        # (attribute, range attribute) -> the partitions in moto's query order (``_Sorted``), kept
        # only while every item of them has S range and table keys (None: not kept, scan instead).
        self.sorted: dict[tuple[str, str], dict[tuple[str, Any], _Sorted] | None] = {}

    @classmethod
    def of(cls, table: Table) -> _Partitions:
        kept = table.__dict__.get(cls._ATTRIBUTE)
        if kept is None:
            kept = table.__dict__[cls._ATTRIBUTE] = cls(table)
        return kept  # type: ignore[no-any-return]

    @classmethod
    def refresh(cls, table: Table, hash_key: Any, range_key: Any) -> None:
        """Place the item now at this key (or none) where its attributes say."""
        kept = table.__dict__.get(cls._ATTRIBUTE)
        if kept is None or not kept.buckets:
            return
        key = (hash_key, range_key if table.range_key_attr else None)
        item = table.get_item(hash_key, range_key) if table.range_key_attr else table.items.get(hash_key)
        for attribute in kept.buckets:
            kept._place(attribute, key, item)

    def items(self, attribute: str, value_type: str, value: Any) -> list[Item]:
        if attribute not in self.buckets:
            self.buckets[attribute], self.placed[attribute] = {}, {}
            for item in _unsorted_items(self.table):
                self._place(attribute, (item.hash_key, item.range_key), item)
        return list(self.buckets[attribute].get((value_type, value), {}).values())

    def in_order(self, attribute: str, range_name: str, value_type: str, value: Any) -> _Sorted | None:
        """The partition's items in moto's query order (range value, then the table's keys), or None
        where that order is not kept (a range or key value that is not a string)."""
        self.items(attribute, value_type, value)  # the buckets exist
        view = (attribute, range_name)
        if view not in self.sorted:
            partitions: dict[tuple[str, Any], _Sorted] | None = {}
            for where, bucket in self.buckets[attribute].items():
                for key, item in bucket.items():
                    partitions = self._sorted_add(partitions, where, key, item, range_name)
            self.sorted[view] = partitions
        partitions = self.sorted[view]
        if partitions is None:
            return None
        return partitions.get((value_type, value)) or _Sorted()

    def _sorted_add(
        self,
        partitions: dict[tuple[str, Any], _Sorted] | None,
        where: tuple[str, Any],
        key: tuple[Any, Any],
        item: Item,
        range_name: str,
    ) -> dict[tuple[str, Any], _Sorted] | None:
        if partitions is None:
            return None
        sort_value = item.attrs.get(range_name)
        if sort_value is None:
            return partitions  # not in the index
        keys = [item.attrs.get(k) for k in (self.table.hash_key_attr, self.table.range_key_attr) if k]
        if sort_value.type != "S" or any(k is None or k.type != "S" for k in keys):
            return None  # moto orders other types by their cast values: not kept here
        sorted_items = partitions.get(where)
        if sorted_items is None:
            sorted_items = partitions[where] = _Sorted()
        sorted_items.add((sort_value.value, *(k.value for k in keys)), key, item)
        return partitions

    def _place(self, attribute: str, key: tuple[Any, Any], item: Item | None) -> None:
        before = self.placed[attribute].pop(key, None)
        if before is not None:
            bucket = self.buckets[attribute][before]
            bucket.pop(key, None)
            if not bucket:
                del self.buckets[attribute][before]
            for (of, _), partitions in self.sorted.items():
                if of == attribute and partitions is not None and before in partitions:
                    partitions[before].remove(key)
        value = item.attrs.get(attribute) if item is not None else None
        if value is not None and value.type in ("S", "B"):
            where = (value.type, value.value)
            self.buckets[attribute].setdefault(where, {})[key] = item  # type: ignore[assignment]
            self.placed[attribute][key] = where
            for view, partitions in list(self.sorted.items()):
                if view[0] == attribute:
                    self.sorted[view] = self._sorted_add(partitions, where, key, item, view[1])  # type: ignore[arg-type]


class _Sorted:
    """One index partition's items in query order: sort keys (range value, then the table's key
    values, all strings), their range values alone (to bisect on) and the items, in step."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, ...]] = []
        self.ranges: list[str] = []
        self.items: list[Item] = []
        self.sort_key_of: dict[tuple[Any, Any], tuple[str, ...]] = {}

    def add(self, sort_key: tuple[str, ...], key: tuple[Any, Any], item: Item) -> None:
        at = bisect.bisect_left(self.keys, sort_key)
        self.keys.insert(at, sort_key)
        self.ranges.insert(at, sort_key[0])
        self.items.insert(at, item)
        self.sort_key_of[key] = sort_key

    def remove(self, key: tuple[Any, Any]) -> None:
        sort_key = self.sort_key_of.pop(key, None)
        if sort_key is None:
            return
        at = bisect.bisect_left(self.keys, sort_key)
        del self.keys[at], self.ranges[at], self.items[at]

    def first(self, comparison: str, values: list[Any]) -> int | None:
        """Where the items that may match a range condition begin (None: a condition not kept)."""
        if any(v.type != "S" for v in values):
            return None
        if comparison in (">=", "GE", "=", "EQ", "BETWEEN"):
            return bisect.bisect_left(self.ranges, values[0].value)
        if comparison in (">", "GT"):
            return bisect.bisect_right(self.ranges, values[0].value)
        return None


def _kept_partitions() -> None:
    """Every write to a table refreshes the item it wrote in the table's ``_Partitions``."""
    put, delete, update = Table.put_item, Table.delete_item, DynamoDBBackend.update_item

    def put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        item = put(self, *args, **kwargs)
        _Partitions.refresh(self, item.hash_key, item.range_key)
        return item

    def delete_item(self: Table, hash_key: Any, range_key: Any) -> Any:
        try:
            return delete(self, hash_key, range_key)
        finally:
            _Partitions.refresh(self, hash_key, range_key)

    def update_item(
        self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return update(self, table_name, key, *args, **kwargs)
        finally:
            table = self.tables.get(table_name)
            if table is not None:
                try:
                    hash_key, range_key = self.get_keys_value(table, key)
                except Exception:  # noqa: S110 (a malformed key: moto answered it, nothing was written)
                    pass
                else:
                    _Partitions.refresh(table, hash_key, range_key)

    _patch(Table, "put_item", put_item)
    _patch(Table, "delete_item", delete_item)
    _patch(DynamoDBBackend, "update_item", update_item)


def _parsed_update_expressions() -> None:
    """moto parses an UpdateExpression string into its syntax tree up to three times per request
    (the request's checks, then the update itself), and the functions send the same few expressions
    over and over. The tree of a string is kept: nothing changes it (moto's validator works on a
    deep copy of it, the executor on the validator's), and a string that does not parse raises
    every time, as before (an exception is not kept). The validator's deep copy of a kept tree is
    made from the tree's pickle, taken once: the same tree, for a fifth of the time."""
    make = UpdateExpressionParser.make.__func__  # type: ignore[attr-defined]

    @functools.lru_cache(maxsize=1024)
    def parse(cls: type, expression: str) -> Any:
        tree = make(cls, expression)
        try:  # the validator's copy of a kept tree: unpickled, about five times faster than deepcopy
            blob = pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: S110 (a tree pickle cannot take is deep-copied, as moto does)
            pass
        else:
            setattr(tree, _PICKLED, blob)
        return tree

    def copy_tree(value: Any, memo: Any = None) -> Any:
        blob = getattr(value, _PICKLED, None) if memo is None else None
        if blob is not None:
            return pickle.loads(blob)  # noqa: S301 (pickled above, from moto's own parser)
        return copy.deepcopy(value, memo)

    def cached_make(cls: type, expression: Any) -> Any:
        if not isinstance(expression, str):  # not hashable, or not a string: moto's own answer
            return make(cls, expression)
        return parse(cls, expression)

    _patch(UpdateExpressionParser, "make", classmethod(cached_make))
    _patch(moto_validators, "deepcopy", copy_tree)

    # Each of the validator's ten passes over the tree asks its processor for its map of node
    # classes to functions once per node (twice for a node it processes), and each asks builds the
    # map anew: every processor's map is fixed (node classes to its own bound methods), so each
    # processor builds it once. (moto 5.2.5: no processor overrides nodes_to_be_processed or process.)
    def processing_map(self: DepthFirstTraverser) -> Any:
        found = self.__dict__.get("_tokenflow_map")
        if found is None:
            found = self.__dict__["_tokenflow_map"] = self._processing_map()
        return found

    def nodes_to_be_processed(self: DepthFirstTraverser) -> tuple[type, ...]:
        found = self.__dict__.get("_tokenflow_nodes")
        if found is None:
            found = self.__dict__["_tokenflow_nodes"] = tuple(processing_map(self))
        return found

    def process(self: DepthFirstTraverser, node: Any) -> Any:
        for class_key, processor in processing_map(self).items():
            if isinstance(node, class_key):
                return processor(node)
        return None

    _patch(DepthFirstTraverser, "nodes_to_be_processed", nodes_to_be_processed)
    _patch(DepthFirstTraverser, "process", process)


_PICKLED = "_tokenflow_pickled"  # a kept tree's own pickle (its copies do not carry it)


def _fast_sqs_clock() -> None:
    """moto's SQS asks the time through datetime arithmetic for every message it looks at, twice per
    message per receive: the same clock, read directly."""
    slow = sqs_models.unix_time_millis

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else slow(dt)

    _patch(sqs_models, "unix_time_millis", unix_time_millis)


def _fast_sqs_receive() -> None:
    """moto's receive, without its passes over the whole queue per message it returns."""

    def messages(self: sqs_models.Queue) -> list[sqs_models.Message]:
        # Message.visible and not Message.delayed, with the clock read once for the whole list.
        now = time.time() * 1000.0
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def is_message_valid_based_on_retention_period(
        self: sqs_models.SQSBackend, queue_name: str, message: sqs_models.Message
    ) -> bool:
        # The queue's MessageRetentionPeriod attribute, read from the queue itself.
        retention_period = self.get_queue(queue_name).message_retention_period
        return bool(retention_period + message.sent_timestamp / 1000 > time.time())

    _patch(sqs_models.Queue, "messages", property(messages))
    _patch(sqs_models.Queue, "attributes", property(_QueueAttributes))
    _patch(
        sqs_models.SQSBackend,
        "is_message_valid_based_on_retention_period",
        is_message_valid_based_on_retention_period,
    )


class _QueueAttributes(Mapping[str, Any]):
    """moto's ``Queue.attributes`` (a dict it builds in full on every read, the three message counts
    included), as a mapping of the same names in the same order whose values are computed as moto
    computes them, each when first read."""

    def __init__(self, queue: sqs_models.Queue) -> None:
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)  # Policy and RedrivePolicy among them
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        self._names = dict.fromkeys(names)
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._values:
            queue = self._queue
            if name == "RedrivePolicy" and queue.redrive_policy:
                value: Any = json.dumps(queue.redrive_policy)
            elif name == "Policy" and queue.policy:
                value = queue.policy
            else:
                value = getattr(queue, sqs_models.camelcase_to_underscores(name))
            self._values[name] = str(value).lower() if isinstance(value, bool) else value
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _fast_dispatch() -> None:
    modules = tuple(moto_backends.list_of_moto_modules())
    _patch(moto_backends, "list_of_moto_modules", lambda: modules)
    original = DomainDispatcherApplication.get_backend_for_host
    found: dict[str | None, Any] = {}

    def get_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
        if host not in found:
            found[host] = original(self, host)
        return found[host]

    _patch(DomainDispatcherApplication, "get_backend_for_host", get_backend_for_host)
