"""The per-state counters: sharded counter items moved inside the transactions that change the
states they count, and the summary (every shard and the recent imports in one read)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenflow.model import DEVICE_STATES, TOKEN_STATES
from tokenflow.store import imports, pause
from tokenflow.store.keys import Keys, is_liveness, is_pause, is_recent_imports, liveness_key
from tokenflow.store.shapes import PlainItem, Request
from tokenflow.store.table import Table

# Writers pick a shard at random, so concurrent transactions rarely touch the same counter item.
STATS_SHARDS = 10


def counter_deltas(**deltas: int) -> dict[str, int]:
    """``counter_deltas(tokens_available=1)``: only known counter names, zero deltas dropped."""
    valid = {f"tokens_{s}" for s in TOKEN_STATES} | {f"devices_{s}" for s in DEVICE_STATES}
    unknown = set(deltas) - valid
    if unknown:
        raise ValueError(f"unknown counters: {sorted(unknown)}")
    return {k: v for k, v in deltas.items() if v}


def counter_update(db: Table, deltas: Mapping[str, int], shard: int | None = None) -> Request:
    """One transaction item that applies ``deltas`` to a random counter shard."""
    shard = db.rng.randrange(STATS_SHARDS) if shard is None else shard
    names = {f"#c{i}": name for i, name in enumerate(deltas)}
    values = {f":c{i}": {"N": str(delta)} for i, delta in enumerate(deltas.values())}
    return {
        "Update": {
            "TableName": db.name,
            "Key": Keys.stats(shard),
            "UpdateExpression": "ADD " + ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True)),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def summary(db: Table) -> dict[str, Any]:
    """Every counter shard and the recent imports in one BatchGetItem, summed; the same read brings
    the liveness item's ``latest`` (the last Blynk verification walk, store/liveness.py) or None, and
    assignment's pause (store/pause.py) or None."""
    keys = [Keys.stats(n) for n in range(STATS_SHARDS)] + [
        Keys.recent_imports(),
        liveness_key(),
        Keys.pause(),
    ]
    tokens = dict.fromkeys(TOKEN_STATES, 0)
    devices = dict.fromkeys(DEVICE_STATES, 0)
    recent: list[PlainItem] = []
    latest_liveness: PlainItem | None = None
    paused: dict[str, str] | None = None  # assignment's pause (store/pause.py), if any
    for item in db.batch_get(keys):
        if is_pause(item):
            paused = pause.pause_of(item)
            continue
        if is_liveness(item):
            latest_liveness = item.get("latest")
            continue
        if is_recent_imports(item):
            recent = imports.newest_first(item)
            continue
        for state in TOKEN_STATES:
            tokens[state] += int(item.get(f"tokens_{state}", 0))
        for state in DEVICE_STATES:
            devices[state] += int(item.get(f"devices_{state}", 0))
    return {
        "tokens": tokens,
        "devices": devices,
        "recent_imports": recent[: imports.RECENT_IMPORTS_KEPT],
        "liveness": latest_liveness,
        "paused": paused,
    }
