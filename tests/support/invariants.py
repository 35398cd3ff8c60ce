"""DESIGN.md's invariants, checked against the whole table (a Scan: tests only)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tokenflow.store import DEVICE_STATES, TOKEN_STATES, Store, from_item


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
        if token["state"] in {"assigned", "delivered", "confirmed"}:
            assert devices.get(token["device_id"], {}).get("token_id") == tid, (
                f"token {tid[:8]} has no holder"
            )
        if token["state"] == "available":
            assert "device_id" not in token and "apk" in token

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
