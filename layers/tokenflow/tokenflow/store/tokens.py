"""Tokens: storing new ones (never overwriting a stored one), reading them (the AuthToken only on
purpose), finding free ones in the ``available`` index, finding one by its QR token, its history.

A token's state changes only through a rule's plan (``transactions.apply``), never here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tokenflow.store import keys
from tokenflow.store.codec import from_item, to_item
from tokenflow.store.counters import counter_deltas, counter_update
from tokenflow.store.keys import Keys
from tokenflow.store.shapes import PlainItem, Request
from tokenflow.store.table import Table
from tokenflow.store.transactions import (
    MAX_TRANSACTION_BYTES,
    MAX_TRANSACTION_ITEMS,
    TransactionCancelled,
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


def add_tokens(db: Table, tokens: Sequence[NewToken], import_id: str, now: str) -> AddTokensResult:
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
            puts = [_token_put(db, t, import_id, now) for t in pending]
            counter = counter_update(db, counter_deltas(tokens_available=len(pending)))
            try:
                transact(db, [*puts, counter])
            except TransactionCancelled as exc:
                failed = {i for i, c in enumerate(exc.codes[: len(pending)]) if c == "ConditionalCheckFailed"}
                if not failed:
                    raise
                known.extend(t for i, t in enumerate(pending) if i in failed)
                pending = [t for i, t in enumerate(pending) if i not in failed]
                continue
            added.extend(pending)
            pending = []
    return AddTokensResult(added=added, known=known)


def _token_put(db: Table, t: NewToken, import_id: str, now: str) -> Request:
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
    return {
        "Put": {
            "TableName": db.name,
            "Item": {**Keys.token(token_id(t.token)), **to_item(item)},
            "ConditionExpression": keys.ITEM_ABSENT,
        }
    }


def get_token(db: Table, tid: str, *, with_image: bool = False) -> PlainItem | None:
    """A token's item without the AuthToken (and without its QR image unless asked for)."""
    if with_image:
        return db.get(Keys.token(tid))
    return db.get(
        Keys.token(tid),
        ProjectionExpression=", ".join(f"#{a}" for a in _TOKEN_FIELDS),
        ExpressionAttributeNames={f"#{a}": a for a in _TOKEN_FIELDS},
    )


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


def available_candidates(db: Table, limit: int = 5) -> list[tuple[str, str]]:
    """A few available tokens as (token id, token), starting at a random point of the index."""
    start = keys.random_sort_key(db.rng)
    found: list[tuple[str, str]] = []
    for query in keys.available_queries(start):
        answer = db.call("Query", TableName=db.name, **query, Limit=limit - len(found))
        for raw in answer.get("Items", []):
            item = from_item(raw)
            found.append((keys.token_id_of(item), item["token"]))
        if found:  # a few candidates are enough; wrap around only when the tail was empty
            break
    return found


def history(db: Table, tid: str) -> list[PlainItem]:
    """A token's history events, oldest first."""
    answer = db.call("Query", TableName=db.name, **keys.history_query(tid))
    return [from_item(i) for i in answer.get("Items", [])]


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
