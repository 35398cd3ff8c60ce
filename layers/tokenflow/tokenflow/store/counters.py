"""The per-state counters: sharded counter items moved inside the transactions that change the
states they count, and the summary (every shard and the recent imports in one read)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenflow.model import DEVICE_STATES, TOKEN_STATES
from tokenflow.store import imports, pause
from tokenflow.store.codec import from_item
from tokenflow.store.keys import (
    TTL_ATTRIBUTE,
    Keys,
    activity_hour_of,
    activity_key,
    activity_query,
    is_liveness,
    is_pause,
    is_recent_imports,
    liveness_key,
)
from tokenflow.store.shapes import PlainItem, Request
from tokenflow.store.table import Table

# Writers pick a shard at random, so concurrent transactions rarely touch the same counter item.
STATS_SHARDS = 10
# What the hourly activity counts: tokens entering these states.
ACTIVITY_STATES = ("assigned", "confirmed")
# Activity items expire this long after their hour (the table's TTL deletes them): a week for the
# console's chart plus a day, bounded whatever the fleet's age.
ACTIVITY_KEPT = timedelta(days=8)
MAX_ACTIVITY_HOURS = 7 * 24


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


def activity_update(db: Table, now: str, entered: Mapping[str, int], shard: int) -> Request:
    """One transaction item adding the tokens that entered ``assigned``/``confirmed`` to this hour's
    activity, in ``shard`` (the same shard as the transaction's counter update, so the activity
    adds no item another transaction would not have touched anyway)."""
    hour = now[:13]
    expires = int((datetime.fromisoformat(f"{hour}:00:00+00:00") + ACTIVITY_KEPT).timestamp())
    names = {f"#a{i}": name for i, name in enumerate(entered)}
    values = {f":a{i}": {"N": str(n)} for i, n in enumerate(entered.values())}
    names["#ttl"] = TTL_ATTRIBUTE
    values[":ttl"] = {"N": str(expires)}
    adds = ", ".join(f"#a{i} :a{i}" for i in range(len(entered)))
    return {
        "Update": {
            "TableName": db.name,
            "Key": activity_key(hour, shard),
            "UpdateExpression": f"ADD {adds} SET #ttl = :ttl",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def activity(db: Table, now: datetime, hours: int) -> list[dict[str, Any]]:
    """Tokens assigned and confirmed in each of the last ``hours`` hours (UTC, oldest first, the
    current hour last, hours without activity as zeros): one Query per day the window spans."""
    hours = max(1, min(hours, MAX_ACTIVITY_HOURS))
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours - 1)
    slots = {
        (start + timedelta(hours=h)).strftime("%Y-%m-%dT%H"): dict.fromkeys(ACTIVITY_STATES, 0)
        for h in range(hours)
    }
    day = start.replace(hour=0)
    while day <= end:
        from_hh = start.strftime("%H") if day.date() == start.date() else "00"
        query = activity_query(day.strftime("%Y-%m-%d"), from_hh)
        page: dict[str, Any] = {}
        while True:
            answer = db.call("Query", TableName=db.name, **query, **page)
            for raw in answer.get("Items", []):
                item = from_item(raw)
                slot = slots.get(activity_hour_of(item))
                if slot is not None:
                    for state in ACTIVITY_STATES:
                        slot[state] += int(item.get(state, 0))
            if not answer.get("LastEvaluatedKey"):
                break
            page = {"ExclusiveStartKey": answer["LastEvaluatedKey"]}
        day += timedelta(days=1)
    return [{"hour": hour, **counts} for hour, counts in slots.items()]
