"""Transactions: TransactWriteItems with retries, and ``apply``, which carries out a rule's plan
(``tokenflow.rules``) as one guarded transaction.

A plan's writes become Puts (new items), Updates or ConditionChecks, each guarded as the rule read
its item (the version, or the state and binding); its history events and the counter shard moved by
its state changes go into the same transaction, so counts and history cannot disagree with states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from tokenflow.model import Changed, Event, Plan, Write
from tokenflow.store import keys
from tokenflow.store.codec import to_item
from tokenflow.store.counters import counter_deltas, counter_update
from tokenflow.store.shapes import Request
from tokenflow.store.table import Table

MAX_TRANSACTION_ITEMS = 100
# TransactWriteItems accepts 4 MB in all; stay clear of it with per-item estimates.
MAX_TRANSACTION_BYTES = 3_500_000
_RETRYABLE_CODES = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}


class TransactionCancelled(Exception):
    """A transaction was cancelled for a reason retrying will not fix; ``codes`` per item."""

    def __init__(self, codes: list[str]):
        super().__init__(f"transaction cancelled: {', '.join(sorted(set(codes) - {'None'}))}")
        self.codes = codes


def transact(db: Table, items: Sequence[Request]) -> None:
    """TransactWriteItems, retried with jittered backoff on conflicts and throttling.

    A cancellation for any other reason (a failed condition) raises TransactionCancelled with the
    per-item codes, so the caller can tell which item's condition failed.
    """
    for attempt in range(db.max_conflict_retries + 1):
        try:
            db.call("TransactWriteItems", TransactItems=list(items))
            return
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == "TransactionCanceledException":
                codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                if not codes:  # some endpoints only put the reasons in the message
                    codes = _codes_from_message(error.get("Message", ""), len(items))
                retryable = any(c in _RETRYABLE_CODES for c in codes)
                if not retryable or "ConditionalCheckFailed" in codes:
                    raise TransactionCancelled(codes) from None
            elif code not in {
                "TransactionConflictException",
                "ThrottlingException",
                "InternalServerError",
            }:
                raise
            if attempt == db.max_conflict_retries:
                raise
            db.sleep(min(2.0, 0.02 * 2**attempt) * db.rng.random())


def apply(db: Table, plan: Plan, now: str) -> None:
    """Carry out a rule's plan as one transaction: every write guarded as the rule read its item,
    the history events, and the counter shard moved by the state changes the writes make.

    Raises Changed (naming the item) when any guarded item changed since it was read.
    """
    items = [write_item(db, w) for w in plan.writes]
    items += [history_event(db, e, now) for e in plan.events]
    deltas = plan.counter_deltas()
    if deltas:
        items.append(counter_update(db, counter_deltas(**deltas)))
    if not items:
        return
    try:
        transact(db, items)
    except TransactionCancelled as exc:
        for write, code in zip(plan.writes, exc.codes, strict=False):
            if code == "ConditionalCheckFailed":
                raise Changed(f"{write.kind} {write.id[:12]}") from None
        raise


def write_item(db: Table, write: Write) -> Request:
    """The transaction item of one write: a Put when the rule saw no item, else an Update (or a
    ConditionCheck when nothing changes) guarded by the version or by the state and binding."""
    key = keys.item_key(write.kind, write.id)
    values = dict(write.values)
    state_after = write.state_after
    if "state" in values and write.state_before != state_after:
        # A state change moves the item in the sparse indexes that list items by state.
        if write.kind == "device":
            values.update(keys.device_index_change(state_after or ""))
        else:
            values.update(keys.token_index_change(write.state_before, state_after, db.rng))
    if write.before is None:
        item = {"kind": write.kind, **values, "version": 1}
        if write.kind == "device":
            item.update(keys.new_device_entry(write.id), device_id=write.id)
        return {
            "Put": {
                "TableName": db.name,
                "Item": {**key, **to_item(item)},
                "ConditionExpression": keys.ITEM_ABSENT,
            }
        }
    names: dict[str, str] = {"#state": "state", "#version": "version"}
    expr: dict[str, Any] = {}
    conditions = ["#state = :g_state"]
    expr[":g_state"] = write.before.get("state")
    if write.guard == "version":
        if "version" in write.before:
            conditions.append("#version = :g_version")
            expr[":g_version"] = write.before["version"]
        else:
            conditions.append("attribute_not_exists(#version)")
    else:
        bound = "token_id" if write.kind == "device" else "device_id"
        names["#bound"] = bound
        if write.before.get(bound):
            conditions.append("#bound = :g_bound")
            expr[":g_bound"] = write.before[bound]
        else:
            conditions.append("attribute_not_exists(#bound)")
    condition = " AND ".join(conditions)
    if not values:
        return {
            "ConditionCheck": {
                "TableName": db.name,
                "Key": key,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {k: v for k, v in names.items() if k in condition},
                "ExpressionAttributeValues": to_item(expr),
            }
        }
    sets = {k: v for k, v in values.items() if v is not None}
    removes = [k for k, v in values.items() if v is None]
    for i, name in enumerate(sets):
        names[f"#s{i}"] = name
    for i, name in enumerate(removes):
        names[f"#r{i}"] = name
    expr.update({f":s{i}": v for i, v in enumerate(sets.values())})
    expr.update({":zero": 0, ":one": 1})
    update = "SET " + ", ".join(
        [f"#s{i} = :s{i}" for i in range(len(sets))] + ["#version = if_not_exists(#version, :zero) + :one"]
    )
    if removes:
        update += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
    return {
        "Update": {
            "TableName": db.name,
            "Key": key,
            "ConditionExpression": condition,
            "UpdateExpression": update,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(expr),
        }
    }


def history_event(db: Table, event: Event, now: str) -> Request:
    """The Put of one line of a token's history, next to the token."""
    item = {
        **keys.event_key(event.token_id, now, event.what, db.rng),
        "kind": "event",
        "event": event.what,
        "at": now,
        **{k: v for k, v in event.details.items() if v is not None},
    }
    return {"Put": {"TableName": db.name, "Item": to_item(item)}}


def _codes_from_message(message: str, count: int) -> list[str]:
    """Parse ``...reasons [ConditionalCheckFailed, None]`` when the response lacks the structured list."""
    start, end = message.find("["), message.rfind("]")
    if start < 0 or end < start:
        return ["None"] * count
    return [c.strip() or "None" for c in message[start + 1 : end].split(",")]
