"""Serve one device: give it its token, write its Ledger, record the outcome; or clear its Ledger.

Exactly once, whatever the delivery of the request:
- a device that holds a token gets that same token again, never a second one;
- every change of a token or device is a rule of ``tokenflow.rules`` carried out by one guarded
  transaction (``Store.apply``), so two workers can never bind one token twice or one device twice;
- the Ledger write comes after the claim and is repeatable (``set_mode=Merge`` of the same value), so
  a crash between the two ends, on the next delivery of the request, with the same token delivered;
- what the worker does depends on the device's current record, not on the request: a request is only
  "look at this device". When a Ledger write cannot be recorded because the device changed meanwhile
  (a transfer or revoke raced it), the worker reads the device again and writes what its record now
  says (its token, or the cleared state), so the last write to a Ledger always matches the table.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenflow import rules
from tokenflow.model import Changed, Plan, TokenRef
from tokenflow.observability import logger, metrics
from tokenflow.particle import (
    DEVICE_ID_RE,
    ParticleAuthError,
    ParticleBusy,
    ParticleError,
    ParticleForbidden,
    ParticleNotFound,
    ParticleUnavailable,
)
from tokenflow.store import Store
from tokenflow.tokens import fingerprint, mask

MAX_ERROR_CHARS = 300
# A batch's claims share one candidate query: as many tokens as the batch has requests, and a few
# more for the candidates another worker takes first (``Assigner.batch``).
SPARE_CANDIDATES = 3
# Claim attempts per device before its message goes back: each candidate lost to another worker
# costs one; the candidates of one query are drawn from a random point of a random shard, so two
# workers rarely hold the same ones.
MAX_CLAIM_ATTEMPTS = 30


class LedgerWriter(Protocol):
    def set_ledger_token(self, device_id: str, token: str) -> None: ...

    def clear_ledger_token(self, device_id: str, reason: str) -> None: ...


@dataclass(frozen=True)
class AssignRequest:
    """One device to look at; ``seen_state`` is its state when the request was made (None: no record).

    ``reason`` says why it was queued (new, waiting, stale, retry, webhook, manual, transfer, redeliver,
    clear, revoked); only ``manual`` (serve a retired device again) and ``redeliver`` (write the token
    of a delivered device again) change what the worker does.
    """

    device_id: str
    seen_state: str | None = None
    reason: str = "sweep"
    fields: dict[str, Any] = field(default_factory=dict)
    # When the device's queued mark was set for this message (``tokenflow.queue_once``); None: the
    # message stands for no mark (an operator's request).
    queued_at: str | None = None

    def to_message(self) -> dict[str, Any]:
        message = {"device_id": self.device_id, "seen_state": self.seen_state, "reason": self.reason}
        if self.queued_at:
            message["queued_at"] = self.queued_at
        return {**message, **self.fields}

    @classmethod
    def from_message(cls, body: dict[str, Any]) -> AssignRequest:
        device_id = body.get("device_id")
        # Checked before anything is claimed: a malformed id would bind a token the Ledger write
        # then refuses (Particle ids are 24 lowercase hex characters).
        if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
            raise ValueError("assign request without a valid device_id")
        fields = {k: body[k] for k in ("name", "serial_number", "platform_id") if body.get(k) is not None}
        queued_at = body.get("queued_at")
        return cls(
            device_id,
            body.get("seen_state"),
            str(body.get("reason", "new")),
            fields,
            queued_at if isinstance(queued_at, str) and queued_at else None,
        )


class RetryLater(Exception):
    """The request could not be completed now; its message must come back (SQS retry, then the DLQ)."""


class Deferred(RetryLater):
    """The request must wait longer than this invocation has left (a large ``Retry-After``, the rate
    limit's turn): its message goes back to the queue, invisible for ``delay`` seconds."""

    def __init__(self, message: str, delay: int) -> None:
        super().__init__(message)
        self.delay = delay


class Paused(RetryLater):
    """Particle said the stack's configuration is wrong (``reason``): every further call would fail
    the same way for every device, so the stack pauses (``tokenflow.breaker``) and the device stays
    as it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthFailure(Paused):
    """Particle refused the access token (401)."""


@dataclass
class _Mark:
    """The queued mark a request's message stands for (``tokenflow.queue_once``): ``queued_at`` is
    None once a transaction of this request removed it (or when the message carries none)."""

    device_id: str
    queued_at: str | None

    def take(self) -> str | None:
        """The device whose mark the next transaction removes (None: no mark left to remove)."""
        return self.device_id if self.queued_at else None


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
        # The current batch's candidate tokens, per thread (one invocation is one thread).
        self._batch = threading.local()

    @contextlib.contextmanager
    def batch(self, size: int) -> Iterator[None]:
        """Serve a batch of ``size`` requests (one invocation): their claims share one candidate
        query, ``size`` plus ``SPARE_CANDIDATES`` tokens from a random point of a random shard
        (``Store.available_candidates``), instead of one query per claim; a claim that finds the
        batch's candidates used up (or taken by other workers) queries again, falling back through
        the shards as before. A batch that found no token at all asks no more (its remaining new
        devices wait; the sweep after the next import queues them again). Outside a batch, each
        claim makes its own query of ``candidates``.

        Candidates are kept for the batch only: by the next invocation other workers may have
        claimed them, and each stale candidate would cost a failed transaction.
        """
        self._batch.pool = []
        self._batch.size = max(self.candidates, size + SPARE_CANDIDATES)
        self._batch.stock_empty = False
        try:
            yield
        finally:
            self._batch.pool = None

    def assign(self, request: AssignRequest, receive_count: int = 1) -> str:
        """Serve one device; returns what happened (delivered, redelivered, waiting, cleared, retired,
        done, failed, in-flight) or raises RetryLater.

        When the request's message stands for a queued mark (``queued_at``), the mark is removed by
        the transaction that claims, records or delivers the device (one more item, no call of its
        own), else after the device was handled (``Store.unmark_queued``). A request that must come
        back (RetryLater) keeps its mark: its message is still waiting."""
        mark = _Mark(request.device_id, request.queued_at)
        outcome = self._assign(request, receive_count, mark)
        if mark.queued_at:
            try:
                self.store.unmark_queued(mark.device_id, mark.queued_at)
            except Exception:  # handled; only a later queueing of the device waits for the window
                logger.exception("Could not remove a queued mark", extra={"device_id": mark.device_id})
        return outcome

    def _assign(self, request: AssignRequest, receive_count: int, mark: _Mark) -> str:
        device_id = request.device_id
        state = request.seen_state
        # What this worker wrote into the device's Ledger without being able to record it (a token
        # id, or CLEARED), because the device changed meanwhile: the Ledger must then be made to match
        # whatever the device's record now says, unless it already does.
        wrote: str | None = None
        # Set when this worker found the device without a token and lost it to another worker's
        # claim. On a message's first receive that claim is another message's (a duplicate), whose
        # worker is writing the Ledger right now: a second write is only waste, and if that worker
        # dies its own message comes back. A message received again may be the one whose earlier
        # attempt made the claim and failed: it writes.
        lost_claim = False
        for _ in range(6):
            try:
                if state in (None, "waiting") or (state == "retired" and request.reason == "manual"):
                    if request.reason == "clear" or wrote not in (None, CLEARED):
                        self._write_clear(device_id, None, receive_count)
                    lost_claim = True  # stays set only if the claim below raises Changed
                    return self._serve_new(request, state, receive_count, mark)
                if state == "pending" and lost_claim and wrote is None and receive_count == 1:
                    return "in-flight"
                if state in ("pending", "failed"):
                    return self._deliver_held(device_id, state, receive_count, mark)
                if state == "clearing":
                    state = self._clear(device_id, receive_count)
                    if state == "waiting":  # revoked: it gets a fresh token at once, when there is one
                        continue
                    return "cleared"
                if state in ("delivered", "confirmed"):
                    if request.reason == "redeliver" or (
                        wrote is not None and wrote != self._token_of(device_id)
                    ):
                        return self._redeliver(device_id)
                    return "done"
                if state == "retired":
                    if request.reason == "clear" or wrote not in (None, CLEARED):
                        self._write_clear(device_id, None, receive_count)
                        return "cleared"
                    return "retired"
            except _Wrote as written:
                wrote = written.value
            except Changed:
                pass
            state = self._current_state(device_id)
        raise RetryLater(f"device {device_id} kept changing state")

    def _token_of(self, device_id: str) -> str | None:
        device = self.store.get_device(device_id)
        return device.get("token_id") if device else None

    def _current_state(self, device_id: str) -> str | None:
        device = self.store.get_device(device_id)
        return device.get("state") if device else None

    # ---- a token for a device that holds none ---------------------------------------------------

    def _apply(self, plan: Plan, now: str, mark: _Mark) -> None:
        """Carry out a plan; the request's queued mark goes with it (see ``assign``)."""
        self.store.apply(plan, now, unmark=mark.take())
        mark.queued_at = None

    def _serve_new(self, request: AssignRequest, state: str | None, receive_count: int, mark: _Mark) -> str:
        claimed = self._claim(request, state, mark)
        if claimed is None:
            if state is None:
                now = self.clock()
                self._apply(rules.record_waiting(request.device_id, request.fields, now), now, mark)
            metrics.add_metric(name="DevicesWaiting", unit="Count", value=1)
            logger.info("No token available: device waits", extra={"device_id": request.device_id})
            return "waiting"
        metrics.add_metric(name="TokensAssigned", unit="Count", value=1)
        token_tid, token = claimed
        return self._deliver(request.device_id, token_tid, token, "pending", receive_count, mark)

    def _claim(self, request: AssignRequest, state: str | None, mark: _Mark) -> tuple[str, str] | None:
        """Claim one of a few available tokens; None when there is none. Changed (device) propagates."""
        manual = request.reason == "manual"
        own: list[tuple[str, str]] = []
        for _ in range(MAX_CLAIM_ATTEMPTS):
            candidate = self._next_candidate(own)
            if candidate is None:
                return None
            token_tid, token = candidate
            ref = TokenRef(token_tid, fingerprint(token), mask(token))
            now = self.clock()
            plan = rules.claim(request.device_id, state, ref, request.fields, now, manual=manual)
            try:
                self._apply(plan, now, mark)
            except Changed as exc:
                if exc.what.startswith("token"):
                    continue  # another worker took it first: try the next candidate
                raise
            logger.info("Token claimed", extra={"device_id": request.device_id, "token": ref.mask})
            return token_tid, token
        raise RetryLater("every candidate token was taken by other workers")

    def _next_candidate(self, own: list[tuple[str, str]]) -> tuple[str, str] | None:
        """The next available token to try: from the batch's candidates (``batch``), or outside a
        batch from ``own`` (this claim's query of ``candidates``); None when no partition holds one."""
        batch_pool: list[tuple[str, str]] | None = getattr(self._batch, "pool", None)
        pool = own if batch_pool is None else batch_pool
        if not pool:
            if batch_pool is None:
                found = self.store.available_candidates(self.candidates)
            elif self._batch.stock_empty:
                return None
            else:
                found = self.store.available_candidates(self._batch.size, from_random_point=True)
                self._batch.stock_empty = not found
            if not found:
                return None
            self.rng.shuffle(found)
            pool.extend(found)
        return pool.pop()

    # ---- writing a held token -------------------------------------------------------------------

    def _deliver_held(self, device_id: str, state: str, receive_count: int, mark: _Mark) -> str:
        device = self.store.get_device(device_id)
        if device is None or device.get("state") != state:
            raise Changed(f"device {device_id}")
        token = self.store.get_token_secret(device["token_id"])
        return self._deliver(device_id, device["token_id"], token, state, receive_count, mark)

    def _deliver(
        self, device_id: str, token_tid: str, token: str, state: str, receive_count: int, mark: _Mark
    ) -> str:
        try:
            self.ledger.set_ledger_token(device_id, token)
        except ParticleError as exc:
            self._stop_if_stack_wide(exc)
            return self._delivery_failed(device_id, token_tid, exc, receive_count)
        metrics.add_metric(name="LedgerWrites", unit="Count", value=1)
        now = self.clock()
        try:
            self._apply(rules.deliver(device_id, state, token_tid, now), now, mark)
        except Changed:
            logger.info("Device moved on during the Ledger write", extra={"device_id": device_id})
            raise _Wrote(token_tid) from None
        return "delivered"

    def _delivery_failed(self, device_id: str, token_tid: str, exc: ParticleError, receive_count: int) -> str:
        category = _category(exc)
        decision = rules.ledger_failure(category, receive_count, self.max_attempts)
        error = _describe(exc)
        metrics.add_metric(name="LedgerWriteFailures", unit="Count", value=1)
        now = self.clock()
        if decision == "retry":
            self.store.note_attempt(device_id, token_tid, error, now)
            logger.warning(
                "Ledger write failed", extra={"device_id": device_id, "error": error, "final": False}
            )
            raise RetryLater(error) from None
        failed = rules.fail(device_id, token_tid, error, retryable=category == "unavailable", now=now)
        with contextlib.suppress(Changed):  # delivered or moved on meanwhile: nothing to record
            self.store.apply(failed, now)
        metrics.add_metric(name="DevicesFailed", unit="Count", value=1)
        logger.error("Ledger write failed for good", extra={"device_id": device_id, "error": error})
        if category == "unavailable":
            raise RetryLater(error) from None
        return "failed"

    def _redeliver(self, device_id: str) -> str:
        """Write the device's own token into its Ledger again (it reported another or none)."""
        device = self.store.get_device(device_id)
        if not device or not device.get("token_id"):
            return "done"
        token = self.store.get_token_secret(device["token_id"])
        try:
            self.ledger.set_ledger_token(device_id, token)
        except ParticleError as exc:
            self._stop_if_stack_wide(exc)
            raise RetryLater(_describe(exc)) from None
        metrics.add_metric(name="LedgerRewrites", unit="Count", value=1)
        self.store.note_redelivery(device_id, device["token_id"], self.clock())
        return "redelivered"

    # ---- clearing a Ledger --------------------------------------------------------------------

    def _clear(self, device_id: str, receive_count: int) -> str:
        """Write the cleared state into a ``clearing`` device's Ledger, then record it (-> waiting or
        retired); returns the new state."""
        device = self.store.get_device(device_id)
        if device is None or device.get("state") != "clearing":
            raise Changed(f"device {device_id}")
        self._write_clear(device_id, device, receive_count)
        now = self.clock()
        plan = rules.cleared(device, now)
        try:
            self.store.apply(plan, now)
        except Changed:
            raise _Wrote(CLEARED) from None
        metrics.add_metric(name="LedgersCleared", unit="Count", value=1)
        logger.info("Ledger cleared", extra={"device_id": device_id, "reason": device.get("clear_reason")})
        return plan.writes[0].state_after or "waiting"

    def _write_clear(self, device_id: str, device: dict[str, Any] | None, receive_count: int) -> None:
        if device is None:
            device = self.store.get_device(device_id) or {}
        reason = device.get("clear_reason") or "revoked"
        try:
            self.ledger.clear_ledger_token(device_id, reason)
        except ParticleError as exc:
            self._stop_if_stack_wide(exc)
            category = _category(exc)
            decision = rules.ledger_failure(category, receive_count, self.max_attempts)
            error = _describe(exc)
            self.store.note_clear_attempt(device_id, error, self.clock())
            final = decision == "fail"
            if final:  # a revoked or moved token may still work on this device: an operator must look
                metrics.add_metric(name="LedgerClearsFailed", unit="Count", value=1)
            logger.warning(
                "Ledger clear failed", extra={"device_id": device_id, "error": error, "final": final}
            )
            # The device stays clearing (visible in the API); the message is retried, then the sweep
            # queues the device again.
            raise RetryLater(error) from None

    # ---- failures that are not this device's --------------------------------------------------

    def _stop_if_stack_wide(self, exc: ParticleError) -> None:
        """Raise Deferred when the call must wait past this invocation's time, Paused when Particle
        says the configuration is wrong; return when the failure is this device's own."""
        if isinstance(exc, ParticleBusy):
            metrics.add_metric(name="AssignDeferred", unit="Count", value=1)
            raise Deferred(_describe(exc), rules.visibility_delay(exc.retry_after)) from None
        status = _status(exc)
        probe = self._probe_ledger() if status == 404 else None
        reason = rules.configuration_error(status, ledger_probe_status=probe)
        if reason is None:
            return
        if status == 401:
            metrics.add_metric(name="ParticleAuthFailures", unit="Count", value=1)
            logger.error("Particle refused the access token")
            raise AuthFailure(reason) from None
        logger.error("Particle says the configuration is wrong", extra={"reason": reason})
        raise Paused(reason) from None

    def _probe_ledger(self) -> int | None:
        """After a 404 on a device's instance: the status of listing the Ledger's instances (one
        page of one), or None when it answered (the Ledger is there: the 404 was the device's)."""
        lister = getattr(self.ledger, "list_ledger_instances", None)
        if lister is None:  # a writer that cannot list: the 404 is taken as the device's
            return None
        try:
            next(iter(lister(per_page=1)), None)
        except ParticleError as exc:
            return _status(exc)
        return None


CLEARED = ""  # what _Wrote carries when the cleared state was written


class _Wrote(Exception):
    """This worker wrote the device's Ledger (``value``: the token id, or CLEARED) but could not record
    it: the device changed meanwhile."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


def _category(exc: ParticleError) -> str:
    if isinstance(exc, ParticleAuthError):
        return "auth"
    if isinstance(exc, ParticleUnavailable):
        return "unavailable"
    return "refused"


def _status(exc: ParticleError) -> int | None:
    """The HTTP status of a Particle error, from its type when it carries none."""
    for kind, status in ((ParticleAuthError, 401), (ParticleForbidden, 403), (ParticleNotFound, 404)):
        if isinstance(exc, kind):
            return exc.status or status
    return exc.status


def _describe(exc: ParticleError) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
