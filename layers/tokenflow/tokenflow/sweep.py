"""Find the devices that need work and queue them for the assign workers.

Pages through the devices of the Particle product (one Particle request and one BatchGetItem per
page) and queues, in batches of ten messages:
- devices Tokenflow has never seen;
- waiting devices, when tokens are available;
- devices whose Ledger write (or cleared state) is pending for longer than ``stale_after`` seconds
  (a worker died), or failed with a retryable error (``tokenflow.rules.needs_work``).
Quarantined and denied devices are skipped: they never get a token. A fleet where every device is
done costs no writes to devices and no messages.

The scheduled sweep (``Sweeper.resume``) is a resumable pass over the listing:
- a lease (``store.sweep_state``: a conditional write that expires by itself) lets one run list at
  a time; a run that finds it held does nothing, one that finds it expired (a run that died) takes
  it over;
- a cursor (the next page of the pass) is moved after every page, so a run continues where the
  last one stopped; a run that fails keeps the cursor at the page it failed on, never back to page 1;
- a time budget: before each page the run asks the Lambda context for its remaining time and stops
  while more than ``safety_margin_ms`` plus its longest page so far is left, and in any case once
  it has used ``max_run_share`` of the time it had (60 %: a run ends well before its timeout, with
  room for a page slowed by a Particle ``Retry-After`` or a throttled table), to write the cursor
  and give the lease back inside its timeout. The next run continues the pass: the next schedule
  tick, or the sweep an import starts. It does not invoke itself: a self-invoking function is a
  loop that only its own code stops (Lambda's recursive-loop detection does not cover it), and its
  role would need InvokeFunction on its own ARN; since status reports queue new devices directly
  (``Lifecycle.report_status``), the full pass is reconciliation and its pace is the schedule's.
- a pace: a new pass starts at most once per ``pass_interval`` (the schedule's period, less a
  little for the start-up jitter of a tick), unless an import asked for one
  (``store.sweep_state``); a run that finds the last pass started too recently lists nothing
  (``stopped="rested"``), and so does one that finds the assign queue still holding work (the
  last pass's devices are still being served: a new listing would find them all already queued),
  for three intervals or, when longer, the time the devices the last pass queued (or the backlog,
  when larger) take to serve (``queue_wait``), counted from that pass's start. So
  the fleet is listed at most once per period whatever starts the sweep, and not again while a
  backlog of the last pass is being worked off: in a 10,000-device run on this machine, the second
  pass 540 s into the run listed 100 pages to queue 1 device.
- a device's queued mark (``tokenflow.queue_once``) stands for its waiting message for 15 minutes
  plus that same backlog time (of the last pass's devices, or of the backlog when larger): at
  100,000 devices the last message of a first pass waits about 53 minutes at Particle's limit, and
  a pass that took its mark for a lost message after 15 minutes (or after 15 minutes plus the time
  of the few messages left) would queue tens of thousands of devices a second time.

Particle cost: one list request per page, so a full pass costs ``ceil(devices / 100)`` requests
(1,000 for 100,000 devices), however many runs it spans; a page a failed run had listed but not
recorded is listed once more. Each new device reporting its status costs one more request (the
product lookup of ``Lifecycle.report_status``). DynamoDB per page: one BatchGetItem (the devices),
one UpdateItem (the cursor), and when devices are to be queued one BatchGetItem of their queued
marks and one BatchWriteItem per 25 marked (``OnceQueue.send_page``: a device already waiting in
the queue is not queued again).

``Sweeper.sweep`` is one whole pass from page 1, without lease or cursor (tests, benchmarks).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tokenflow import rules
from tokenflow.assignment import AssignRequest
from tokenflow.observability import logger, metrics
from tokenflow.particle import Device, DevicePage, ParticleError
from tokenflow.queue_once import OnceQueue, Queue
from tokenflow.store import Store
from tokenflow.store.sweep_state import HOLD_PERIODS, SweepState

# Without a Lambda context (a direct call) a run may take this long: the sweep function's Timeout.
DEFAULT_BUDGET_MS = 300_000
# A lease outlives the run's own time by this much: a run cannot outlive its timeout, so a lease
# left by a run that died is free shortly after that run's end.
LEASE_SLACK_MS = 5_000


class DeviceLister(Protocol):
    def iter_device_pages(self, per_page: int = 100, start: int = 1) -> Iterator[DevicePage]: ...

    def token_expires_at(self) -> str | None: ...


class RemainingTime(Protocol):
    """The part of the Lambda context a run reads: the milliseconds left before its timeout
    (https://docs.aws.amazon.com/lambda/latest/dg/python-context.html)."""

    def get_remaining_time_in_millis(self) -> int: ...


@dataclass
class SweepResult:
    pages: int = 0
    devices: int = 0
    skipped_quarantined: int = 0
    skipped_denied: int = 0
    queued: dict[str, int] = field(default_factory=dict)
    already_queued: int = 0
    available_tokens: int = 0
    # A resumed run: its pass, the page it started at, the page the next run starts at (None: the
    # pass is finished), and why it stopped (finished, budget, lease-held, lease-lost).
    pass_id: str | None = None
    first_page: int = 1
    next_page: int | None = None
    stopped: str = "finished"
    took_over_from: str | None = None

    @property
    def queued_total(self) -> int:
        return sum(self.queued.values())


class Sweeper:
    def __init__(
        self,
        store: Store,
        particle: DeviceLister,
        queue: Queue,
        *,
        stale_after: int = 900,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        state: SweepState | None = None,
        safety_margin_ms: int = 30_000,
        max_run_share: float = 0.6,
        pass_interval: float = 0.0,
        backlog: Callable[[], int] | None = None,
        seconds_per_message: float = 0.0,
    ) -> None:
        self.store = store
        self.particle = particle
        self.queue = queue
        self.stale_after = stale_after
        self.now = now
        self.state = state if state is not None else SweepState(store.db)
        # Left for writing the cursor and giving the lease back (a page's 100 conditional writes and
        # ten queue sends take a few seconds at worst; a Particle 429 can ask for more: the longest
        # page so far is added).
        self.safety_margin_ms = safety_margin_ms
        self.max_run_share = max_run_share
        # Seconds between the starts of two passes, at least (0: a new pass whenever none is under way).
        self.pass_interval = pass_interval
        # The assign queue's messages not yet handled (None: not known, nothing held back).
        self.backlog = backlog
        # The least time the assign workers take per message: one Ledger write at Particle's limit
        # (its window over its request count); 0: not known.
        self.seconds_per_message = seconds_per_message

    # ---- one whole pass ------------------------------------------------------------------------

    def sweep(self, per_page: int = 100) -> SweepResult:
        """Every page from page 1, in this call, without lease or cursor."""
        result = SweepResult()
        available, stale_before = self._begin(result)
        waiting_s = self.queue_wait(self.queue_backlog())
        for page in self.particle.iter_device_pages(per_page=per_page):
            self._handle_page(page, result, available, stale_before, waiting_s)
        self._finish(result)
        return result

    # ---- the scheduled, resumable pass ---------------------------------------------------------

    def resume(
        self, context: RemainingTime | None = None, per_page: int = 100, *, new_pass: bool = False
    ) -> SweepResult:
        """Continue the current pass (or start one, when the pace allows or ``new_pass`` asks for
        one) under the lease, until the pass ends or the time budget is spent; see the module
        docstring."""
        result = SweepResult()
        owner = uuid.uuid4().hex
        moment = self.now()
        remaining = context.get_remaining_time_in_millis() if context is not None else DEFAULT_BUDGET_MS
        backlog = self.queue_backlog()
        waiting_s = self.queue_wait(backlog)
        cursor = self.state.acquire(
            owner,
            _epoch_ms(moment),
            remaining + LEASE_SLACK_MS,
            new_pass_id=uuid.uuid4().hex,
            now=_iso(moment),
            min_interval_ms=int(self.pass_interval * 1000),
            request_new_pass=new_pass,
            hold_ms=self._hold_ms(new_pass, backlog),
            hold_ms_per_last_queued=1000 * self.queue_wait(1),
        )
        if cursor is None:
            result.stopped = "lease-held"
            logger.info("Another sweep holds the lease: nothing to do")
            return result
        if cursor.resting:
            self.state.release(owner)
            result.stopped, result.next_page = "rested", None
            logger.info("The last pass started less than the pass interval ago: nothing to list")
            return result
        if backlog:
            # A message of the last pass may wait behind all that pass queued, counted from its
            # start; what is left of the backlog alone would take a mark queued long ago for lost.
            waiting_s = self.queue_wait(max(backlog, cursor.last_pass_queued))
        result.pass_id, result.first_page, result.next_page = (
            cursor.pass_id,
            cursor.next_page,
            cursor.next_page,
        )
        result.took_over_from = cursor.took_over_from
        if cursor.took_over_from:
            metrics.add_metric(name="SweepLeasesTakenOver", unit="Count", value=1)
            logger.warning(
                "Took over the lease of a sweep that stopped", extra={"pages_done": cursor.pages_done}
            )
        try:
            self._run(
                cursor.pass_id, cursor.next_page, owner, context, remaining, per_page, result, waiting_s
            )
        finally:
            # The cursor stays where the last recorded page left it, whatever stopped this run.
            self.state.release(owner)
        return result

    def queue_backlog(self) -> int | None:
        """The assign queue's messages not yet handled; None when not known."""
        if self.backlog is None:
            return None
        try:
            return self.backlog()
        except Exception:  # the queue's counts are a hint: without them the pace alone decides
            logger.warning("Could not read the assign queue's backlog", exc_info=True)
            return None

    def queue_wait(self, backlog: int | None) -> float:
        """Seconds the messages waiting in the assign queue take to be served, at least (one Ledger
        write each at Particle's limit), twice over for retries, hand-backs and the pacing's margin."""
        return 2.0 * (backlog or 0) * self.seconds_per_message

    def _hold_ms(self, new_pass: bool, backlog: int | None) -> int:
        """How long after the last pass began a new one waits for its devices to be served: 0 when
        the queue is empty or not known, or a new pass was asked for; else ``HOLD_PERIODS`` intervals,
        or the backlog's time when longer (only where passes are paced). ``SweepState.acquire``
        makes it at least the time of every device the last pass queued."""
        if new_pass or not backlog or self.pass_interval <= 0:
            return 0
        return int(1000 * max(HOLD_PERIODS * self.pass_interval, self.queue_wait(backlog)))

    def _run(
        self,
        pass_id: str,
        start: int,
        owner: str,
        context: RemainingTime | None,
        run_ms: int,
        per_page: int,
        result: SweepResult,
        waiting_s: float = 0.0,
    ) -> None:
        available, stale_before = self._begin(result)
        pages = self.particle.iter_device_pages(per_page=per_page, start=start)
        longest_ms = 0.0
        # Kept back from the run's time: the margin and its longest page, or the share it may not use.
        keep_ms = (1 - self.max_run_share) * run_ms
        while True:
            if context is not None and context.get_remaining_time_in_millis() < max(
                keep_ms, self.safety_margin_ms + longest_ms
            ):
                result.stopped = "budget"
                break
            began = time.monotonic()
            page = next(pages, None)
            if page is None:  # the listing ended without saying it was the last page
                self.state.finish_pass(owner, pass_id, _iso(self.now()))
                result.next_page, result.stopped = None, "finished"
                break
            queued = self._handle_page(page, result, available, stale_before, waiting_s)
            if not self.state.advance(owner, pass_id, page.page + 1, len(page.devices), queued):
                result.stopped = "lease-lost"
                break
            result.next_page = page.page + 1
            longest_ms = max(longest_ms, (time.monotonic() - began) * 1000)
            if not page.devices or page.page >= page.total_pages:
                self.state.finish_pass(owner, pass_id, _iso(self.now()))
                result.next_page, result.stopped = None, "finished"
                break
        if result.stopped == "finished":
            self._report_token_expiry()
        self._finish(result)

    def _report_token_expiry(self) -> None:
        """Once per full pass (one Particle request): the days the access token has left, so an
        alarm fires well before a ``particle token create`` token runs out (a product API user's
        token never expires: nothing is published)."""
        try:
            expires_at = self.particle.token_expires_at()
        except ParticleError as exc:  # the next pass asks again; the listing itself went through
            logger.warning("Could not read the access token's expiry", extra={"error": type(exc).__name__})
            return
        days = days_left(expires_at, self.now())
        if days is not None:
            metrics.add_metric(name="ParticleTokenDaysLeft", unit="Count", value=round(days, 2))

    # ---- pages ---------------------------------------------------------------------------------

    def _begin(self, result: SweepResult) -> tuple[int, str]:
        summary = self.store.summary()
        result.available_tokens = summary["tokens"]["available"]
        # Gauges from the read the run makes anyway, published before the listing so that a run
        # Particle refuses (a 401 pauses assignment too) still shows them: the stock (LowStockAlarm),
        # the waiting devices and the paused state (1 while assignment is paused, store/pause.py).
        metrics.add_metric(name="AvailableTokens", unit="Count", value=result.available_tokens)
        metrics.add_metric(name="DevicesWaitingNow", unit="Count", value=summary["devices"]["waiting"])
        metrics.add_metric(name="AssignmentPausedNow", unit="Count", value=int(summary["paused"] is not None))
        stale_before = _iso(self.now() - timedelta(seconds=self.stale_after))
        return result.available_tokens, stale_before

    def _handle_page(
        self,
        page: DevicePage,
        result: SweepResult,
        available: int,
        stale_before: str,
        waiting_s: float = 0.0,
    ) -> int:
        """Queue the page's devices that need work; answers how many were sent. ``waiting_s``: how
        long the queue's messages may still wait, added to the time a queued mark holds."""
        result.pages += 1
        result.devices += len(page.devices)
        eligible: list[Device] = []
        for device in page.devices:
            if device.quarantined:
                result.skipped_quarantined += 1
            elif device.denied:
                result.skipped_denied += 1
            else:
                eligible.append(device)
        known = self.store.get_devices([d.id for d in eligible]) if eligible else {}
        requests: list[AssignRequest] = []
        for device in eligible:
            reason = rules.needs_work(known.get(device.id), available, stale_before)
            if reason:
                item = known.get(device.id)
                requests.append(
                    AssignRequest(
                        device.id, item.get("state") if item else None, reason, device.record_fields()
                    )
                )
        if not requests:
            return 0
        # Devices that could not be queued are found again by the next pass.
        if isinstance(self.queue, OnceQueue):
            outcome = self.queue.send_page(requests, waiting_allowance=waiting_s)
            sent, result.already_queued = (
                set(outcome.sent),
                result.already_queued + len(outcome.already_queued),
            )
        else:
            failed = set(self.queue.send(requests))
            sent = {r.device_id for r in requests} - failed
        for request in requests:
            if request.device_id in sent:
                result.queued[request.reason] = result.queued.get(request.reason, 0) + 1
        return len(sent)

    def _finish(self, result: SweepResult) -> None:
        metrics.add_metric(name="DevicesQueued", unit="Count", value=result.queued_total)
        metrics.add_metric(name="SweepPagesListed", unit="Count", value=result.pages)
        logger.info("Sweep finished", extra={"result": result.__dict__})


def days_left(expires_at: str | None, now: datetime) -> float | None:
    """Days from ``now`` to an ISO 8601 expiry (negative once past); None when there is none or it
    cannot be read."""
    if not expires_at:
        return None
    try:
        moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - now).total_seconds() / 86400


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _iso(moment: datetime) -> str:
    """The table's time format (``wiring.utc_now``): UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
