"""The lifecycle rules: what may happen to a token and its devices, and what each change writes.

Every function here is pure: items as read in, a ``Plan`` (or ``Refused``) out. The store carries a
plan out as one DynamoDB transaction whose conditions cover every item the rule read, so a concurrent
change makes it fail (``Changed``) and the caller reads again and asks the rule anew. Reading this
module answers "what happens when ...": the state diagram is in ``tokenflow.model``. It is one
module, over the usual size, on purpose: every rule of the lifecycle in one place to read.

Rules about tokens leaving a device:
- a revoked token (deleted in Blynk) and a token moved to a replacement leave their old holder in
  ``clearing``: its Ledger instance is overwritten with the cleared state
  (``{"blynk_token": "", "state": "revoked"|"transferred"}``), which syncs to the device like any
  change (a deleted instance would never reach the device's flash copy); only after that write
  succeeded is the device ``waiting`` (revoked: it gets a fresh token) or ``retired`` (transferred);
- a replacement that already holds a token of its own gives it up when it receives the transferred
  one: back to ``available`` if it never reached a Ledger (token ``assigned``), else ``released``
  (never handed out again: a copy may sit in the replacement's flash until the overwrite syncs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from tokenflow.model import (
    BOUND_TOKEN_STATES,
    CLEAR_REASONS,
    DEVICE_FIELDS,
    HOLDING_STATES,
    Event,
    FollowUp,
    Item,
    Plan,
    ProductDevice,
    Refused,
    TokenRef,
    Write,
)

# Attributes a device loses with its token.
_NO_TOKEN = {"token_id": None, "token_fp": None, "token_mask": None}
_NO_MISMATCH = {"reported_fp": None, "mismatch_at": None}


def _fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in DEVICE_FIELDS and v is not None}


# ---- assignment ------------------------------------------------------------------------------------


def claim(
    device_id: str,
    seen_state: str | None,
    token: TokenRef,
    fields: Mapping[str, Any],
    now: str,
    *,
    manual: bool = False,
) -> Plan:
    """Bind an available token to a device that holds none (new, waiting, or retired on request).

    The caller has not read either item (the token comes from the available index, the device's state
    from the request), so both are guarded by their exact state and binding.
    """
    allowed = (None, "waiting", "retired") if manual else (None, "waiting")
    if seen_state not in allowed:
        raise Refused(f"device {device_id} is {seen_state}: it cannot take a new token")
    values = {
        "state": "pending",
        "token_id": token.token_id,
        "token_fp": token.fingerprint,
        "token_mask": token.mask,
        "assigned_at": now,
        "updated_at": now,
        "attempts": 0,
        **_fields(fields),
    }
    if seen_state is None:
        values.update(device_id=device_id, first_seen_at=now)
    before = {"state": seen_state} if seen_state else None
    return Plan(
        writes=(
            Write("token", token.token_id, {"state": "available"}, _token_bind(device_id, now), "state"),
            Write("device", device_id, before, values, "state"),
        ),
        outcome={"device_id": device_id, "token_id": token.token_id},
    )


def record_waiting(device_id: str, fields: Mapping[str, Any], now: str) -> Plan:
    """A new device found no token: it is recorded as waiting."""
    values = {"state": "waiting", "device_id": device_id, "first_seen_at": now, "updated_at": now}
    return Plan(writes=(Write("device", device_id, None, {**values, **_fields(fields)}),))


def deliver(device_id: str, seen_state: str, token_id: str, now: str) -> Plan:
    """The token is in the device's Ledger: pending (or failed, on a retry) -> delivered."""
    if seen_state not in ("pending", "failed"):
        raise Refused(f"device {device_id} is {seen_state}: nothing to deliver")
    device = Write(
        "device",
        device_id,
        {"state": seen_state, "token_id": token_id},
        {"state": "delivered", "delivered_at": now, "updated_at": now, "last_error": None, "retryable": None},
        "state",
    )
    token = Write(
        "token",
        token_id,
        {"state": "assigned", "device_id": device_id},
        {"state": "delivered", "delivered_at": now},
        "state",
    )
    return Plan(writes=(device, token))


def fail(device_id: str, token_id: str, error: str, *, retryable: bool, now: str) -> Plan:
    """The Ledger write's retries ran out (or Particle refused it for good): pending -> failed."""
    values = {
        "state": "failed",
        "last_error": error,
        "retryable": retryable,
        "failed_at": now,
        "updated_at": now,
    }
    return Plan(
        writes=(Write("device", device_id, {"state": "pending", "token_id": token_id}, values, "state"),)
    )


def ledger_failure(category: str, receive_count: int, max_attempts: int) -> str:
    """What a failed Ledger write means for the request.

    ``category`` is the Particle client's: ``auth`` (401: the access token is bad, every further call
    fails the same way), ``config`` (a 403, or a 404 that ``configuration_error`` found to be about
    the Ledger rather than the device: the stack's configuration is wrong), ``unavailable`` (429, 5xx,
    timeouts: try again) or ``refused`` (400, a device's own 404: retrying will not help; an operator
    must look). Answers ``stop-batch`` (the stack pauses, see ``tokenflow.breaker``), ``retry`` or
    ``fail``.
    """
    if category in ("auth", "config"):
        return "stop-batch"
    if category == "unavailable":
        return "fail" if receive_count >= max_attempts else "retry"
    return "fail"


# SQS accepts a visibility timeout of at most 12 hours (ChangeMessageVisibility, "VisibilityTimeout":
# 0 to 43,200 seconds, https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibility.html).
MAX_VISIBILITY_SECONDS = 43_200


def configuration_error(status: int | None, *, ledger_probe_status: int | None = None) -> str | None:
    """Whether Particle's refusal says the stack's configuration is wrong, and why; None when it is
    about this one device (or not a refusal at all).

    - 401: the access token is invalid or expired, for every device alike;
    - 403: the token lacks a scope for the product or its Ledger, for every device alike;
    - 404 on a device's Ledger instance is ambiguous: the device may have left the product or org
      (this device only), or the Ledger definition (or org) is missing (every device). The caller
      lists the Ledger's instances once (``ledger_probe_status``): a 404 there too means the Ledger
      itself is missing; an answer means the 404 was about the device.
    """
    if status == 401:
        return "Particle refused the access token (401)"
    if status == 403:
        return "Particle denied the access token the product or its Ledger (403)"
    if status == 404 and ledger_probe_status in (401, 403, 404):
        return f"the Ledger definition (or its org) is missing or out of reach ({ledger_probe_status})"
    return None


def visibility_delay(wait_seconds: float) -> int:
    """How long a request waits in the queue when the wait asked of it (a ``Retry-After``, the rate
    limit's turn) outlives the time its invocation has left: the message's visibility timeout, in
    whole seconds rounded up (never earlier than asked), at least 1 s, at most the 12 hours SQS
    allows. A wait that fits is slept through instead (the Particle client's deadline decides);
    one that does not would end as a Lambda timeout that loses the whole batch."""
    seconds = math.ceil(max(0.0, wait_seconds))
    return max(1, min(MAX_VISIBILITY_SECONDS, seconds))


# ---- the device's own word -------------------------------------------------------------------------


def confirm(device: Item, now: str) -> Plan:
    """The device reported the fingerprint of the token it was given: -> confirmed.

    From pending or failed too: the Ledger write landed but was not recorded (the worker stopped before
    it could), so its token goes from assigned straight to confirmed.
    """
    state = device.get("state")
    if state not in ("pending", "failed", "delivered"):
        raise Refused(f"device {device.get('device_id')} is {state}: nothing to confirm")
    device_id = device["device_id"]
    token_state = "delivered" if state == "delivered" else "assigned"
    token_values: dict[str, Any] = {"state": "confirmed", "confirmed_at": now}
    device_values: dict[str, Any] = {
        "state": "confirmed",
        "confirmed_at": now,
        "updated_at": now,
        "last_error": None,
        "retryable": None,
        **_NO_MISMATCH,
    }
    if state != "delivered":
        token_values["delivered_at"] = now
        device_values["delivered_at"] = now
    token = Write(
        "token", device["token_id"], {"state": token_state, "device_id": device_id}, token_values, "state"
    )
    return Plan(writes=(Write("device", device_id, device, device_values), token))


def mismatch(device: Item, reported: str, now: str) -> Plan:
    """The device reports another token (or none) than the one it was given: it is delivered, not
    confirmed (its token goes back to delivered too), the mismatch is counted, and its own token is
    written again; its next matching report confirms it."""
    state = device.get("state")
    if state not in ("delivered", "confirmed"):
        raise Refused(f"device {device.get('device_id')} is {state}: no delivered token to mismatch")
    device_id = device["device_id"]
    values = {
        "state": "delivered",
        "reported_fp": reported,
        "mismatch_at": now,
        "mismatches": int(device.get("mismatches", 0)) + 1,
        "updated_at": now,
    }
    writes = [Write("device", device_id, device, values)]
    if state == "confirmed":
        writes.append(
            Write(
                "token",
                device["token_id"],
                {"state": "confirmed", "device_id": device_id},
                {"state": "delivered"},
                "state",
            )
        )
    return Plan(writes=tuple(writes), follow_ups=(FollowUp(device_id, "deliver"),))


# Read-only members: a DeviceStatus is a frozen dataclass.
class StatusReport(Protocol):
    @property
    def holds(self) -> str: ...

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def synced(self) -> bool | None: ...

    @property
    def published_at(self) -> str | None: ...

    @property
    def has_token(self) -> bool: ...


def classify_report(device: Item | None, status: StatusReport) -> str:
    """What a device's status report means, against what the table says it was given.

    - ``unknown``: Tokenflow has no record of the device (look it up in the product);
    - ``confirm`` / ``already-confirmed``: it holds the token it was given;
    - ``stale``: published before its token was last written, confirmed or cleared (out of order);
    - ``awaiting-sync``: it has not synced its Ledger since it booted; the report after the sync tells;
    - ``mismatch``: a delivered or confirmed device holds another token or none: write its own again;
    - ``deliver``: its Ledger write has not landed yet (pending, failed): ask for it again;
    - ``clear``: it holds no live token here but still reports one (the cleared state did not reach
      it): write the cleared state again;
    - ``serve-waiting``: it waits for a token; ``ignored``: nothing to do.
    """
    if device is None:
        return "unknown"
    state = device.get("state")
    expected = device.get("token_fp")
    if state in HOLDING_STATES and status.has_token and status.fingerprint == expected:
        return "already-confirmed" if state == "confirmed" else "confirm"
    if _older_than_last_change(status, device):
        return "stale"
    if state in ("waiting", "retired", "clearing") and not status.has_token:
        return "serve-waiting" if state == "waiting" else "ignored"
    if status.synced is False:
        return "awaiting-sync"
    if state in ("waiting", "retired", "clearing"):
        return "clear"
    if state in ("delivered", "confirmed"):
        return "mismatch"
    return "deliver"  # pending, failed


def _older_than_last_change(status: StatusReport, device: Item) -> bool:
    """Published before the device's Ledger was last written, confirmed or cleared (Particle's clock and
    ours are both UTC ISO 8601, which compare as text)."""
    if not status.published_at:
        return False
    last = max(device.get(k) or "" for k in ("delivered_at", "redelivered_at", "confirmed_at", "cleared_at"))
    return bool(last) and status.published_at < last


def needs_work(device: Item | None, available_tokens: int, stale_before: str) -> str | None:
    """Why a sweep queues a device of the product, or None: ``new`` (never seen), ``waiting`` (and a
    token is there to give), ``stale`` (a pending write or a clear that no worker finished), ``retry``
    (failed with an error worth retrying)."""
    if device is None:
        return "new"
    state = device.get("state")
    if state == "waiting":
        return "waiting" if available_tokens > 0 else None
    if state in ("pending", "clearing") and device.get("updated_at", "") < stale_before:
        return "stale"
    if state == "failed" and device.get("retryable"):
        return "retry"
    return None


# ---- operator actions ------------------------------------------------------------------------------


def transfer(
    old_id: str,
    new_id: str,
    old: Item | None,
    token: Item | None,
    new: Item | None,
    new_token: Item | None,
    target: ProductDevice | None,
    now: str,
) -> Plan:
    """RMA: the old device's token (and the customer's Blynk device with it) moves to ``new_id``.

    Preconditions: two different devices; the target is in the product and neither quarantined nor
    denied; the old device holds a live token bound to it. The target may be new to Tokenflow,
    waiting, retired, clearing, or already served (its own token leaves it: see the module docstring).
    The old device goes to ``clearing`` (its Ledger gets the cleared state, then it is retired); the
    target goes to ``pending`` (its Ledger gets the token).
    """
    if old_id == new_id:
        raise Refused("a device cannot be transferred to itself", "bad_request")
    if target is None:
        raise Refused(f"device {new_id} is not in the Particle product", "not_found")
    if target.quarantined or target.denied:
        why = "quarantined" if target.quarantined else "denied"
        raise Refused(f"device {new_id} is {why} in the Particle product: it cannot take a token")
    if old is None:
        raise Refused(f"device {old_id} is unknown to Tokenflow", "not_found")
    if old.get("state") not in HOLDING_STATES or not old.get("token_id"):
        raise Refused(f"device {old_id} holds no token to transfer ({old.get('state')})")
    tid = old["token_id"]
    if token is None or token.get("state") not in BOUND_TOKEN_STATES or token.get("device_id") != old_id:
        raise Refused(
            f"device {old_id}'s token is {token.get('state') if token else 'gone'}: not transferable"
        )
    new_state = new.get("state") if new else None
    writes = [
        Write(
            "device",
            old_id,
            old,
            {
                "state": "clearing",
                "clear_reason": "transferred",
                "clear_token_id": tid,
                "transferred_to": new_id,
                "previous_token_id": tid,
                "previous_token_mask": old.get("token_mask"),
                "updated_at": now,
                "attempts": 0,
                "last_error": None,
                "retryable": None,
                **_NO_TOKEN,
                **_NO_MISMATCH,
            },
        ),
        Write("token", tid, token, {**_token_bind(new_id, now), "delivered_at": None, "confirmed_at": None}),
    ]
    events = [Event(tid, "transferred", {"from": old_id, "to": new_id})]
    replaced = None
    if new_state in HOLDING_STATES:
        own = new.get("token_id") if new else None
        if not own or new_token is None or new_token.get("device_id") != new_id:
            raise Refused(f"device {new_id}'s own token changed meanwhile; try again")
        goes_to = "available" if new_token.get("state") == "assigned" else "released"
        values: dict[str, Any] = {"state": goes_to, "device_id": None, "assigned_at": None}
        if goes_to == "released":
            values["released_at"] = now
        else:
            values.update(delivered_at=None, confirmed_at=None)
        writes.append(Write("token", own, new_token, values))
        events.append(Event(own, goes_to if goes_to == "released" else "returned", {"device_id": new_id}))
        replaced = {
            "token_id": own,
            "fingerprint": new_token.get("token_fp"),
            "mask": new_token.get("token_mask"),
            "state": goes_to,
        }
    taking: dict[str, Any] = {
        "state": "pending",
        "token_id": tid,
        "token_fp": old.get("token_fp"),
        "token_mask": old.get("token_mask"),
        "transferred_from": old_id,
        "assigned_at": now,
        "updated_at": now,
        "attempts": 0,
        "last_error": None,
        "retryable": None,
        "clear_reason": None,
        "clear_token_id": None,
        "retired_at": None,
        "transferred_to": None,
        **_NO_MISMATCH,
        **target.fields(),
    }
    if new is None:
        taking.update(device_id=new_id, first_seen_at=now)
    writes.append(Write("device", new_id, new, taking))
    return Plan(
        writes=tuple(writes),
        events=tuple(events),
        follow_ups=(FollowUp(new_id, "deliver"), FollowUp(old_id, "clear")),
        outcome={
            "from": old_id,
            "to": new_id,
            "token": {"token_id": tid, "fingerprint": old.get("token_fp"), "mask": old.get("token_mask")},
            "old_state": "clearing",
            "new_state": "pending",
            "new_previous_state": new_state,
            "replaced_token": replaced,
        },
    )


def revoke(tid: str, token: Item | None, holder: Item | None, now: str) -> Plan:
    """The static token was deleted in Blynk: it is ``revoked`` for good. Its holder, if any, goes to
    ``clearing`` (the cleared state is written to its Ledger, then it waits for a fresh token).

    ``holder`` is the device the token names (read with it), so a concurrent transfer or claim that
    changes either item fails the transaction. Revoking a revoked token changes nothing.
    """
    if token is None:
        raise Refused("no such token", "not_found")
    state = token.get("state")
    bound_to = token.get("device_id") if state in BOUND_TOKEN_STATES else None
    if state == "revoked":
        return Plan(
            writes=(), outcome={"token_mask": token.get("token_mask"), "device_id": bound_to, "already": True}
        )
    values: dict[str, Any] = {"state": "revoked", "revoked_at": now}
    writes = [Write("token", tid, token, values)]
    follow_ups: tuple[FollowUp, ...] = ()
    device_id = None
    if bound_to:
        if holder is None or holder.get("device_id") != bound_to:
            raise Refused(f"the holder of the token ({bound_to}) was not read", "bad_request")
        if holder.get("token_id") == tid:
            device_id = bound_to
            writes.append(
                Write(
                    "device",
                    bound_to,
                    holder,
                    {
                        "state": "clearing",
                        "clear_reason": "revoked",
                        "clear_token_id": tid,
                        "revoked_token_id": tid,
                        "previous_token_mask": holder.get("token_mask"),
                        "updated_at": now,
                        "attempts": 0,
                        "last_error": None,
                        "retryable": None,
                        **_NO_TOKEN,
                        **_NO_MISMATCH,
                    },
                )
            )
            follow_ups = (FollowUp(bound_to, "clear"),)
        elif holder.get("state") is not None:
            # The token names a device that does not hold it: guard that it stays so.
            writes.append(Write("device", bound_to, holder, {}))
    return Plan(
        writes=tuple(writes),
        events=(Event(tid, "revoked", {"device_id": device_id, "from_state": state}),),
        follow_ups=follow_ups,
        outcome={"token_mask": token.get("token_mask"), "device_id": device_id, "already": False},
    )


def cleared(device: Item, now: str) -> Plan:
    """The cleared state is in the device's Ledger: clearing -> waiting (its token was revoked: it
    gets a fresh one) or retired (its token moved to a replacement)."""
    if device.get("state") != "clearing":
        raise Refused(f"device {device.get('device_id')} is {device.get('state')}: nothing to clear")
    reason = device.get("clear_reason")
    if reason not in CLEAR_REASONS:
        raise Refused(f"device {device.get('device_id')} has no clear reason", "bad_request")
    values: dict[str, Any] = {
        "state": "waiting" if reason == "revoked" else "retired",
        "cleared_at": now,
        "updated_at": now,
        "clear_token_id": None,
        "attempts": 0,
        "last_error": None,
        "retryable": None,
    }
    if reason == "transferred":
        values["retired_at"] = now
    return Plan(writes=(Write("device", device["device_id"], device, values),))


def _token_bind(device_id: str, now: str) -> dict[str, Any]:
    return {"state": "assigned", "device_id": device_id, "assigned_at": now}
