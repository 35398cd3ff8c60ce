"""Give one device its token and write it into the device's Ledger: claim, deliver, record.

Exactly once, whatever the delivery of the request:
- a device that holds a token gets that same token again, never a second one;
- a token is bound to a device in one transaction with the device record (``Store.claim``), so two
  workers can never bind one token twice or one device twice;
- the Ledger write comes after the claim and is repeatable (``set_mode=Merge`` of the same value), so
  a crash between the two ends, on the next delivery of the request, with the same token delivered.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenflow.observability import logger, metrics
from tokenflow.particle import DEVICE_ID_RE, ParticleAuthError, ParticleError, ParticleUnavailable
from tokenflow.store import DeviceChanged, Store, TokenTaken
from tokenflow.tokens import mask

MAX_ERROR_CHARS = 300


class LedgerWriter(Protocol):
    def set_ledger_token(self, device_id: str, token: str) -> None: ...

    def delete_ledger_instance(self, device_id: str) -> bool: ...


@dataclass(frozen=True)
class AssignRequest:
    """One device to serve; ``seen_state`` is its state when the request was made (None: no record)."""

    device_id: str
    seen_state: str | None = None
    reason: str = "sweep"
    fields: dict[str, Any] = field(default_factory=dict)
    # A transfer: the device whose Ledger instance is deleted once this device's Ledger is written.
    previous_device: str | None = None

    def to_message(self) -> dict[str, Any]:
        message = {"device_id": self.device_id, "seen_state": self.seen_state, "reason": self.reason}
        if self.previous_device:
            message["previous_device"] = self.previous_device
        return {**message, **self.fields}

    @classmethod
    def from_message(cls, body: dict[str, Any]) -> AssignRequest:
        device_id = body.get("device_id")
        # Checked before anything is claimed: a malformed id would bind a token the Ledger write
        # then refuses (Particle ids are 24 lowercase hex characters).
        if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
            raise ValueError("assign request without a valid device_id")
        fields = {k: body[k] for k in ("name", "serial_number", "platform_id") if body.get(k) is not None}
        previous = body.get("previous_device")
        if previous is not None and (not isinstance(previous, str) or not DEVICE_ID_RE.fullmatch(previous)):
            raise ValueError("assign request with a malformed previous_device")
        return cls(device_id, body.get("seen_state"), str(body.get("reason", "new")), fields, previous)


class RetryLater(Exception):
    """The request could not be completed now; its message must come back (SQS retry, then the DLQ)."""


class AuthFailure(RetryLater):
    """Particle refused the access token: every further call in this batch would fail the same way."""


class Assigner:
    def __init__(
        self,
        store: Store,
        ledger: LedgerWriter,
        *,
        max_attempts: int = 5,
        clock: Callable[[], str],
        candidates: int = 5,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.max_attempts = max_attempts
        self.clock = clock
        self.candidates = candidates
        self.rng = rng or random.Random()

    def assign(self, request: AssignRequest, receive_count: int = 1) -> str:
        """Serve one device; returns what happened (delivered, waiting, done, failed) or raises RetryLater."""
        device_id = request.device_id
        state = request.seen_state
        for _ in range(5):
            if state in (None, "waiting") or (state == "retired" and request.reason == "manual"):
                try:
                    claimed = self._claim(request, state)
                except DeviceChanged:
                    state = self._current_state(device_id)
                    continue
                if claimed is None:
                    if state is None and not self.store.mark_waiting(device_id, request.fields, self.clock()):
                        state = self._current_state(device_id)
                        continue
                    metrics.add_metric(name="DevicesWaiting", unit="Count", value=1)
                    logger.info("No token available: device waits", extra={"device_id": device_id})
                    return "waiting"
                metrics.add_metric(name="TokensAssigned", unit="Count", value=1)
                token_tid, token = claimed
                return self._deliver(device_id, token_tid, token, "pending", receive_count)
            if state in ("pending", "failed"):
                device = self.store.get_device(device_id)
                if device is None or device.get("state") != state:
                    state = device.get("state") if device else None
                    continue
                token = self.store.get_token_secret(device["token_id"])
                outcome = self._deliver(device_id, device["token_id"], token, state, receive_count)
                if request.previous_device and outcome == "delivered":
                    self.ledger.delete_ledger_instance(request.previous_device)
                return outcome
            if state in ("delivered", "confirmed"):
                if request.reason == "redeliver":
                    return self._redeliver(device_id)
                if request.previous_device:  # the transfer's Ledger write is done; finish the clean-up
                    self.ledger.delete_ledger_instance(request.previous_device)
                return "done"
            if state == "retired":
                return "retired"
            state = self._current_state(device_id)
        raise RetryLater(f"device {device_id} kept changing state")

    def _redeliver(self, device_id: str) -> str:
        """Write the device's own token into its Ledger again (it reported another or none)."""
        device = self.store.get_device(device_id)
        if not device or not device.get("token_id"):
            return "done"
        token = self.store.get_token_secret(device["token_id"])
        try:
            self.ledger.set_ledger_token(device_id, token)
        except ParticleAuthError:
            metrics.add_metric(name="ParticleAuthFailures", unit="Count", value=1)
            raise AuthFailure("Particle refused the access token (401)") from None
        except ParticleUnavailable as exc:
            raise RetryLater(_describe(exc)) from None
        metrics.add_metric(name="LedgerRewrites", unit="Count", value=1)
        self.store.note_redelivery(device_id, device["token_id"], self.clock())
        return "redelivered"

    def _current_state(self, device_id: str) -> str | None:
        device = self.store.get_device(device_id)
        return device.get("state") if device else None

    def _claim(self, request: AssignRequest, state: str | None) -> tuple[str, str] | None:
        for _ in range(10):
            candidates = self.store.available_candidates(self.candidates)
            if not candidates:
                return None
            self.rng.shuffle(candidates)
            for token_tid, token in candidates:
                try:
                    self.store.claim(request.device_id, token_tid, token, state, request.fields, self.clock())
                except TokenTaken:
                    continue
                logger.info("Token claimed", extra={"device_id": request.device_id, "token": mask(token)})
                return token_tid, token
        raise RetryLater("every candidate token was taken by other workers")

    def _deliver(self, device_id: str, token_tid: str, token: str, state: str, receive_count: int) -> str:
        try:
            self.ledger.set_ledger_token(device_id, token)
        except ParticleAuthError:
            metrics.add_metric(name="ParticleAuthFailures", unit="Count", value=1)
            logger.error("Particle refused the access token", extra={"device_id": device_id})
            raise AuthFailure("Particle refused the access token (401)") from None
        except ParticleUnavailable as exc:
            final = receive_count >= self.max_attempts
            error = _describe(exc)
            self.store.record_attempt_failure(
                device_id, token_tid, error, final=final, retryable=True, now=self.clock()
            )
            metrics.add_metric(name="LedgerWriteFailures", unit="Count", value=1)
            if final:
                metrics.add_metric(name="DevicesFailed", unit="Count", value=1)
            logger.warning(
                "Ledger write failed", extra={"device_id": device_id, "error": error, "final": final}
            )
            raise RetryLater(error) from None
        except ParticleError as exc:  # 400/403/404: retrying will not help; an operator must look
            error = _describe(exc)
            self.store.record_attempt_failure(
                device_id, token_tid, error, final=True, retryable=False, now=self.clock()
            )
            metrics.add_metric(name="LedgerWriteFailures", unit="Count", value=1)
            metrics.add_metric(name="DevicesFailed", unit="Count", value=1)
            logger.error("Ledger write refused", extra={"device_id": device_id, "error": error})
            return "failed"
        metrics.add_metric(name="LedgerWrites", unit="Count", value=1)
        if not self.store.mark_delivered(device_id, token_tid, state, self.clock()):
            logger.info("Device moved on during the Ledger write", extra={"device_id": device_id})
        return "delivered"


def _describe(exc: ParticleError) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
