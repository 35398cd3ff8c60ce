"""What operators and devices change: assign now, transfer (RMA), revoke, and the devices' status reports.

Each change reads the items it concerns, asks its rule in ``tokenflow.rules`` what may happen, and
carries the plan out as one guarded transaction (``Store.apply``); when an item changed in between,
it reads again and asks again. The Ledger writes that follow (the token for a new holder, the cleared
state for an old one) are the assign workers' job: the action queues them and answers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tokenflow import rules, triggers
from tokenflow.assignment import AssignRequest
from tokenflow.device_status import DeviceStatus
from tokenflow.fleet import BadRequest, NotFound
from tokenflow.model import BOUND_TOKEN_STATES, Changed, FollowUp, Plan, ProductDevice, Refused
from tokenflow.observability import logger, metrics
from tokenflow.store import Store

if TYPE_CHECKING:
    from tokenflow.particle import Device

ATTEMPTS = 5


class Queue(Protocol):
    def send(self, requests: Sequence[AssignRequest]) -> list[str]: ...


class ProductLookup(Protocol):
    def get_product_device(self, device_id: str) -> Device | None: ...


class Conflict(Exception):
    """The action does not fit the current state of the device or token (the message says why)."""


class Unavailable(Exception):
    """A service the action depends on (Particle) did not answer; nothing changed."""


@dataclass(frozen=True)
class StatusOutcome:
    device_id: str
    # confirmed, already-confirmed, queued, redeliver, clear-queued, waiting, awaiting-sync, stale,
    # sweep-requested (no Particle product configured), lookup-failed, ignored
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
        products: Callable[[], ProductLookup] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self.request_sweep = request_sweep
        self._products = products

    def _enqueue(self, requests: Sequence[AssignRequest]) -> None:
        failed = self.queue.send(requests)
        if failed:
            raise RuntimeError(f"the assign queue refused devices {', '.join(failed)}")

    def _follow_up(self, plan: Plan) -> None:
        self._enqueue([_request(f) for f in plan.follow_ups])

    def _apply(self, decide: Callable[[], Plan]) -> Plan:
        """Read, decide, write; again when an item changed in between."""
        for _ in range(ATTEMPTS):
            try:
                plan = decide()
            except Refused as exc:
                raise _http_error(exc) from None
            try:
                self.store.apply(plan, self.clock())
            except Changed:
                continue
            return plan
        raise Conflict("the devices or the token kept changing; try again")

    # ---- operator actions ----------------------------------------------------------------------

    def assign_now(self, device_id: str) -> dict[str, Any]:
        """Queue one device now. A device Tokenflow has not seen yet is left to a sweep, which knows
        whether the product has it and whether it is quarantined or denied."""
        item = self.store.get_device(device_id)
        if item is None:
            if self.request_sweep is None:
                raise NotFound(f"device {device_id} is unknown to Tokenflow; it appears after the next sweep")
            self.request_sweep(triggers.OPERATOR_ASKED)
            return {"device_id": device_id, "state": None, "queued": False, "sweep_requested": True}
        state = item.get("state")
        # "manual" lets the worker serve a retired device again: the operator asked for it.
        reason = "redeliver" if state in ("delivered", "confirmed") else "manual"
        self._enqueue([AssignRequest(device_id, state, reason=reason)])
        return {"device_id": device_id, "state": state, "queued": True, "sweep_requested": False}

    def transfer(self, old_id: str, new_id: str) -> dict[str, Any]:
        """RMA: the old device's token (and the customer's Blynk device with it) moves to ``new_id``,
        which must be in the Particle product and neither quarantined nor denied."""
        if old_id == new_id:
            raise BadRequest("a device cannot be transferred to itself")
        target = self._product_device(new_id)

        def decide() -> Plan:
            old = self.store.get_device(old_id)
            token = self.store.get_token(old["token_id"]) if old and old.get("token_id") else None
            new = self.store.get_device(new_id)
            own = self.store.get_token(new["token_id"]) if new and new.get("token_id") else None
            return rules.transfer(old_id, new_id, old, token, new, own, target, self.clock())

        plan = self._apply(decide)
        self._follow_up(plan)
        outcome = dict(plan.outcome)
        metrics.add_metric(name="TokensTransferred", unit="Count", value=1)
        if outcome.get("replaced_token"):
            name = "TokensReleased" if outcome["replaced_token"]["state"] == "released" else "TokensReturned"
            metrics.add_metric(name=name, unit="Count", value=1)
        logger.info(
            "Token transferred",
            extra={
                "from": old_id,
                "to": new_id,
                "token": outcome["token"]["mask"],
                "replaced": outcome["replaced_token"],
            },
        )
        return outcome

    def _product_device(self, device_id: str) -> ProductDevice | None:
        """The device as the Particle product knows it (None: not in the product)."""
        if self._products is None:
            raise Unavailable("no Particle product is configured, so the target cannot be checked")
        from tokenflow.particle import ParticleError

        try:
            device = self._products().get_product_device(device_id)
        except ParticleError as exc:
            raise Unavailable(f"Particle did not answer the device lookup ({type(exc).__name__})") from None
        if device is None:
            return None
        return ProductDevice(
            device_id=device.id,
            quarantined=device.quarantined,
            denied=device.denied,
            name=device.name,
            serial_number=device.serial_number,
            platform_id=device.platform_id,
        )

    def revoke(self, tid: str) -> dict[str, Any]:
        """The token was deleted in Blynk: it is never handed out again; its holder's Ledger gets the
        cleared state, then the holder gets a fresh token."""

        def decide() -> Plan:
            token = self.store.get_token(tid)
            holder = None
            if token and token.get("state") in BOUND_TOKEN_STATES and token.get("device_id"):
                holder = self.store.get_device(token["device_id"])
                if holder is None:
                    holder = {"device_id": token["device_id"]}
            return rules.revoke(tid, token, holder, self.clock())

        plan = self._apply(decide)
        outcome = plan.outcome
        holder = outcome.get("device_id")
        if not outcome["already"]:
            self._follow_up(plan)
            metrics.add_metric(name="TokensRevoked", unit="Count", value=1)
            logger.info("Token revoked", extra={"token": outcome["token_mask"], "device_id": holder})
        return {
            "token": {"token_id": tid, "mask": outcome["token_mask"]},
            "state": "revoked",
            "already_revoked": outcome["already"],
            "device_id": holder,
            "device_state": "clearing" if holder and not outcome["already"] else None,
            "device_requeued": bool(plan.follow_ups) and not outcome["already"],
        }

    # ---- the devices' status events ------------------------------------------------------------

    def report_status(self, status: DeviceStatus) -> StatusOutcome:
        """What the firmware says it holds, against what the table says it was given. Idempotent:
        the same report twice changes nothing the second time (a redelivery is only asked again)."""
        device_id = status.device_id
        for _ in range(ATTEMPTS):
            item = self.store.get_device(device_id)
            state = item.get("state") if item else None
            action = rules.classify_report(item, status)
            try:
                return self._act_on_report(device_id, item, state, action, status)
            except Changed:
                continue
        return StatusOutcome(device_id, "ignored", None)

    def _act_on_report(
        self,
        device_id: str,
        item: dict[str, Any] | None,
        state: str | None,
        action: str,
        status: DeviceStatus,
    ) -> StatusOutcome:
        now = self.clock()
        if action == "unknown":
            return self._report_from_unknown(device_id)
        assert item is not None
        if action == "confirm":
            self.store.apply(rules.confirm(item, now), now)
            metrics.add_metric(name="DevicesConfirmed", unit="Count", value=1)
            return StatusOutcome(device_id, "confirmed", "confirmed")
        if action == "mismatch":
            reported = status.fingerprint or status.holds
            plan = rules.mismatch(item, reported, now)
            self.store.apply(plan, now)
            self._enqueue([AssignRequest(device_id, "delivered", reason="redeliver")])
            metrics.add_metric(name="TokenMismatches", unit="Count", value=1)
            logger.warning(
                "Device reports another token than it was given",
                extra={"device_id": device_id, "reported": reported},
            )
            return StatusOutcome(device_id, "redeliver", "delivered")
        if action == "deliver":
            # pending or failed: its Ledger write has not landed yet; ask for it again.
            self._enqueue([AssignRequest(device_id, state, reason="webhook")])
            return StatusOutcome(device_id, "queued", state)
        if action == "clear":
            # It still uses a token it no longer holds here: write the cleared state again.
            self._enqueue([AssignRequest(device_id, state, reason="clear")])
            metrics.add_metric(name="StaleTokensReported", unit="Count", value=1)
            return StatusOutcome(device_id, "clear-queued", state)
        if action == "serve-waiting":
            return self._serve_waiting(device_id)
        return StatusOutcome(device_id, action, state)  # already-confirmed, stale, awaiting-sync, ignored

    def _report_from_unknown(self, device_id: str) -> StatusOutcome:
        """A device Tokenflow has not seen yet reports: ask Particle whether the product has it
        (one request) and queue it at once, rather than wait for a sweep to list the whole fleet.
        Quarantined and denied devices, and ids the product does not hold, are ignored; when
        Particle does not answer, the next sweep pass finds the device (or its next report does).

        A device whose message is already waiting (a queued mark, however old) costs no lookup and
        no second message: the firmware reports again every few minutes up to every ten while it
        has no token, and behind the backlog of a 100,000-device first pass (about 53 minutes at
        Particle's limit) a lookup per report would be a hundred times the limit. A device whose
        message was lost is the sweep's: its mark is stale by the sweep's rule (``queue_once``)."""
        if self.store.queued_at(device_id) is not None:
            return StatusOutcome(device_id, "queued", None)
        if self._products is None:
            # No Particle product here: the sweep decides (it knows quarantined and denied devices).
            if self.request_sweep is None:
                return StatusOutcome(device_id, "ignored", None)
            self.request_sweep("status report from an unknown device")
            return StatusOutcome(device_id, "sweep-requested", None)
        try:
            device = self._product_device(device_id)
        except Unavailable:
            logger.warning(
                "Particle did not answer the lookup of a reporting device", extra={"device_id": device_id}
            )
            return StatusOutcome(device_id, "lookup-failed", None)
        if device is None or device.quarantined or device.denied:
            return StatusOutcome(device_id, "ignored", None)
        self._enqueue([AssignRequest(device_id, None, reason="new", fields=device.fields())])
        metrics.add_metric(name="NewDevicesReported", unit="Count", value=1)
        return StatusOutcome(device_id, "queued", None)

    def _serve_waiting(self, device_id: str) -> StatusOutcome:
        # A waiting device reports until it has a token: queue it only when there is one to give,
        # so a fleet waiting for an export costs one read per report and no messages.
        if self.store.summary()["tokens"]["available"] > 0:
            self._enqueue([AssignRequest(device_id, "waiting", reason="webhook")])
            return StatusOutcome(device_id, "queued", "waiting")
        return StatusOutcome(device_id, "waiting", "waiting")


def _request(follow_up: FollowUp) -> AssignRequest:
    if follow_up.action == "clear":
        return AssignRequest(follow_up.device_id, "clearing", reason="clear")
    return AssignRequest(follow_up.device_id, "pending", reason="transfer")


def _http_error(exc: Refused) -> Exception:
    if exc.kind == "not_found":
        return NotFound(str(exc))
    if exc.kind == "bad_request":
        return BadRequest(str(exc))
    return Conflict(str(exc))
