"""DESIGN.md's invariants, checked against the whole table (a Scan: tests only)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from tokenflow.model import BOUND_TOKEN_STATES, HOLDING_STATES
from tokenflow.store import DEVICE_STATES, TOKEN_STATES, Store, from_item
from tokenflow.tokens import token_id


def scan_all(client: Any, table: str) -> list[dict]:
    items: list[dict] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items.extend(from_item(i) for i in page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def check_invariants(store: Store) -> dict[str, Any]:
    """Assert invariants 1 and 4; return the true counts and the device -> token binding."""
    items = scan_all(store.client, store.table)
    tokens = {i["pk"].removeprefix("TOKEN#"): i for i in items if i["pk"].startswith("TOKEN#")}
    devices = {i["device_id"]: i for i in items if i["pk"].startswith("DEVICE#")}

    # 1. a token is bound to at most one device; a device holds at most one live token
    holders = Counter(d["token_id"] for d in devices.values() if d.get("token_id"))
    assert not [t for t, n in holders.items() if n > 1], "a token is held by two devices"
    for device_id, device in devices.items():
        if device.get("token_id"):
            token = tokens[device["token_id"]]
            assert token.get("device_id") == device_id, f"token and device {device_id} disagree"
            assert token["state"] != "available"
    for tid, token in tokens.items():
        if token["state"] in BOUND_TOKEN_STATES:
            assert devices.get(token["device_id"], {}).get("token_id") == tid, (
                f"token {tid[:8]} has no holder"
            )
        if token["state"] == "available":
            assert "device_id" not in token and "apk" in token

    # every device in exactly one known state, listed under it in the by-state index
    for device_id, device in devices.items():
        assert device["state"] in DEVICE_STATES, f"device {device_id} in unknown state {device['state']}"
        assert device.get("gsi1pk") == f"DEVSTATE#{device['state']}", f"device {device_id} indexed wrongly"
        # a device holds a token in the holding states only: never retired, clearing or waiting
        assert bool(device.get("token_id")) == (device["state"] in HOLDING_STATES), (
            f"device {device_id} is {device['state']} with token {device.get('token_id', '')[:8]}"
        )
    for tid, token in tokens.items():
        assert token["state"] in TOKEN_STATES
        assert ("apk" in token) == (token["state"] == "available"), f"token {tid[:8]} indexed wrongly"
        if token["state"] in {"released", "revoked"} and token.get("device_id"):
            assert devices.get(token["device_id"], {}).get("token_id") != tid, (
                f"a {token['state']} token {tid[:8]} is still held"
            )

    # 4. the per-status counters equal the true counts
    true_tokens = Counter(t["state"] for t in tokens.values())
    true_devices = Counter(d["state"] for d in devices.values())
    summary = store.summary()
    assert summary["tokens"] == {s: true_tokens.get(s, 0) for s in TOKEN_STATES}
    assert summary["devices"] == {s: true_devices.get(s, 0) for s in DEVICE_STATES}
    return {
        "tokens": dict(true_tokens),
        "devices": dict(true_devices),
        "binding": {d: i.get("token_id") for d, i in devices.items()},
    }


def check_ledgers(store: Store, device_ledgers: Mapping[str, Mapping[str, Any] | None]) -> None:
    """What the devices themselves hold (their synced Ledger copies) against the table, once every
    queued Ledger write has been made: no revoked or released token in any Ledger, no device using a
    token the table does not give it (so no retired or clearing device holds one), and every
    delivered or confirmed device holds its own."""
    items = scan_all(store.client, store.table)
    tokens = {i["pk"].removeprefix("TOKEN#"): i for i in items if i["pk"].startswith("TOKEN#")}
    devices = {i["device_id"]: i for i in items if i["pk"].startswith("DEVICE#")}
    for device_id, data in device_ledgers.items():
        value = (data or {}).get("blynk_token") or ""
        record = devices.get(device_id)
        if record and record["state"] in {"delivered", "confirmed"}:
            assert value and token_id(value) == record["token_id"], f"device {device_id} lacks its token"
        if not value:
            continue
        tid = token_id(value)
        assert tokens[tid]["state"] not in {"revoked", "released"}, (
            f"device {device_id}'s Ledger holds a {tokens[tid]['state']} token"
        )
        assert record is not None and record.get("token_id") == tid, (
            f"device {device_id} ({record and record['state']}) holds a token the table does not give it"
        )
