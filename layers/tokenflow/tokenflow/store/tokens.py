"""Tokens: storing new ones (never overwriting a stored one), reading them (the AuthToken only on
purpose), finding free ones in the ``available`` index, finding one by its QR token, its history.

A token's state changes only through a rule's plan (``transactions.apply``), never here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenflow.store import keys
from tokenflow.store.codec import from_item, to_item
from tokenflow.store.counters import counter_deltas, counter_update
from tokenflow.store.imports import checkpoint_update
from tokenflow.store.keys import Keys
from tokenflow.store.shapes import PlainItem, Request
from tokenflow.store.table import Table
from tokenflow.store.transactions import (
    MAX_TRANSACTION_BYTES,
    MAX_TRANSACTION_ITEMS,
    TransactionCancelled,
    request_token,
    transact,
)
from tokenflow.tokens import fingerprint, mask, token_id


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


# What a plain read of a token returns: everything but the AuthToken and the QR image.
_TOKEN_FIELDS = (
    keys.PK,
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


# DynamoDB's item size limit, 400 KB (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/
# ServiceQuotas.html#limits-items; "1 KB = 1024 bytes" in that page's units).
MAX_ITEM_BYTES = 400 * 1024
# How long a process remembers an ``available`` partition it found empty (a shard drained, or the
# partition of tokens stored before the shards): new tokens in it are still found, after the others.
EMPTY_PARTITION_SECONDS = 60.0
# Tokens per transaction when each also records the import's checkpoint (and a counter shard).
TOKENS_PER_CHECKPOINTED_TRANSACTION = MAX_TRANSACTION_ITEMS - 2


class ItemTooLarge(ValueError):
    """A token's item would be over DynamoDB's 400 KB item limit."""


def add_tokens(
    db: Table,
    tokens: Sequence[NewToken],
    import_id: str,
    now: str,
    *,
    checkpoint_at: int | None = None,
) -> AddTokensResult:
    """Store tokens that are not stored yet; never touch one that is (whatever its state).

    One TransactWriteItems per up to 99 tokens plus a counter shard, fewer when the items'
    sizes in bytes would pass the 4 MB a transaction takes. A token that exists already fails its
    ``attribute_not_exists`` condition; the cancellation reasons say which, and the rest is
    written again without it.

    With ``checkpoint_at`` (how many of the import's tokens were stored before these), every
    transaction also records the import's checkpoint (``imports.checkpoint_update``), so the
    checkpoint and the tokens are stored together or not at all: 98 tokens per transaction then.
    """
    per_transaction = (
        MAX_TRANSACTION_ITEMS - 1 if checkpoint_at is None else TOKENS_PER_CHECKPOINTED_TRANSACTION
    )
    added: list[NewToken] = []
    known: list[NewToken] = []
    stored = checkpoint_at or 0
    # Each item is built once: a retry without the known tokens sends the same items for the rest.
    puts = [(t, _token_put(db, t, import_id, now)) for t in tokens]
    for chunk in _chunks_by_size(puts, per_transaction, MAX_TRANSACTION_BYTES):
        stored += len(chunk)
        pending = chunk
        known_here = 0
        while pending:
            items = [put for _, put in pending]
            items.append(counter_update(db, counter_deltas(tokens_available=len(pending))))
            if checkpoint_at is not None:
                items.append(checkpoint_update(db, import_id, stored, len(pending), known_here))
            try:
                # Derived from the items (which name the import and its checkpoint): the same
                # chunk sent again by transact's retries is recognised, a reduced one is new.
                transact(db, items, token=request_token("tokens", items))
            except TransactionCancelled as exc:
                failed = {i for i, c in enumerate(exc.codes[: len(pending)]) if c == "ConditionalCheckFailed"}
                if not failed:
                    raise
                known.extend(t for i, (t, _) in enumerate(pending) if i in failed)
                known_here += len(failed)
                pending = [p for i, p in enumerate(pending) if i not in failed]
                if not pending and checkpoint_at is not None:
                    # Every token of the chunk was known: the checkpoint moves on by itself.
                    update = checkpoint_update(db, import_id, stored, 0, known_here)["Update"]
                    db.call("UpdateItem", **update)
                continue
            added.extend(t for t, _ in pending)
            pending = []
    return AddTokensResult(added=added, known=known)


def _token_put(db: Table, t: NewToken, import_id: str, now: str) -> Request:
    """The Put of a new token's item (ItemTooLarge when DynamoDB would refuse its size)."""
    item = {
        "kind": "token",
        "token": t.token,
        "token_fp": fingerprint(t.token),
        "token_mask": mask(t.token),
        "qr_token": t.qr_token,
        "state": "available",
        **keys.available_entry(db.rng),
        "import_id": import_id,
        "import_row": t.row,
        "metadata": dict(t.metadata) or None,
        "qr_png": t.qr_png,
        "created_at": now,
    }
    raw = {**Keys.token(token_id(t.token)), **to_item(item)}
    if item_bytes(raw) > MAX_ITEM_BYTES:
        where = f"row {t.row}" if t.row is not None else "a token"
        raise ItemTooLarge(f"{where}: its item would be over DynamoDB's 400 KB item limit")
    return {"Put": {"TableName": db.name, "Item": raw, "ConditionExpression": keys.ITEM_ABSENT}}


def get_token(db: Table, tid: str, *, with_image: bool = False) -> PlainItem | None:
    """A token's item without the AuthToken (and without its QR image unless asked for)."""
    if with_image:
        return db.get(Keys.token(tid))
    return db.get(
        Keys.token(tid),
        ProjectionExpression=", ".join(f"#{a}" for a in _TOKEN_FIELDS),
        ExpressionAttributeNames={f"#{a}": a for a in _TOKEN_FIELDS},
    )


def get_tokens(db: Table, tids: Sequence[str]) -> dict[str, PlainItem]:
    """Token items by token id (as ``get_token`` reads one), one BatchGetItem per 100 ids."""
    wanted = [Keys.token(t) for t in dict.fromkeys(tids)]
    return {keys.token_id_of(item): item for item in db.batch_get(wanted, projection=_TOKEN_FIELDS)}


def find_token_by_qr(db: Table, qr_token: str) -> str | None:
    """The token id whose QR token this is (from the QR token index), or None."""
    answer = db.call("Query", TableName=db.name, **keys.qr_query(qr_token), Limit=1)
    items = answer.get("Items", [])
    return keys.token_id_from_pk(keys.raw_pk(items[0])) if items else None


def get_token_secret(db: Table, tid: str) -> str:
    """The AuthToken itself: only for the Ledger write and the one reveal route."""
    item = db.call(
        "GetItem",
        TableName=db.name,
        Key=Keys.token(tid),
        ProjectionExpression="#t",
        ExpressionAttributeNames={"#t": "token"},
        ConsistentRead=True,
    ).get("Item")
    if not item:
        raise KeyError(f"token {tid[:12]} not found")
    token: str = item["token"]["S"]
    return token


def available_candidates(
    db: Table, limit: int = 5, *, from_random_point: bool = False
) -> list[tuple[str, str]]:
    """A few available tokens as (token id, token), from a shard drawn at random.

    ``from_random_point`` (an assign batch's candidates, more than a claim's few): the drawn shard
    is read from a point of its sort order drawn at random, and from its start when fewer tokens
    lie past that point (a second query, needed about ``limit`` times in the shard's size). The
    batches of concurrent workers then hold different tokens, where two batches that drew the same
    end of the same shard would hold the same ones and lose most of their claims to each other.

    The shard is drawn among those not found empty lately; should it be empty, the partition of
    tokens stored before the shards comes next, then the other shards in turn, those found empty
    lately last. One query per partition, so a claim costs one query while its shard has tokens,
    and an emptied shard costs one more query once per ``EMPTY_PARTITION_SECONDS`` (per process)
    rather than at every claim that draws it. No answer is ever "none" while a token is left: every
    partition is asked before that. Either end of the shard (its sort key is random, so both are
    random tokens), so that two workers that draw the same shard less often hold the same candidates.
    """
    now = time.monotonic()
    empty = {p for p, since in db.empty_partitions.items() if now - since < EMPTY_PARTITION_SECONDS}
    shards = keys.available_partitions()
    drawable = [p for p in shards if p not in empty] or shards
    first = drawable[db.rng.randrange(len(drawable))]
    turn = shards.index(first)
    others = [keys.AVAILABLE_PARTITION] + [shards[(turn + n) % len(shards)] for n in range(1, len(shards))]
    order = [first] + [p for p in others if p not in empty] + [p for p in others if p in empty]
    forward = db.rng.random() < 0.5
    for partition in order:
        if from_random_point and partition == first:
            items = _from_random_point(db, partition, limit)
        else:
            answer = db.call(
                "Query",
                TableName=db.name,
                **keys.available_query(partition),
                ScanIndexForward=forward,
                Limit=limit,
            )
            items = answer.get("Items", [])
        if items:
            db.empty_partitions.pop(partition, None)
            return [(keys.token_id_of(item), item["token"]) for item in map(from_item, items)]
        db.empty_partitions[partition] = now
    return []


def _from_random_point(db: Table, partition: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` index entries of one partition from a random point on, then from its start."""
    point = keys.random_sort_key(db.rng)
    answer = db.call(
        "Query", TableName=db.name, **keys.available_query(partition, at_or_after=point), Limit=limit
    )
    items: list[dict[str, Any]] = answer.get("Items", [])
    if len(items) < limit:
        answer = db.call(
            "Query",
            TableName=db.name,
            **keys.available_query(partition, before=point),
            Limit=limit - len(items),
        )
        items += answer.get("Items", [])
    return items


def history(db: Table, tid: str) -> list[PlainItem]:
    """A token's history events, oldest first."""
    answer = db.call("Query", TableName=db.name, **keys.history_query(tid))
    return [from_item(i) for i in answer.get("Items", [])]


def item_bytes(item: Mapping[str, Any]) -> int:
    """The size DynamoDB counts for an item (attribute values as the low-level client sends them).

    DynamoDB's item and transaction limits (400 KB an item, 4 MB a TransactWriteItems) are in
    bytes: a string counts the UTF-8 bytes of its attribute name and of its value, binary its raw
    bytes, a number about one byte per two digits plus one, a map or list 3 bytes plus one per
    element ("DynamoDB item sizes and formats",
    https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html).
    A metadata value of 1,000 characters outside ASCII is up to 4,000 bytes.
    """
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: Mapping[str, Any]) -> int:
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "B":
        return len(bytes(inner))
    if kind == "N":
        return (len(inner.strip("-").replace(".", "").strip("0")) + 1) // 2 + 1
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_bytes(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + _value_bytes(v) for v in inner)
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "BS":
        return sum(len(bytes(b)) for b in inner)
    if kind == "NS":
        return sum((len(n.strip("-").replace(".", "").strip("0")) + 1) // 2 + 1 for n in inner)
    raise ValueError(f"unknown attribute type {kind}")


Put = tuple[NewToken, Request]


def _chunks_by_size(puts: Iterable[Put], max_items: int, max_bytes: int) -> Iterator[list[Put]]:
    """The puts in transactions of at most ``max_items`` items and ``max_bytes`` bytes of items."""
    chunk: list[Put] = []
    size = 0
    for put in puts:
        put_size = item_bytes(put[1]["Put"]["Item"])
        if chunk and (len(chunk) >= max_items or size + put_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(put)
        size += put_size
    if chunk:
        yield chunk
