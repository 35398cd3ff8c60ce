"""What operators and devices change: assign now, transfer (RMA), revoke, and the devices' status reports.

The table changes here are single transactions in ``Store`` (they keep DESIGN.md's invariants); the
Ledger writes that follow are the assign workers' job, so every action that needs one queues the
device and answers at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tokenflow import triggers
from tokenflow.assign_queue import AssignQueue
from tokenflow.assignment import AssignRequest
from tokenflow.device_status import DeviceStatus
from tokenflow.fleet import BadRequest, NotFound
from tokenflow.observability import logger, metrics
from tokenflow.settings import Settings
from tokenflow.store import LifecycleError, Store


class Queue(Protocol):
    def send(self, requests: list[AssignRequest]) -> list[str]: ...


class Conflict(Exception):
    """The action does not fit the current state of the device or token (the message says why)."""


@dataclass(frozen=True)
class StatusOutcome:
    device_id: str
    # confirmed, already-confirmed, queued, redeliver, waiting, awaiting-sync, stale, sweep-requested,
    # ignored
    action: str
    state: str | None


class Lifecycle:
    def __init__(
        self,
        store: Store,
        queue: Queue,
        *,
        clock: Callable[[], str],
        request_sweep: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self.request_sweep = request_sweep

    @classmethod
    def from_settings(cls, config: Settings, store: Store, clock: Callable[[], str]) -> Lifecycle:
        """The service as a function builds it: the assign queue, and a sweep when one is configured."""
        config.require("assign_queue_url")
        sweep = config.sweep_function_name
        return cls(
            store,
            AssignQueue(config.assign_queue_url),
            clock=clock,
            request_sweep=(lambda reason: triggers.request_sweep(sweep, reason)) if sweep else None,
        )

    def _enqueue(self, request: AssignRequest) -> None:
        if self.queue.send([request]):
            raise RuntimeError(f"the assign queue refused device {request.device_id}")

    # ---- operator actions ----------------------------------------------------------------------

    def assign_now(self, device_id: str) -> dict[str, Any]:
        """Queue one device now. A device Tokenflow has not seen yet is left to a sweep, which knows
        whether the product has it and whether it is quarantined or denied."""
        item = self.store.get_device(device_id)
        if item is None:
            if self.request_sweep is None:
                raise NotFound(f"device {device_id} is unknown to Tokenflow; it appears after the next sweep")
            self.request_sweep("assign requested for an unknown device")
            return {"device_id": device_id, "state": None, "queued": False, "sweep_requested": True}
        state = item.get("state")
        if state in ("delivered", "confirmed"):
            request = AssignRequest(device_id, state, reason="redeliver")
        else:
            # "manual" lets the worker serve a retired device again: the operator asked for it.
            request = AssignRequest(device_id, state, reason="manual")
        self._enqueue(request)
        return {"device_id": device_id, "state": state, "queued": True, "sweep_requested": False}

    def transfer(self, old_id: str, new_id: str) -> dict[str, Any]:
        """RMA: the old device's token (and the customer's Blynk device with it) moves to ``new_id``."""
        if old_id == new_id:
            raise BadRequest("a device cannot be transferred to itself")
        try:
            moved = self.store.transfer(old_id, new_id, {}, self.clock())
        except LifecycleError as exc:
            raise Conflict(str(exc)) from None
        # The new device's Ledger is written, then the old device's Ledger instance is deleted.
        self._enqueue(AssignRequest(new_id, "pending", reason="transfer", previous_device=old_id))
        metrics.add_metric(name="TokensTransferred", unit="Count", value=1)
        logger.info("Token transferred", extra={"from": old_id, "to": new_id, "token": moved["token_mask"]})
        return {
            "from": old_id,
            "to": new_id,
            "token": {"token_id": moved["token_id"], "mask": moved["token_mask"]},
            "old_state": "retired",
            "new_state": "pending",
        }

    def revoke(self, tid: str) -> dict[str, Any]:
        """The token was deleted in Blynk: it is never handed out again; its holder gets a fresh one."""
        try:
            outcome = self.store.revoke(tid, self.clock())
        except LifecycleError as exc:
            if str(exc) == "no such token":
                raise NotFound("no such token") from None
            raise Conflict(str(exc)) from None
        holder = outcome.get("device_id")
        requeued = False
        if holder and not outcome["already"]:
            self._enqueue(AssignRequest(holder, "waiting", reason="revoked"))
            requeued = True
        if not outcome["already"]:
            metrics.add_metric(name="TokensRevoked", unit="Count", value=1)
            logger.info("Token revoked", extra={"token": outcome["token_mask"], "device_id": holder})
        return {
            "token": {"token_id": tid, "mask": outcome["token_mask"]},
            "state": "revoked",
            "already_revoked": outcome["already"],
            "device_id": holder,
            "device_requeued": requeued,
        }

    # ---- the devices' status events ------------------------------------------------------------

    def report_status(self, status: DeviceStatus) -> StatusOutcome:
        """What the firmware says it holds, against what the table says it was given. Idempotent:
        the same report twice changes nothing the second time (a redelivery is only asked again)."""
        device_id = status.device_id
        item = self.store.get_device(device_id)
        state = item.get("state") if item else None
        if item is None:
            # Not seen yet: the sweep decides (it knows quarantined and denied devices).
            if self.request_sweep is None:
                return StatusOutcome(device_id, "ignored", None)
            self.request_sweep("status report from an unknown device")
            return StatusOutcome(device_id, "sweep-requested", None)
        if state == "retired":
            return StatusOutcome(device_id, "ignored", state)
        if state == "waiting":
            return self._serve_waiting(device_id)
        expected = item.get("token_fp")
        if status.has_token and status.fingerprint == expected:
            return self._holds_its_token(device_id, item)
        if state in ("delivered", "confirmed") and _older_than_last_write(status, item):
            # Out of order: the device said this before its current token was written or confirmed.
            return StatusOutcome(device_id, "stale", state)
        if state in ("delivered", "confirmed") and status.synced is False:
            # It has not synced its Ledger since it connected: the report after the sync will tell.
            return StatusOutcome(device_id, "awaiting-sync", state)
        # It holds none, an invalid one or another one: write its own token again, and flag it.
        if state in ("delivered", "confirmed"):
            self.store.flag_mismatch(device_id, item, status.fingerprint or status.holds, self.clock())
            self._enqueue(AssignRequest(device_id, state, reason="redeliver"))
            metrics.add_metric(name="TokenMismatches", unit="Count", value=1)
            logger.warning(
                "Device reports another token than it was given",
                extra={"device_id": device_id, "reported": status.fingerprint or status.holds},
            )
            return StatusOutcome(device_id, "redeliver", state)
        # pending or failed: its Ledger write has not landed yet; ask for it again.
        self._enqueue(AssignRequest(device_id, state, reason="webhook"))
        return StatusOutcome(device_id, "queued", state)

    def _holds_its_token(self, device_id: str, item: dict[str, Any]) -> StatusOutcome:
        state = item["state"]
        if state == "confirmed":
            return StatusOutcome(device_id, "already-confirmed", state)
        now = self.clock()
        if state in ("pending", "failed"):
            # The Ledger write landed but was not recorded (the worker stopped before it could).
            self.store.mark_delivered(device_id, item["token_id"], state, now)
        if self.store.confirm(device_id, item["token_id"], now):
            metrics.add_metric(name="DevicesConfirmed", unit="Count", value=1)
            return StatusOutcome(device_id, "confirmed", "confirmed")
        current = self.store.get_device(device_id) or {}
        if current.get("state") == "confirmed":
            return StatusOutcome(device_id, "already-confirmed", "confirmed")
        return StatusOutcome(device_id, "ignored", current.get("state"))

    def _serve_waiting(self, device_id: str) -> StatusOutcome:
        # A waiting device reports until it has a token: queue it only when there is one to give,
        # so a fleet waiting for an export costs one read per report and no messages.
        if self.store.summary()["tokens"]["available"] > 0:
            self._enqueue(AssignRequest(device_id, "waiting", reason="webhook"))
            return StatusOutcome(device_id, "queued", "waiting")
        return StatusOutcome(device_id, "waiting", "waiting")


def _older_than_last_write(status: DeviceStatus, item: dict[str, Any]) -> bool:
    """Published before the device's token was last written or confirmed (Particle's clock and ours
    are both UTC ISO 8601, which compare as text)."""
    if not status.published_at:
        return False
    last = max(item.get(k) or "" for k in ("delivered_at", "redelivered_at", "confirmed_at"))
    return bool(last) and status.published_at < last
