"""The DynamoDB repository: the one place that knows the table's key layout.

One table, composite key ``pk``/``sk``:

- token: ``TOKEN#<token id>`` / ``TOKEN``; the token id is the SHA-256 of the AuthToken, so no
  key ever carries the secret;
- device: ``DEVICE#<device id>`` / ``DEVICE``: its state and the token it holds;
- import: ``IMPORT#<sha256 of the file>`` / ``IMPORT``;
- counter shard: ``STATS#<n>`` / ``STATS``: per-state counters, changed in the same transaction as
  the state they count;
- recent imports: ``IMPORTS#RECENT`` / ``IMPORTS``, read together with the counters in one call.

Indexes (sparse, so each holds only the items that carry its key):
- ``available``: ``apk``/``ask`` on available tokens only; ``ask`` is random, so workers that start
  their query at a random point do not all fight over the same token. Projects the key and the token.
- ``by-state``: ``gsi1pk``/``gsi1sk``: devices by state (``DEVSTATE#<state>``) and imports by time.
- ``by-qr``: ``qr_token``: which token a QR code belongs to. Keys only.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from tokenflow import aws
from tokenflow.model import DEVICE_STATES, TOKEN_STATES, Changed, Event, Plan, Write
from tokenflow.tokens import fingerprint, mask, token_id

__all__ = ["DEVICE_STATES", "TOKEN_STATES", "Changed", "Store", "TransactionCancelled"]

STATS_SHARDS = 10
INDEX_AVAILABLE = "available"
INDEX_BY_STATE = "by-state"
INDEX_BY_QR = "by-qr"
AVAILABLE_PARTITION = "AVAILABLE"
IMPORTS_PARTITION = "IMPORTS"
RECENT_IMPORTS_KEPT = 10

MAX_TRANSACTION_ITEMS = 100
# TransactWriteItems accepts 4 MB in all; stay clear of it with per-item estimates.
MAX_TRANSACTION_BYTES = 3_500_000
_RETRYABLE_CODES = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_attr(value: Any) -> dict:
    return _serializer.serialize(value)


def to_item(values: Mapping[str, Any]) -> dict:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict:
    """A DynamoDB item as plain Python: numbers as int (or float), binaries as bytes, sets as lists."""
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return bytes(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value


class Keys:
    """Key of every item kind."""

    @staticmethod
    def token(tid: str) -> dict:
        return {"pk": {"S": f"TOKEN#{tid}"}, "sk": {"S": "TOKEN"}}

    @staticmethod
    def device(device_id: str) -> dict:
        return {"pk": {"S": f"DEVICE#{device_id}"}, "sk": {"S": "DEVICE"}}

    @staticmethod
    def import_(sha256: str) -> dict:
        return {"pk": {"S": f"IMPORT#{sha256}"}, "sk": {"S": "IMPORT"}}

    @staticmethod
    def stats(shard: int) -> dict:
        return {"pk": {"S": f"STATS#{shard}"}, "sk": {"S": "STATS"}}

    @staticmethod
    def recent_imports() -> dict:
        return {"pk": {"S": "IMPORTS#RECENT"}, "sk": {"S": "IMPORTS"}}

    @staticmethod
    def device_state_partition(state: str) -> str:
        return f"DEVSTATE#{state}"


class TransactionCancelled(Exception):
    """A transaction was cancelled for a reason retrying will not fix; ``codes`` per item."""

    def __init__(self, codes: list[str]):
        super().__init__(f"transaction cancelled: {', '.join(sorted(set(codes) - {'None'}))}")
        self.codes = codes


@dataclass
class StoreCalls:
    """DynamoDB calls made through this store, per operation (benchmarks and cost tests read it)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str) -> None:
        self.counts[operation] = self.counts.get(operation, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def writes(self) -> int:
        return sum(
            n for op, n in self.counts.items() if op in {"TransactWriteItems", "PutItem", "UpdateItem"}
        )


@dataclass(frozen=True)
class NewToken:
    """A token about to be stored (what ingest hands over; independent of the export format)."""

    token: str
    qr_token: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    qr_png: bytes | None = None
    row: int | None = None


@dataclass(frozen=True)
class AddTokensResult:
    added: list[NewToken]
    known: list[NewToken]


def counter_deltas(**deltas: int) -> dict[str, int]:
    """``counter_deltas(tokens_available=1)``: only known counter names, zero deltas dropped."""
    valid = {f"tokens_{s}" for s in TOKEN_STATES} | {f"devices_{s}" for s in DEVICE_STATES}
    unknown = set(deltas) - valid
    if unknown:
        raise ValueError(f"unknown counters: {sorted(unknown)}")
    return {k: v for k, v in deltas.items() if v}


class Store:
    """Every read and write of the table goes through here."""

    def __init__(
        self,
        table_name: str,
        client: Any | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Any = time.sleep,
        max_conflict_retries: int = 8,
    ) -> None:
        self.table = table_name
        self._client = client
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._max_conflict_retries = max_conflict_retries
        self.calls = StoreCalls()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    # ---- low-level helpers -------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict:
        self.calls.add(operation)
        method = {
            "TransactWriteItems": self.client.transact_write_items,
            "GetItem": self.client.get_item,
            "PutItem": self.client.put_item,
            "UpdateItem": self.client.update_item,
            "Query": self.client.query,
            "BatchGetItem": self.client.batch_get_item,
        }[operation]
        return method(**kwargs)

    def counter_update(self, deltas: Mapping[str, int], shard: int | None = None) -> dict:
        """One transaction item that applies ``deltas`` to a random counter shard."""
        shard = self._rng.randrange(STATS_SHARDS) if shard is None else shard
        names = {f"#c{i}": name for i, name in enumerate(deltas)}
        values = {f":c{i}": {"N": str(delta)} for i, delta in enumerate(deltas.values())}
        return {
            "Update": {
                "TableName": self.table,
                "Key": Keys.stats(shard),
                "UpdateExpression": "ADD "
                + ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True)),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def transact(self, items: Sequence[dict]) -> None:
        """TransactWriteItems, retried with jittered backoff on conflicts and throttling.

        A cancellation for any other reason (a failed condition) raises TransactionCancelled with the
        per-item codes, so the caller can tell which item's condition failed.
        """
        for attempt in range(self._max_conflict_retries + 1):
            try:
                self._call("TransactWriteItems", TransactItems=list(items))
                return
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = error.get("Code", "")
                if code == "TransactionCanceledException":
                    codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                    if not codes:  # some endpoints only put the reasons in the message
                        codes = _codes_from_message(error.get("Message", ""), len(items))
                    retryable = any(c in _RETRYABLE_CODES for c in codes)
                    if not retryable or "ConditionalCheckFailed" in codes:
                        raise TransactionCancelled(codes) from None
                elif code not in {
                    "TransactionConflictException",
                    "ThrottlingException",
                    "InternalServerError",
                }:
                    raise
                if attempt == self._max_conflict_retries:
                    raise
                self._sleep(min(2.0, 0.02 * 2**attempt) * self._rng.random())

    # ---- tokens ------------------------------------------------------------------------------

    def add_tokens(self, tokens: Sequence[NewToken], import_id: str, now: str) -> AddTokensResult:
        """Store tokens that are not stored yet; never touch one that is (whatever its state).

        One TransactWriteItems per up to 99 tokens plus a counter shard. A token that exists already
        fails its ``attribute_not_exists`` condition; the cancellation reasons say which, and the
        rest is written again without it.
        """
        added: list[NewToken] = []
        known: list[NewToken] = []
        for chunk in _chunks_by_size(tokens, MAX_TRANSACTION_ITEMS - 1, MAX_TRANSACTION_BYTES):
            pending = list(chunk)
            while pending:
                puts = [self._token_put(t, import_id, now) for t in pending]
                counter = self.counter_update(counter_deltas(tokens_available=len(pending)))
                try:
                    self.transact([*puts, counter])
                except TransactionCancelled as exc:
                    failed = {
                        i for i, c in enumerate(exc.codes[: len(pending)]) if c == "ConditionalCheckFailed"
                    }
                    if not failed:
                        raise
                    known.extend(t for i, t in enumerate(pending) if i in failed)
                    pending = [t for i, t in enumerate(pending) if i not in failed]
                    continue
                added.extend(pending)
                pending = []
        return AddTokensResult(added=added, known=known)

    def _token_put(self, t: NewToken, import_id: str, now: str) -> dict:
        item = {
            "kind": "token",
            "token": t.token,
            "token_fp": fingerprint(t.token),
            "token_mask": mask(t.token),
            "qr_token": t.qr_token,
            "state": "available",
            "apk": AVAILABLE_PARTITION,
            "ask": f"{self._rng.getrandbits(64):016x}",
            "import_id": import_id,
            "import_row": t.row,
            "metadata": dict(t.metadata) or None,
            "qr_png": t.qr_png,
            "created_at": now,
        }
        return {
            "Put": {
                "TableName": self.table,
                "Item": {**Keys.token(token_id(t.token)), **to_item(item)},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def get_token(self, tid: str, *, with_image: bool = False) -> dict | None:
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": Keys.token(tid), "ConsistentRead": True}
        if not with_image:
            kwargs["ProjectionExpression"] = ", ".join(f"#{a}" for a in _TOKEN_FIELDS)
            kwargs["ExpressionAttributeNames"] = {f"#{a}": a for a in _TOKEN_FIELDS}
        item = self._call("GetItem", **kwargs).get("Item")
        return from_item(item) if item else None

    def find_token_by_qr(self, qr_token: str) -> str | None:
        """The token id whose QR token this is (by-qr index), or None."""
        answer = self._call(
            "Query",
            TableName=self.table,
            IndexName=INDEX_BY_QR,
            KeyConditionExpression="qr_token = :q",
            ExpressionAttributeValues={":q": {"S": qr_token}},
            Limit=1,
        )
        items = answer.get("Items", [])
        return items[0]["pk"]["S"].removeprefix("TOKEN#") if items else None

    def get_token_secret(self, tid: str) -> str:
        """The AuthToken itself: only for the Ledger write and the one reveal route."""
        item = self._call(
            "GetItem",
            TableName=self.table,
            Key=Keys.token(tid),
            ProjectionExpression="#t",
            ExpressionAttributeNames={"#t": "token"},
            ConsistentRead=True,
        ).get("Item")
        if not item:
            raise KeyError(f"token {tid[:12]} not found")
        return item["token"]["S"]

    # ---- imports -----------------------------------------------------------------------------

    def get_import(self, sha256: str) -> dict | None:
        item = self._call("GetItem", TableName=self.table, Key=Keys.import_(sha256), ConsistentRead=True).get(
            "Item"
        )
        return from_item(item) if item else None

    def begin_import(self, sha256: str, source_key: str, size: int, now: str) -> None:
        """Record that a file is being imported (first attempt, or again after an interrupted one)."""
        self._call(
            "UpdateItem",
            TableName=self.table,
            Key=Keys.import_(sha256),
            UpdateExpression=(
                "SET #kind = :kind, #status = if_not_exists(#status, :processing), "
                "source_key = if_not_exists(source_key, :key), size_bytes = :size, "
                "started_at = if_not_exists(started_at, :now), gsi1pk = :part, "
                "gsi1sk = if_not_exists(gsi1sk, :sortkey) ADD attempts :one"
            ),
            ExpressionAttributeNames={"#kind": "kind", "#status": "status"},
            ExpressionAttributeValues=to_item(
                {
                    ":kind": "import",
                    ":processing": "processing",
                    ":key": source_key,
                    ":size": size,
                    ":now": now,
                    ":part": IMPORTS_PARTITION,
                    ":sortkey": f"{now}#{sha256}",
                    ":one": 1,
                }
            ),
        )

    def finish_import(self, sha256: str, summary: Mapping[str, Any], now: str) -> None:
        """Store the outcome of an import and list it among the recent ones (two small writes)."""
        status = summary["status"]
        self._call(
            "UpdateItem",
            TableName=self.table,
            Key=Keys.import_(sha256),
            UpdateExpression="SET #status = :status, summary = :summary, finished_at = :now",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_item({":status": status, ":summary": dict(summary), ":now": now}),
        )
        brief = {
            "id": sha256,
            "status": status,
            "source_key": summary.get("source_key"),
            "tokens_added": summary.get("tokens_added", 0),
            "finished_at": now,
        }
        self._add_recent_import(sha256, brief)

    def _add_recent_import(self, sha256: str, brief: Mapping[str, Any]) -> None:
        # One SET cannot both create the map and set a key inside it (overlapping paths), so the
        # first import ever creates the map, and a lost race with another first import retries.
        for _ in range(3):
            try:
                self._call(
                    "UpdateItem",
                    TableName=self.table,
                    Key=Keys.recent_imports(),
                    UpdateExpression="SET #imports.#id = :brief",
                    ConditionExpression="attribute_exists(#imports)",
                    ExpressionAttributeNames={"#imports": "imports", "#id": sha256},
                    ExpressionAttributeValues=to_item({":brief": dict(brief)}),
                )
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
            try:
                self._call(
                    "UpdateItem",
                    TableName=self.table,
                    Key=Keys.recent_imports(),
                    UpdateExpression="SET #imports = :map",
                    ConditionExpression="attribute_not_exists(#imports)",
                    ExpressionAttributeNames={"#imports": "imports"},
                    ExpressionAttributeValues=to_item({":map": {sha256: dict(brief)}}),
                )
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise

    def list_imports(
        self, limit: int = 20, cursor: Mapping[str, Any] | None = None
    ) -> tuple[list[dict], dict | None]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": INDEX_BY_STATE,
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": IMPORTS_PARTITION}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = dict(cursor)
        page = self._call("Query", **kwargs)
        # The index holds keys only: the records come in one BatchGetItem, newest first as listed.
        keys = [{"pk": i["pk"], "sk": i["sk"]} for i in page.get("Items", [])]
        found = {item["pk"]: item for item in self._batch_get(keys)}
        records = [found[k["pk"]["S"]] for k in keys if k["pk"]["S"] in found]
        return records, page.get("LastEvaluatedKey")

    def _batch_get(self, keys: Sequence[dict]) -> list[dict]:
        """Items by key, one BatchGetItem per 100 keys (unprocessed keys asked for again)."""
        found: list[dict] = []
        for start in range(0, len(keys), 100):
            request = {self.table: {"Keys": list(keys[start : start + 100]), "ConsistentRead": True}}
            while request:
                answer = self._call("BatchGetItem", RequestItems=request)
                found.extend(from_item(raw) for raw in answer.get("Responses", {}).get(self.table, []))
                request = answer.get("UnprocessedKeys") or {}
        return found

    # ---- devices -----------------------------------------------------------------------------

    def get_device(self, device_id: str) -> dict | None:
        item = self._call(
            "GetItem", TableName=self.table, Key=Keys.device(device_id), ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, dict]:
        """Device items by id, one BatchGetItem per 100 ids (a Particle listing page)."""
        keys = [Keys.device(d) for d in dict.fromkeys(device_ids)]
        return {item["device_id"]: item for item in self._batch_get(keys)}

    def available_candidates(self, limit: int = 5) -> list[tuple[str, str]]:
        """A few available tokens as (token id, token), starting at a random point of the index."""
        start = f"{self._rng.getrandbits(64):016x}"
        found: list[tuple[str, str]] = []
        for condition in ("apk = :p AND ask >= :s", "apk = :p AND ask < :s"):
            answer = self._call(
                "Query",
                TableName=self.table,
                IndexName=INDEX_AVAILABLE,
                KeyConditionExpression=condition,
                ExpressionAttributeValues={":p": {"S": AVAILABLE_PARTITION}, ":s": {"S": start}},
                Limit=limit - len(found),
            )
            for raw in answer.get("Items", []):
                item = from_item(raw)
                found.append((item["pk"].removeprefix("TOKEN#"), item["token"]))
            if found:  # a few candidates are enough; wrap around only when the tail was empty
                break
        return found

    def apply(self, plan: Plan, now: str) -> None:
        """Carry out a rule's plan as one transaction: every write guarded as the rule read its item,
        the history events, and the counter shard moved by the state changes the writes make.

        Raises Changed (naming the item) when any guarded item changed since it was read.
        """
        items = [self._write_item(w) for w in plan.writes]
        items += [self._history_event(e, now) for e in plan.events]
        deltas = plan.counter_deltas()
        if deltas:
            items.append(self.counter_update(counter_deltas(**deltas)))
        if not items:
            return
        try:
            self.transact(items)
        except TransactionCancelled as exc:
            for write, code in zip(plan.writes, exc.codes, strict=False):
                if code == "ConditionalCheckFailed":
                    raise Changed(f"{write.kind} {write.id[:12]}") from None
            raise

    def _write_item(self, write: Write) -> dict:
        key = Keys.token(write.id) if write.kind == "token" else Keys.device(write.id)
        values = dict(write.values)
        state_after = write.state_after
        if "state" in values and write.state_before != state_after:
            if write.kind == "device":
                values["gsi1pk"] = Keys.device_state_partition(state_after or "")
            elif state_after == "available":
                values.update(apk=AVAILABLE_PARTITION, ask=f"{self._rng.getrandbits(64):016x}")
            elif write.state_before == "available":
                values.update(apk=None, ask=None)
        if write.before is None:
            item = {"kind": write.kind, **values, "version": 1}
            if write.kind == "device":
                item.update(gsi1sk=write.id, device_id=write.id)
            return {
                "Put": {
                    "TableName": self.table,
                    "Item": {**key, **to_item(item)},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        names: dict[str, str] = {"#state": "state", "#version": "version"}
        expr: dict[str, Any] = {}
        conditions = ["#state = :g_state"]
        expr[":g_state"] = write.before.get("state")
        if write.guard == "version":
            if "version" in write.before:
                conditions.append("#version = :g_version")
                expr[":g_version"] = write.before["version"]
            else:
                conditions.append("attribute_not_exists(#version)")
        else:
            bound = "token_id" if write.kind == "device" else "device_id"
            names["#bound"] = bound
            if write.before.get(bound):
                conditions.append("#bound = :g_bound")
                expr[":g_bound"] = write.before[bound]
            else:
                conditions.append("attribute_not_exists(#bound)")
        condition = " AND ".join(conditions)
        if not values:
            return {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": key,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {k: v for k, v in names.items() if k in condition},
                    "ExpressionAttributeValues": to_item(expr),
                }
            }
        sets = {k: v for k, v in values.items() if v is not None}
        removes = [k for k, v in values.items() if v is None]
        for i, name in enumerate(sets):
            names[f"#s{i}"] = name
        for i, name in enumerate(removes):
            names[f"#r{i}"] = name
        expr.update({f":s{i}": v for i, v in enumerate(sets.values())})
        expr.update({":zero": 0, ":one": 1})
        update = "SET " + ", ".join(
            [f"#s{i} = :s{i}" for i in range(len(sets))]
            + ["#version = if_not_exists(#version, :zero) + :one"]
        )
        if removes:
            update += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        return {
            "Update": {
                "TableName": self.table,
                "Key": key,
                "ConditionExpression": condition,
                "UpdateExpression": update,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": to_item(expr),
            }
        }

    def note_attempt(self, device_id: str, token_tid: str, error: str, now: str) -> None:
        """Note a failed Ledger write that will be retried (no state change); nothing when the device
        no longer holds that token."""
        with _unless_changed():
            self._call(
                "UpdateItem",
                TableName=self.table,
                Key=Keys.device(device_id),
                ConditionExpression="token_id = :tid",
                UpdateExpression="SET last_error = :err, updated_at = :now ADD attempts :one",
                ExpressionAttributeValues=to_item({":tid": token_tid, ":err": error, ":now": now, ":one": 1}),
            )

    def note_clear_attempt(self, device_id: str, error: str, now: str) -> None:
        """Note a failed write of the cleared state (the device stays ``clearing``; it is retried)."""
        with _unless_changed():
            self._call(
                "UpdateItem",
                TableName=self.table,
                Key=Keys.device(device_id),
                ConditionExpression="#state = :clearing",
                UpdateExpression="SET last_error = :err, updated_at = :now ADD attempts :one",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=to_item(
                    {":clearing": "clearing", ":err": error, ":now": now, ":one": 1}
                ),
            )

    def note_redelivery(self, device_id: str, token_tid: str, now: str) -> None:
        with _unless_changed():  # the device moved on meanwhile: nothing to note
            self._call(
                "UpdateItem",
                TableName=self.table,
                Key=Keys.device(device_id),
                ConditionExpression="token_id = :tid",
                UpdateExpression="SET redelivered_at = :now, updated_at = :now ADD redeliveries :one",
                ExpressionAttributeValues=to_item({":tid": token_tid, ":now": now, ":one": 1}),
            )

    def history(self, tid: str) -> list[dict]:
        answer = self._call(
            "Query",
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :event)",
            ExpressionAttributeValues={":pk": {"S": f"TOKEN#{tid}"}, ":event": {"S": "EVENT#"}},
        )
        return [from_item(i) for i in answer.get("Items", [])]

    def _history_event(self, event: Event, now: str) -> dict:
        item = {
            "pk": f"TOKEN#{event.token_id}",
            # The random suffix keeps two events of the same kind in the same second apart.
            "sk": f"EVENT#{now}#{event.what}#{self._rng.getrandbits(32):08x}",
            "kind": "event",
            "event": event.what,
            "at": now,
            **{k: v for k, v in event.details.items() if v is not None},
        }
        return {"Put": {"TableName": self.table, "Item": to_item(item)}}

    def devices_in_state(
        self, state: str, limit: int = 100, cursor: Mapping[str, Any] | None = None
    ) -> tuple[list[str], dict | None]:
        """Device ids in one state, a page at a time, from the by-state index (no scan)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": INDEX_BY_STATE,
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": Keys.device_state_partition(state)}},
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = dict(cursor)
        page = self._call("Query", **kwargs)
        return [from_item(i)["gsi1sk"] for i in page.get("Items", [])], page.get("LastEvaluatedKey")

    # ---- counters ----------------------------------------------------------------------------

    def summary(self) -> dict:
        """Every counter shard and the recent imports in one BatchGetItem, summed."""
        keys = [Keys.stats(n) for n in range(STATS_SHARDS)] + [Keys.recent_imports()]
        tokens = dict.fromkeys(TOKEN_STATES, 0)
        devices = dict.fromkeys(DEVICE_STATES, 0)
        recent: list[dict] = []
        for item in self._batch_get(keys):
            if item["pk"] == "IMPORTS#RECENT":
                recent = sorted(
                    item.get("imports", {}).values(), key=lambda i: i.get("finished_at", ""), reverse=True
                )
                continue
            for state in TOKEN_STATES:
                tokens[state] += int(item.get(f"tokens_{state}", 0))
            for state in DEVICE_STATES:
                devices[state] += int(item.get(f"devices_{state}", 0))
        return {"tokens": tokens, "devices": devices, "recent_imports": recent[:RECENT_IMPORTS_KEPT]}

    def trim_recent_imports(self) -> None:
        """Keep the recent-imports item small: drop all but the newest entries (rarely needed)."""
        item = self._call("GetItem", TableName=self.table, Key=Keys.recent_imports()).get("Item")
        if not item:
            return
        imports = from_item(item).get("imports", {})
        if len(imports) <= RECENT_IMPORTS_KEPT * 2:
            return
        ordered = sorted(imports.values(), key=lambda i: i.get("finished_at", ""), reverse=True)
        stale = [i["id"] for i in ordered[RECENT_IMPORTS_KEPT:]]
        names = {f"#s{n}": sid for n, sid in enumerate(stale)}
        self._call(
            "UpdateItem",
            TableName=self.table,
            Key=Keys.recent_imports(),
            UpdateExpression="REMOVE " + ", ".join(f"#imports.{n}" for n in names),
            ExpressionAttributeNames={"#imports": "imports", **names},
        )


_TOKEN_FIELDS = (
    "pk",
    "version",
    "released_at",
    "token_fp",
    "token_mask",
    "qr_token",
    "state",
    "device_id",
    "import_id",
    "import_row",
    "metadata",
    "created_at",
    "assigned_at",
    "delivered_at",
    "confirmed_at",
    "revoked_at",
)


def _estimated_size(t: NewToken) -> int:
    meta = sum(len(k) + len(v) for k, v in t.metadata.items())
    return 400 + len(t.qr_png or b"") + meta


def _chunks_by_size(items: Iterable[NewToken], max_items: int, max_bytes: int) -> Iterator[list[NewToken]]:
    chunk: list[NewToken] = []
    size = 0
    for item in items:
        item_size = _estimated_size(item)
        if chunk and (len(chunk) >= max_items or size + item_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


@contextlib.contextmanager
def _unless_changed() -> Iterator[None]:
    """A conditional note on an item that moved on meanwhile is not an error; anything else is."""
    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise


def _codes_from_message(message: str, count: int) -> list[str]:
    """Parse ``...reasons [ConditionalCheckFailed, None]`` when the response lacks the structured list."""
    start, end = message.find("["), message.rfind("]")
    if start < 0 or end < start:
        return ["None"] * count
    return [c.strip() or "None" for c in message[start + 1 : end].split(",")]
