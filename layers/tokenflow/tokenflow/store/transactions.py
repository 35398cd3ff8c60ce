"""Transactions: TransactWriteItems with retries, and ``apply``, which carries out a rule's plan
(``tokenflow.rules``) as one guarded transaction.

A plan's writes become Puts (new items), Updates or ConditionChecks, each guarded as the rule read
its item (the version, or the state and binding); its history events and the counter shard moved by
its state changes go into the same transaction, so counts and history cannot disagree with states.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from tokenflow.model import Changed, Event, Plan, Write
from tokenflow.store import keys
from tokenflow.store.codec import to_item
from tokenflow.store.counters import (
    ACTIVITY_STATES,
    STATS_SHARDS,
    activity_update,
    counter_deltas,
    counter_update,
)
from tokenflow.store.shapes import Request
from tokenflow.store.table import Table

MAX_TRANSACTION_ITEMS = 100
# TransactWriteItems accepts 4 MB in all; stay clear of it with per-item estimates.
MAX_TRANSACTION_BYTES = 3_500_000
_RETRYABLE_CODES = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
# A ClientRequestToken is 1 to 36 characters (TransactWriteItems, API reference).
REQUEST_TOKEN_CHARS = 32


class TransactionCancelled(Exception):
    """A transaction was cancelled for a reason retrying will not fix; ``codes`` per item."""

    def __init__(self, codes: list[str]):
        super().__init__(f"transaction cancelled: {', '.join(sorted(set(codes) - {'None'}))}")
        self.codes = codes


def request_token(purpose: str, items: Sequence[Request]) -> str:
    """The ClientRequestToken of one logical write: derived from what it writes, so the same
    request sent again carries the same token and a different one (even by one item) another.

    TransactWriteItems with a ClientRequestToken is idempotent: "multiple identical calls have the
    same effect as one single call"; the token "is valid for 10 minutes after the first request that
    uses it is completed", and the same token with other parameters within those 10 minutes fails
    with IdempotentParameterMismatch (API reference, ClientRequestToken:
    https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html).
    A token derived from the items themselves can never meet that mismatch. A request that failed
    (cancelled by a conflict) is applied when sent again with its token; only a success is
    remembered (https://www.alexdebrie.com/posts/dynamodb-transactions/#idempotency-with-transactional-requests).
    """
    canonical = json.dumps([purpose, list(items)], sort_keys=True, default=_digest_of_bytes)
    return hashlib.sha256(canonical.encode()).hexdigest()[:REQUEST_TOKEN_CHARS]


def _digest_of_bytes(value: object) -> str:
    # Binary attribute values (QR images): their digest stands for them in the canonical form.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "b:" + hashlib.sha256(bytes(value)).hexdigest()
    raise TypeError(f"cannot derive a request token from a {type(value).__name__}")


def transact(db: Table, items: Sequence[Request], *, token: str | None = None) -> None:
    """TransactWriteItems, retried with jittered backoff on conflicts and throttling.

    A cancellation for any other reason (a failed condition) raises TransactionCancelled with the
    per-item codes, so the caller can tell which item's condition failed.

    ``token`` (``request_token``) is sent as the ClientRequestToken of every attempt: the retries
    here send the same items, so when an attempt's answer is lost (a 500, a timeout) after
    DynamoDB applied it, the next one succeeds without applying it twice, where without the token
    it would fail its own conditions (a stored token "already known") or add a counter delta
    again. botocore fills in a random token per call when none is given, which covers only its own
    resends of one call. A condition that fails is never retried with the same token: it raises,
    and the caller's next request differs (another token).
    """
    extra = {"ClientRequestToken": token} if token else {}
    for attempt in range(db.max_conflict_retries + 1):
        try:
            db.call("TransactWriteItems", TransactItems=list(items), **extra)
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
                # The same token's earlier attempt is still being applied: ask again later.
                "TransactionInProgressException",
            }:
                raise
            if attempt == db.max_conflict_retries:
                raise
            db.sleep(min(2.0, 0.02 * 2**attempt) * db.rng.random())


def apply(db: Table, plan: Plan, now: str, *, unmark: str | None = None) -> None:
    """Carry out a rule's plan as one transaction: every write guarded as the rule read its item,
    the history events, and the counter shard moved by the state changes the writes make.

    ``unmark``: a device whose queued mark (``queue_marks``) goes in the same transaction, so the
    worker that claims or delivers its device pays no call of its own for the mark. The Delete is
    unconditional: a condition on it would cancel the claim with it, and removing a mark set for a
    newer message costs at most one more message later; exactly once rests on the guarded writes.

    Raises Changed (naming the item) when any guarded item changed since it was read.
    """
    items = [write_item(db, w) for w in plan.writes]
    items += [history_event(db, e, now) for e in plan.events]
    deltas = plan.counter_deltas()
    if deltas:
        shard = db.rng.randrange(STATS_SHARDS)
        items.append(counter_update(db, counter_deltas(**deltas), shard))
        entered = tokens_entering(plan)  # a token entering a state always moves a counter
        if entered:
            # The hourly activity rides in the same transaction (no call of its own), in the same shard.
            items.append(activity_update(db, now, entered, shard))
    if not items:
        return
    if unmark:
        items.append({"Delete": {"TableName": db.name, "Key": keys.Keys.queued(unmark)}})
    try:
        # The plan's history events carry random sort keys: every apply is its own request, and
        # only the retries inside transact() repeat it.
        transact(db, items, token=request_token("plan", items))
    except TransactionCancelled as exc:
        for write, code in zip(plan.writes, exc.codes, strict=False):
            if code == "ConditionalCheckFailed":
                raise Changed(f"{write.kind} {write.id[:12]}") from None
        raise


def tokens_entering(plan: Plan) -> dict[str, int]:
    """How many of the plan's token writes enter each state the hourly activity counts (a token
    already in that state does not count again)."""
    entered: dict[str, int] = {}
    for write in plan.writes:
        after = write.state_after
        if write.kind == "token" and after in ACTIVITY_STATES and write.state_before != after:
            entered[after] = entered.get(after, 0) + 1
    return entered


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
