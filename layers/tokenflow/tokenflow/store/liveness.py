"""Liveness in Blynk: what the verification pass (``tokenflow.liveness``) reads and records.

- the confirmed devices, a page at a time from the index of devices by state (keys only, no scan), then
  their items by BatchGetItem;
- on a device item, the result of its last check: ``blynk_check`` (ok, no-data, invalid-token,
  wrong-region:<region>), ``blynk_checked_at``, ``blynk_token`` (the id of the token checked, so a
  result never outlives the token it was about), and, once a value was read, ``blynk_last_seen``
  and ``live_at`` (the first time). Written only while the device is still confirmed with that
  token: a device that moved on meanwhile is left alone. No state changes here;
- one item (``keys.liveness_key``) with the pass's cursor and partial counts, and the counts of its
  last complete walk (what ``/summary`` shows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokenflow.store import devices, keys
from tokenflow.store.codec import to_item
from tokenflow.store.shapes import PlainItem, RawItem
from tokenflow.store.table import Table

CONFIRMED = "confirmed"


class LivenessStore:
    """The store's liveness part over one table (the ``Store``'s own ``db``)."""

    def __init__(self, db: Table) -> None:
        self.db = db

    def confirmed_page(
        self, limit: int, cursor: Mapping[str, Any] | None
    ) -> tuple[list[str], RawItem | None]:
        """Confirmed device ids, in device id order, and where the next page starts (None: the end)."""
        return devices.devices_in_state(self.db, CONFIRMED, limit, cursor)

    def resume_after(self, device_id: str) -> RawItem:
        """The cursor that resumes the confirmed listing after ``device_id``."""
        return keys.device_listing_key(CONFIRMED, device_id)

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, PlainItem]:
        return devices.get_devices(self.db, device_ids)

    def record_check(
        self,
        device_id: str,
        token_tid: str,
        check: str,
        now: str,
        last_seen: str | None,
    ) -> None:
        """Record one check on the device; ``last_seen`` (a value was read) also sets ``live_at`` the
        first time. Nothing when the device is no longer confirmed with that token."""
        sets = ["blynk_check = :check", "blynk_checked_at = :now", "blynk_token = :tid"]
        values: dict[str, Any] = {":check": check, ":now": now, ":tid": token_tid, ":confirmed": CONFIRMED}
        if last_seen is not None:
            sets += ["blynk_last_seen = :seen", "live_at = if_not_exists(live_at, :now)"]
            values[":seen"] = last_seen
        self.db.update_if(  # None when the device moved on meanwhile: not an error
            keys.Keys.device(device_id),
            ConditionExpression="token_id = :tid AND #state = :confirmed",
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=to_item(values),
        )

    def state(self) -> PlainItem:
        """The pass's item: ``walk`` (cursor and partial counts) and ``latest`` (last complete walk)."""
        item = self.db.get(keys.liveness_key()) or {}
        return keys.without_key(item)

    def save_state(self, walk: Mapping[str, Any], latest: Mapping[str, Any] | None) -> None:
        values: dict[str, Any] = {":walk": dict(walk)}
        update = "SET walk = :walk"
        if latest is not None:
            update += ", latest = :latest"
            values[":latest"] = dict(latest)
        self.db.call(
            "UpdateItem",
            TableName=self.db.name,
            Key=keys.liveness_key(),
            UpdateExpression=update,
            ExpressionAttributeValues=to_item(values),
        )

    def latest(self) -> PlainItem | None:
        """The counts of the last complete walk, or None before the first one."""
        item = self.db.get(keys.liveness_key(), ProjectionExpression="latest")
        latest: PlainItem | None = (item or {}).get("latest")
        return latest
