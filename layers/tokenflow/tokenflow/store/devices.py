"""Devices: reads of device items and of their listing by state, and the notes a worker leaves on a
device without changing its state (a failed Ledger write, a redelivery).

A device's state changes only through a rule's plan (``transactions.apply``), never here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokenflow.store import keys
from tokenflow.store.codec import from_item, to_item
from tokenflow.store.keys import Keys
from tokenflow.store.shapes import PlainItem, RawItem
from tokenflow.store.table import Table


def get_device(db: Table, device_id: str) -> PlainItem | None:
    return db.get(Keys.device(device_id))


def get_devices(db: Table, device_ids: Sequence[str]) -> dict[str, PlainItem]:
    """Device items by id, one BatchGetItem per 100 ids (a Particle listing page)."""
    wanted = [Keys.device(d) for d in dict.fromkeys(device_ids)]
    return {item["device_id"]: item for item in db.batch_get(wanted)}


def devices_in_state(
    db: Table, state: str, limit: int = 100, cursor: Mapping[str, Any] | None = None
) -> tuple[list[str], RawItem | None]:
    """Device ids in one state, a page at a time, from the index of devices by state (no scan)."""
    kwargs: dict[str, Any] = {"TableName": db.name, **keys.device_state_query(state), "Limit": limit}
    if cursor:
        kwargs["ExclusiveStartKey"] = dict(cursor)
    page = db.call("Query", **kwargs)
    ids = [keys.device_id_of_listing_entry(from_item(i)) for i in page.get("Items", [])]
    return ids, page.get("LastEvaluatedKey")


def note_attempt(db: Table, device_id: str, token_tid: str, error: str, now: str) -> None:
    """Note a failed Ledger write that will be retried (no state change); nothing when the device
    no longer holds that token."""
    _note(db, device_id, ("token_id", token_tid), {"last_error": error, "updated_at": now}, "attempts")


def note_clear_attempt(db: Table, device_id: str, error: str, now: str) -> None:
    """Note a failed write of the cleared state (the device stays ``clearing``; it is retried)."""
    _note(db, device_id, ("state", "clearing"), {"last_error": error, "updated_at": now}, "attempts")


def note_redelivery(db: Table, device_id: str, token_tid: str, now: str) -> None:
    """Note that a held token was asked for again; nothing when the device moved on meanwhile."""
    _note(db, device_id, ("token_id", token_tid), {"redelivered_at": now, "updated_at": now}, "redeliveries")


def _note(
    db: Table, device_id: str, expect: tuple[str, str], values: Mapping[str, str], counter: str
) -> None:
    """Set ``values`` and count one more ``counter`` on a device whose ``expect`` attribute still has
    the expected value; nothing when the device moved on meanwhile."""
    names = {"#expect": expect[0], "#counter": counter, **{f"#v{i}": name for i, name in enumerate(values)}}
    sets = ", ".join(f"#v{i} = :v{i}" for i in range(len(values)))
    db.update_if(  # None when the device moved on meanwhile: not an error
        Keys.device(device_id),
        ConditionExpression="#expect = :expect",
        UpdateExpression=f"SET {sets} ADD #counter :one",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=to_item(
            {":expect": expect[1], ":one": 1, **{f":v{i}": v for i, v in enumerate(values.values())}}
        ),
    )
