"""The stack-wide pause of assignment: one small item, set when Particle says the configuration is
wrong (a refused access token, a missing Ledger), cleared when a probe call succeeds again.

While it is set, assign workers leave every device as it is (pending or waiting, never failed) and
hand their messages back to the queue; ``/summary`` shows it with its reason and since when.

The item stays once created: clearing removes its reason and time (``UpdateItem``), so every
function needs only ``GetItem`` and ``UpdateItem`` on the table, which they have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenflow.store.codec import to_item
from tokenflow.store.keys import Keys
from tokenflow.store.table import Table

MAX_REASON_CHARS = 300
# Names, not the words themselves: DynamoDB reserves many plain words in expressions.
_NAMES = {"#r": "reason", "#s": "since"}


def get_pause(db: Table) -> dict[str, str] | None:
    """``{"reason", "since"}`` while the stack is paused; None when it is not."""
    return pause_of(db.get(Keys.pause(), ProjectionExpression="#r, #s", ExpressionAttributeNames=_NAMES))


def pause_of(item: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The pause an item read back holds (the summary reads it with the counters); None: none."""
    if not item or not item.get("reason"):
        return None
    return {"reason": str(item["reason"]), "since": str(item.get("since") or "")}


def set_pause(db: Table, reason: str, now: str) -> bool:
    """Pause the stack; True when this call paused it, False when it was paused already (its first
    reason and time are kept: the alarm and the operator look at when it started)."""
    answer = db.update_if(
        Keys.pause(),
        ConditionExpression="attribute_not_exists(#r)",
        UpdateExpression="SET #r = :reason, #s = :now",
        ExpressionAttributeNames=_NAMES,
        ExpressionAttributeValues=to_item({":reason": reason[:MAX_REASON_CHARS], ":now": now}),
    )
    return answer is not None


def clear_pause(db: Table, now: str) -> bool:
    """Resume; True when this call cleared a pause, False when there was none (another worker's
    probe cleared it first)."""
    answer = db.update_if(
        Keys.pause(),
        ConditionExpression="attribute_exists(#r)",
        UpdateExpression="SET resumed_at = :now REMOVE #r, #s",
        ExpressionAttributeNames=_NAMES,
        ExpressionAttributeValues=to_item({":now": now}),
    )
    return answer is not None
