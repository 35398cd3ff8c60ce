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
from tokenflow.tokens import fingerprint, mask, token_id

STATS_SHARDS = 10
TOKEN_STATES = ("available", "assigned", "delivered", "confirmed", "revoked")
DEVICE_STATES = ("waiting", "pending", "delivered", "confirmed", "failed", "retired")
# States in which a device holds a live token.
HOLDING_STATES = ("pending", "delivered", "confirmed", "failed")
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


DEVICE_FIELDS = ("name", "serial_number", "platform_id")


class LifecycleError(Exception):
    """An operator's action does not fit the current state (the message says why)."""


class DeviceChanged(Exception):
    """The device is not in the state it was read in: read it again."""


class TokenTaken(Exception):
    """Another worker claimed that token first: take another one."""


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
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": Keys.token(tid)}
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

    def claim(
        self, device_id: str, token_tid: str, token: str, seen_state: str | None, fields: Mapping, now: str
    ) -> None:
        """Bind an available token to a device that holds none, in one transaction with a counter shard.

        ``seen_state`` is the device's state as last read: None (no item yet) or ``waiting``. Raises
        TokenTaken when another worker claimed the token first, DeviceChanged when the device is no
        longer in ``seen_state`` (read it again and decide anew).
        """
        device = {
            "kind": "device",
            "device_id": device_id,
            "state": "pending",
            "gsi1pk": Keys.device_state_partition("pending"),
            "gsi1sk": device_id,
            "token_id": token_tid,
            "token_fp": fingerprint(token),
            "token_mask": mask(token),
            "assigned_at": now,
            "updated_at": now,
            "attempts": 0,
            **{k: v for k, v in fields.items() if k in DEVICE_FIELDS},
        }
        if seen_state is None:
            device_write = {
                "Put": {
                    "TableName": self.table,
                    "Item": {**Keys.device(device_id), **to_item({**device, "first_seen_at": now})},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        else:
            device_write = self._device_update(
                device_id, device, expect_state=seen_state, expect_no_token=True
            )
        deltas = counter_deltas(tokens_available=-1, tokens_assigned=1, devices_pending=1)
        if seen_state is not None:
            deltas[f"devices_{seen_state}"] = deltas.get(f"devices_{seen_state}", 0) - 1
        token_update = {
            "Update": {
                "TableName": self.table,
                "Key": Keys.token(token_tid),
                "ConditionExpression": "#state = :available",
                "UpdateExpression": (
                    "SET #state = :assigned, device_id = :device, assigned_at = :now REMOVE apk, ask"
                ),
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": to_item(
                    {":available": "available", ":assigned": "assigned", ":device": device_id, ":now": now}
                ),
            }
        }
        try:
            self.transact([token_update, device_write, self.counter_update(deltas)])
        except TransactionCancelled as exc:
            if exc.codes[1] == "ConditionalCheckFailed":
                raise DeviceChanged(device_id) from None
            if exc.codes[0] == "ConditionalCheckFailed":
                raise TokenTaken(token_tid) from None
            raise

    def mark_waiting(self, device_id: str, fields: Mapping, now: str) -> bool:
        """Record a new device that found no token; False when the device exists already."""
        item = {
            "kind": "device",
            "device_id": device_id,
            "state": "waiting",
            "gsi1pk": Keys.device_state_partition("waiting"),
            "gsi1sk": device_id,
            "first_seen_at": now,
            "updated_at": now,
            **{k: v for k, v in fields.items() if k in DEVICE_FIELDS},
        }
        put = {
            "Put": {
                "TableName": self.table,
                "Item": {**Keys.device(device_id), **to_item(item)},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        try:
            self.transact([put, self.counter_update(counter_deltas(devices_waiting=1))])
        except TransactionCancelled:
            return False
        return True

    def mark_delivered(self, device_id: str, token_tid: str, seen_state: str, now: str) -> bool:
        """pending (or failed) -> delivered, with the token; False when the device moved on meanwhile."""
        device = self._device_update(
            device_id,
            {
                "state": "delivered",
                "gsi1pk": Keys.device_state_partition("delivered"),
                "delivered_at": now,
                "updated_at": now,
                "last_error": None,
            },
            expect_state=seen_state,
            expect_token=token_tid,
        )
        # The token stays ``assigned`` while its device is pending or failed: it moves with the device.
        token = self._token_state_update(token_tid, device_id, "delivered", now, from_states=("assigned",))
        deltas = {
            f"devices_{seen_state}": -1,
            "devices_delivered": 1,
            "tokens_assigned": -1,
            "tokens_delivered": 1,
        }
        try:
            self.transact([device, token, self.counter_update(counter_deltas(**deltas))])
        except TransactionCancelled:
            return False
        return True

    def record_attempt_failure(
        self, device_id: str, token_tid: str, error: str, *, final: bool, retryable: bool, now: str
    ) -> None:
        """Note a failed Ledger write; ``final`` moves a pending device to ``failed`` (alarmed)."""
        if not final:
            self._call(
                "UpdateItem",
                TableName=self.table,
                Key=Keys.device(device_id),
                ConditionExpression="token_id = :tid",
                UpdateExpression="SET last_error = :err, updated_at = :now ADD attempts :one",
                ExpressionAttributeValues=to_item({":tid": token_tid, ":err": error, ":now": now, ":one": 1}),
            )
            return
        update = self._device_update(
            device_id,
            {
                "state": "failed",
                "gsi1pk": Keys.device_state_partition("failed"),
                "last_error": error,
                "retryable": retryable,
                "failed_at": now,
                "updated_at": now,
            },
            expect_state="pending",
            expect_token=token_tid,
        )
        with contextlib.suppress(TransactionCancelled):  # delivered or failed meanwhile: nothing to record
            self.transact([update, self.counter_update(counter_deltas(devices_pending=-1, devices_failed=1))])

    # ---- lifecycle -----------------------------------------------------------------------------

    def confirm(self, device_id: str, token_tid: str, now: str) -> bool:
        """delivered -> confirmed: the device reported the fingerprint of the token it was given."""
        device = self._device_update(
            device_id,
            {
                "state": "confirmed",
                "gsi1pk": Keys.device_state_partition("confirmed"),
                "confirmed_at": now,
                "updated_at": now,
                "reported_fp": None,
                "mismatch_at": None,
            },
            expect_state="delivered",
            expect_token=token_tid,
        )
        token = self._token_state_update(token_tid, device_id, "confirmed", now, from_states=("delivered",))
        deltas = counter_deltas(
            devices_delivered=-1, devices_confirmed=1, tokens_delivered=-1, tokens_confirmed=1
        )
        try:
            self.transact([device, token, self.counter_update(deltas)])
        except TransactionCancelled:
            return False
        return True

    def flag_mismatch(self, device_id: str, device: Mapping[str, Any], reported: str, now: str) -> None:
        """The device reports another token than the one it was given: flag it; a confirmed one is
        confirmed no longer (it goes back to delivered until it reports the right fingerprint)."""
        state = device["state"]
        values = {"reported_fp": reported, "mismatch_at": now, "updated_at": now}
        if state != "confirmed":
            update = self._device_update(
                device_id, values, expect_state=state, expect_token=device["token_id"]
            )
            with contextlib.suppress(TransactionCancelled):
                self.transact([update])
            return
        values.update(state="delivered", gsi1pk=Keys.device_state_partition("delivered"))
        update = self._device_update(
            device_id, values, expect_state="confirmed", expect_token=device["token_id"]
        )
        token = self._token_state_update(
            device["token_id"], device_id, "delivered", now, from_states=("confirmed",)
        )
        deltas = counter_deltas(
            devices_confirmed=-1, devices_delivered=1, tokens_confirmed=-1, tokens_delivered=1
        )
        with contextlib.suppress(TransactionCancelled):
            self.transact([update, token, self.counter_update(deltas)])

    def transfer(self, old_id: str, new_id: str, new_fields: Mapping[str, Any], now: str) -> dict:
        """RMA: move the old device's token to a new device that holds none; the old one retires.

        One transaction: the old device loses the token and becomes ``retired`` (never served again
        unless an operator asks), the new device takes it (``pending``: its Ledger write follows),
        the token records its new holder, a history event is kept, and the counters move.
        Raises LifecycleError when either device is not in a state that allows it.
        """
        old = self.get_device(old_id)
        if not old or old.get("state") not in HOLDING_STATES:
            raise LifecycleError(f"device {old_id} holds no token to transfer")
        new = self.get_device(new_id)
        new_state = new.get("state") if new else None
        if new_state not in (None, "waiting", "retired"):
            raise LifecycleError(f"device {new_id} already holds a token ({new_state})")
        tid = old["token_id"]
        token = self.get_token(tid)
        if not token or token.get("state") == "revoked":
            raise LifecycleError("the token was revoked")
        old_update = self._device_update(
            old_id,
            {
                "state": "retired",
                "gsi1pk": Keys.device_state_partition("retired"),
                "retired_at": now,
                "updated_at": now,
                "transferred_to": new_id,
                "previous_token_id": tid,
                "previous_token_mask": old.get("token_mask"),
                "token_id": None,
                "token_fp": None,
                "token_mask": None,
            },
            expect_state=old["state"],
            expect_token=tid,
        )
        taking = {
            "kind": "device",
            "device_id": new_id,
            "state": "pending",
            "gsi1pk": Keys.device_state_partition("pending"),
            "gsi1sk": new_id,
            "token_id": tid,
            "token_fp": old.get("token_fp"),
            "token_mask": old.get("token_mask"),
            "assigned_at": now,
            "updated_at": now,
            "attempts": 0,
            "transferred_from": old_id,
            **{k: v for k, v in new_fields.items() if k in DEVICE_FIELDS},
        }
        if new_state is None:
            new_write = {
                "Put": {
                    "TableName": self.table,
                    "Item": {**Keys.device(new_id), **to_item({**taking, "first_seen_at": now})},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        else:
            new_write = self._device_update(new_id, taking, expect_state=new_state, expect_no_token=True)
        token_update = {
            "Update": {
                "TableName": self.table,
                "Key": Keys.token(tid),
                "ConditionExpression": "device_id = :old AND #state IN (:assigned, :delivered, :confirmed)",
                "UpdateExpression": "SET #state = :assigned, device_id = :new, assigned_at = :now",
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": to_item(
                    {
                        ":old": old_id,
                        ":new": new_id,
                        ":now": now,
                        ":assigned": "assigned",
                        ":delivered": "delivered",
                        ":confirmed": "confirmed",
                    }
                ),
            }
        }
        deltas: dict[str, int] = {}
        for name, delta in (
            (f"devices_{old['state']}", -1),
            ("devices_retired", 1),
            ("devices_pending", 1),
            (f"tokens_{token['state']}", -1),
            ("tokens_assigned", 1),
        ):
            deltas[name] = deltas.get(name, 0) + delta
        if new_state is not None:
            deltas[f"devices_{new_state}"] = deltas.get(f"devices_{new_state}", 0) - 1
        event = self._history_event(tid, "transferred", now, {"from": old_id, "to": new_id})
        try:
            self.transact(
                [old_update, new_write, token_update, event, self.counter_update(counter_deltas(**deltas))]
            )
        except TransactionCancelled as exc:
            raise LifecycleError("a device changed during the transfer; try again") from exc
        return {"token_id": tid, "token_mask": old.get("token_mask"), "from": old_id, "to": new_id}

    def revoke(self, tid: str, now: str) -> dict:
        """The static token was deleted in Blynk: it becomes ``revoked`` for good; its holder, if any,
        loses it and goes back to ``waiting`` (the caller queues it for a fresh token)."""
        token = self.get_token(tid)
        if not token:
            raise LifecycleError("no such token")
        state = token["state"]
        if state == "revoked":
            return {
                "token_mask": token.get("token_mask"),
                "device_id": token.get("device_id"),
                "already": True,
            }
        holder = token.get("device_id") if state != "available" else None
        items = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": Keys.token(tid),
                    "ConditionExpression": "#state = :state",
                    "UpdateExpression": "SET #state = :revoked, revoked_at = :now REMOVE apk, ask",
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": to_item(
                        {":state": state, ":revoked": "revoked", ":now": now}
                    ),
                }
            },
            self._history_event(tid, "revoked", now, {"device_id": holder}),
        ]
        deltas = {f"tokens_{state}": -1, "tokens_revoked": 1}
        if holder:
            device = self.get_device(holder)
            if device and device.get("token_id") == tid:
                items.append(
                    self._device_update(
                        holder,
                        {
                            "state": "waiting",
                            "gsi1pk": Keys.device_state_partition("waiting"),
                            "updated_at": now,
                            "revoked_token_id": tid,
                            "previous_token_mask": token.get("token_mask"),
                            "token_id": None,
                            "token_fp": None,
                            "token_mask": None,
                            "last_error": None,
                        },
                        expect_state=device["state"],
                        expect_token=tid,
                    )
                )
                deltas[f"devices_{device['state']}"] = -1
                deltas["devices_waiting"] = 1
            else:
                holder = None
        items.append(self.counter_update(counter_deltas(**deltas)))
        try:
            self.transact(items)
        except TransactionCancelled as exc:
            raise LifecycleError("the token or its device changed during the revocation; try again") from exc
        return {"token_mask": token.get("token_mask"), "device_id": holder, "already": False}

    def note_redelivery(self, device_id: str, token_tid: str, now: str) -> None:
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

    def _history_event(self, tid: str, what: str, now: str, details: Mapping[str, Any]) -> dict:
        item = {
            "pk": f"TOKEN#{tid}",
            "sk": f"EVENT#{now}#{what}",
            "kind": "event",
            "event": what,
            "at": now,
            **{k: v for k, v in details.items() if v is not None},
        }
        return {"Put": {"TableName": self.table, "Item": to_item(item)}}

    def _device_update(
        self,
        device_id: str,
        values: Mapping[str, Any],
        *,
        expect_state: str,
        expect_no_token: bool = False,
        expect_token: str | None = None,
    ) -> dict:
        sets = {k: v for k, v in values.items() if v is not None and k != "device_id"}
        removes = [k for k, v in values.items() if v is None]
        names = {f"#a{i}": k for i, k in enumerate(sets)}
        expr_values = {f":a{i}": v for i, v in enumerate(sets.values())}
        remove_names = {f"#r{i}": k for i, k in enumerate(removes)}
        update = "SET " + ", ".join(f"{n} = {v}" for n, v in zip(names, expr_values, strict=True))
        if removes:
            update += " REMOVE " + ", ".join(remove_names)
        condition = "#state = :expect_state"
        expr_values[":expect_state"] = expect_state
        if expect_no_token:
            condition += " AND attribute_not_exists(token_id)"
        if expect_token:
            condition += " AND token_id = :expect_token"
            expr_values[":expect_token"] = expect_token
        return {
            "Update": {
                "TableName": self.table,
                "Key": Keys.device(device_id),
                "ConditionExpression": condition,
                "UpdateExpression": update,
                "ExpressionAttributeNames": {**names, **remove_names, "#state": "state"},
                "ExpressionAttributeValues": to_item(expr_values),
            }
        }

    def _token_state_update(
        self, token_tid: str, device_id: str, state: str, now: str, *, from_states: Sequence[str]
    ) -> dict:
        allowed = {f":from{i}": s for i, s in enumerate(from_states)}
        return {
            "Update": {
                "TableName": self.table,
                "Key": Keys.token(token_tid),
                "ConditionExpression": f"device_id = :device AND #state IN ({', '.join(allowed)})",
                "UpdateExpression": f"SET #state = :state, {state}_at = :now",
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": to_item(
                    {":device": device_id, ":state": state, ":now": now, **allowed}
                ),
            }
        }

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


def _codes_from_message(message: str, count: int) -> list[str]:
    """Parse ``...reasons [ConditionalCheckFailed, None]`` when the response lacks the structured list."""
    start, end = message.find("["), message.rfind("]")
    if start < 0 or end < start:
        return ["None"] * count
    return [c.strip() or "None" for c in message[start + 1 : end].split(",")]
