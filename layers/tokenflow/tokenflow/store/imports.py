"""Imports: one record per export file (keyed by its SHA-256) and the short list of recent imports
the summary shows.

An import is claimed (``begin_import``), then finished with its outcome (``finish_import``), which
also lists it among the recent ones; ``list_imports`` pages through all of them, newest first.

While its tokens are stored, the import record keeps a checkpoint (``checkpoint_update``, written
in the same transaction as each chunk of tokens): how many of the file's tokens are stored, in the
order the file lists them, in how many chunks, and how many of them were added or already known.
An attempt that stopped (a Lambda timeout) is continued from there by the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenflow.store import keys
from tokenflow.store.codec import from_item, to_item
from tokenflow.store.keys import Keys
from tokenflow.store.shapes import PlainItem, RawItem, Request
from tokenflow.store.table import Table

# The summary shows this many; the list item is trimmed back to it when it has grown to twice that.
RECENT_IMPORTS_KEPT = 10


# Checkpoint attributes of an import record.
CHECKPOINT_TOKENS = "checkpoint_tokens"  # the first this-many tokens of the file are stored
CHECKPOINT_CHUNKS = "checkpoint_chunks"  # transactions that stored them
CHECKPOINT_ADDED = "checkpoint_added"  # of them, new tokens
CHECKPOINT_KNOWN = "checkpoint_known"  # of them, tokens stored already (by another import)


@dataclass(frozen=True)
class Checkpoint:
    """Where the storing of an import's tokens stands (all zero: nothing stored yet)."""

    tokens: int = 0
    chunks: int = 0
    added: int = 0
    known: int = 0

    @staticmethod
    def of(record: Mapping[str, Any] | None) -> Checkpoint:
        """The checkpoint an import record holds."""
        record = record or {}
        return Checkpoint(
            tokens=int(record.get(CHECKPOINT_TOKENS, 0)),
            chunks=int(record.get(CHECKPOINT_CHUNKS, 0)),
            added=int(record.get(CHECKPOINT_ADDED, 0)),
            known=int(record.get(CHECKPOINT_KNOWN, 0)),
        )


def get_import(db: Table, sha256: str) -> PlainItem | None:
    return db.get(Keys.import_(sha256))


def checkpoint_update(db: Table, sha256: str, stored: int, added: int, known: int) -> Request:
    """The transaction item that records, with a chunk of tokens, that the file's first ``stored``
    tokens are stored, ``added`` + ``known`` of them by this chunk.

    ``stored`` is set, not added: each attempt walks the file in the same order, so any value an
    attempt writes is true (every token before it is stored), even when two attempts overlap.
    """
    return {
        "Update": {
            "TableName": db.name,
            "Key": Keys.import_(sha256),
            "UpdateExpression": "SET #tokens = :stored ADD #chunks :one, #added :added, #known :known",
            "ExpressionAttributeNames": {
                "#tokens": CHECKPOINT_TOKENS,
                "#chunks": CHECKPOINT_CHUNKS,
                "#added": CHECKPOINT_ADDED,
                "#known": CHECKPOINT_KNOWN,
            },
            "ExpressionAttributeValues": to_item(
                {":stored": stored, ":one": 1, ":added": added, ":known": known}
            ),
        }
    }


def begin_import(db: Table, sha256: str, source_key: str, size: int, now: str) -> None:
    """Record that a file is being imported (first attempt, or again after an interrupted one)."""
    db.call(
        "UpdateItem",
        TableName=db.name,
        Key=Keys.import_(sha256),
        UpdateExpression=(
            "SET #kind = :kind, #status = if_not_exists(#status, :processing), "
            "source_key = if_not_exists(source_key, :key), size_bytes = :size, "
            "started_at = if_not_exists(started_at, :now), #lpk = :part, "
            "#lsk = if_not_exists(#lsk, :sortkey) ADD attempts :one"
        ),
        ExpressionAttributeNames={
            "#kind": "kind",
            "#status": "status",
            "#lpk": keys.BY_STATE_PK,
            "#lsk": keys.BY_STATE_SK,
        },
        ExpressionAttributeValues=to_item(
            {
                ":kind": "import",
                ":processing": "processing",
                ":key": source_key,
                ":size": size,
                ":now": now,
                ":part": keys.IMPORTS_PARTITION,
                ":sortkey": keys.import_listing_sort_key(now, sha256),
                ":one": 1,
            }
        ),
    )


def finish_import(db: Table, sha256: str, summary: Mapping[str, Any], now: str) -> None:
    """Store the outcome of an import and list it among the recent ones (two small writes)."""
    status = summary["status"]
    db.call(
        "UpdateItem",
        TableName=db.name,
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
    _add_recent_import(db, sha256, brief)


def _add_recent_import(db: Table, sha256: str, brief: Mapping[str, Any]) -> None:
    """List an import among the recent ones, keeping the list bounded on every write: the update
    answers the list as it now is, and once it holds twice ``RECENT_IMPORTS_KEPT`` the older half
    is removed (one more write per ``RECENT_IMPORTS_KEPT`` imports, no extra read)."""
    # One SET cannot both create the map and set a key inside it (overlapping paths), so the
    # first import ever creates the map, and a lost race with another first import retries.
    for _ in range(3):
        answer = db.update_if(
            Keys.recent_imports(),
            UpdateExpression="SET #imports.#id = :brief",
            ConditionExpression="attribute_exists(#imports)",
            ExpressionAttributeNames={"#imports": "imports", "#id": sha256},
            ExpressionAttributeValues=to_item({":brief": dict(brief)}),
            ReturnValues="ALL_NEW",
        )
        if answer is not None:
            _trim(db, from_item(answer.get("Attributes", {})))
            return
        created = db.update_if(
            Keys.recent_imports(),
            UpdateExpression="SET #imports = :map",
            ConditionExpression="attribute_not_exists(#imports)",
            ExpressionAttributeNames={"#imports": "imports"},
            ExpressionAttributeValues=to_item({":map": {sha256: dict(brief)}}),
        )
        if created is not None:
            return


def newest_first(recent: Mapping[str, Any]) -> list[PlainItem]:
    """The entries of the recent-imports item (plain values), the latest finished first."""
    return sorted(recent.get("imports", {}).values(), key=lambda i: i.get("finished_at", ""), reverse=True)


def trim_recent_imports(db: Table) -> None:
    """Keep the recent-imports item small: drop all but the newest entries (every import does it
    as it lists itself; this reads the item to do it on its own)."""
    item = db.call("GetItem", TableName=db.name, Key=Keys.recent_imports()).get("Item")
    if item:
        _trim(db, from_item(item))


def _trim(db: Table, recent: Mapping[str, Any]) -> None:
    """Remove all but the newest ``RECENT_IMPORTS_KEPT`` entries once there are twice as many."""
    if len(recent.get("imports", {})) < RECENT_IMPORTS_KEPT * 2:
        return
    stale = [i["id"] for i in newest_first(recent)[RECENT_IMPORTS_KEPT:]]
    names = {f"#s{n}": sid for n, sid in enumerate(stale)}
    db.call(
        "UpdateItem",
        TableName=db.name,
        Key=Keys.recent_imports(),
        UpdateExpression="REMOVE " + ", ".join(f"#imports.{n}" for n in names),
        ExpressionAttributeNames={"#imports": "imports", **names},
    )


def list_imports(
    db: Table, limit: int = 20, cursor: Mapping[str, Any] | None = None
) -> tuple[list[PlainItem], RawItem | None]:
    """One page of import records, newest first, and where the next page starts (None: no more)."""
    kwargs: dict[str, Any] = {
        "TableName": db.name,
        **keys.imports_query(),
        "ScanIndexForward": False,
        "Limit": limit,
    }
    if cursor:
        kwargs["ExclusiveStartKey"] = dict(cursor)
    page = db.call("Query", **kwargs)
    # The index holds keys only: the records come in one BatchGetItem, newest first as listed.
    listed = [keys.key_of(i) for i in page.get("Items", [])]
    found = {keys.pk_of(item): item for item in db.batch_get(listed)}
    records = [found[keys.raw_pk(k)] for k in listed if keys.raw_pk(k) in found]
    return records, page.get("LastEvaluatedKey")
