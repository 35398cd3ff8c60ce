"""One message per device of work: a device already queued and not yet handled is not queued again.

Before a request goes to the assign queue its device is marked (``store.queue_marks``); a device
whose mark holds (set less than the window ago) is left out, its waiting message will serve it. The
message carries ``queued_at``, and the worker removes the mark with the transaction that claims or
delivers the device (``Assigner.assign``), so the next need of the device is queued again at once.

Two ways to mark, by who queues:
- a page of the sweep (``send_page``): the page's marks are read in one BatchGetItem and written in
  BatchWriteItems of 25, unconditionally (``QueueMarks.put`` says why that is safe): a few calls
  per page instead of one per device;
- a status report or another single request (``send_once``): one conditional UpdateItem per device
  (``QueueMarks.mark``), which holds only when the device has no fresh mark.

Why a mark in the table rather than an SQS FIFO queue's deduplication: FIFO deduplication forgets
an id five minutes after the send, whether or not the message was handled ("if multiple messages
with the same deduplication ID are sent within a 5 minute deduplication interval, they are treated
as duplicates", https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-key-terms.html),
so a backlog longer than five minutes (a 100,000-device first pass) would be queued twice anyway;
and a FIFO queue bounds the event source's throughput per message group and changes the queue, its
DLQ and the event source mapping. The mark lasts exactly as long as the message is waiting (or up
to the window, for a message that was lost or went to the dead-letter queue), on the standard
queue as it is; from the sweep it costs about 1/25 of a call per device, and its removal rides in
the worker's claim transaction.

Only the requests whose handling depends on the device's record alone are deduplicated (the
sweep's and the status reports'); an operator's (``manual``, ``redeliver``, ``transfer``, ``clear``)
asks for something the waiting message would not do, so it is always sent, unmarked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from tokenflow.assignment import AssignRequest
from tokenflow.observability import metrics
from tokenflow.store.queue_marks import QueueMarks

# Reasons whose request the worker handles from the device's record alone (see the docstring).
DEDUPLICATED_REASONS = frozenset({"sweep", "new", "waiting", "stale", "retry", "webhook"})


class Queue(Protocol):
    def send(self, requests: Sequence[AssignRequest]) -> list[str]: ...


@dataclass(frozen=True)
class Sent:
    """What one send did, by device id."""

    sent: list[str]
    already_queued: list[str]
    failed: list[str]


class OnceQueue:
    """The assign queue, with a device's waiting message standing for every later need of it."""

    def __init__(
        self, queue: Queue, marks: QueueMarks, *, clock: Callable[[], str], window: int = 900
    ) -> None:
        self.queue = queue
        self.marks = marks
        self.clock = clock
        # A mark older than this is taken for a lost message (the sweep's stale window: 15 minutes,
        # past the queue's 720 s visibility timeout of one receive).
        self.window = window

    def send(self, requests: Sequence[AssignRequest]) -> list[str]:
        """Queue the requests (the ``AssignQueue.send`` contract): the devices that could not be queued."""
        return self.send_once(requests).failed

    def send_once(self, requests: Sequence[AssignRequest]) -> Sent:
        now = self.clock()
        stale_before = _iso(datetime.fromisoformat(now) - timedelta(seconds=self.window))
        to_send: list[AssignRequest] = []
        marked: set[str] = set()
        already: list[str] = []
        for request in requests:
            if request.reason in DEDUPLICATED_REASONS:
                if request.device_id in marked or not self.marks.mark(request.device_id, now, stale_before):
                    already.append(request.device_id)
                    continue
                marked.add(request.device_id)
                request = replace(request, queued_at=now)
            to_send.append(request)
        return self._send(to_send, marked, already, now)

    def send_page(self, requests: Sequence[AssignRequest], *, waiting_allowance: float = 0.0) -> Sent:
        """Queue a sweep page's requests, one message per device: the marks of the page are read
        with one BatchGetItem and written with BatchWriteItems of 25 (``QueueMarks.put``: why no
        condition is needed), instead of one conditional write per device. ``waiting_allowance``:
        seconds the queue's backlog takes to be served (``Sweeper.queue_wait``), for which a mark
        holds on top of the window: a message behind a deep backlog is waiting, not lost."""
        now = self.clock()
        stale_before = _iso(datetime.fromisoformat(now) - timedelta(seconds=self.window + waiting_allowance))
        deduplicated = [r.device_id for r in requests if r.reason in DEDUPLICATED_REASONS]
        marks = self.marks.read(deduplicated) if deduplicated else {}
        fresh = {device_id for device_id, at in marks.items() if at >= stale_before}
        to_send: list[AssignRequest] = []
        marked: set[str] = set()
        already: list[str] = []
        for request in requests:
            if request.reason in DEDUPLICATED_REASONS:
                if request.device_id in fresh or request.device_id in marked:
                    already.append(request.device_id)
                    continue
                marked.add(request.device_id)
                request = replace(request, queued_at=now)
            to_send.append(request)
        if marked:
            self.marks.put([r.device_id for r in to_send if r.device_id in marked], now)
        return self._send(to_send, marked, already, now)

    def _send(self, to_send: list[AssignRequest], marked: set[str], already: list[str], now: str) -> Sent:
        failed = self.queue.send(to_send) if to_send else []
        for device_id in failed:
            if device_id in marked:
                self.marks.unmark(device_id, now)  # not queued after all: the next need may queue it
        if already:
            metrics.add_metric(name="DevicesAlreadyQueued", unit="Count", value=len(already))
        failed_set = set(failed)
        return Sent([r.device_id for r in to_send if r.device_id not in failed_set], already, failed)


def _iso(moment: datetime) -> str:
    """The table's time format (``wiring.utc_now``): UTC, milliseconds, ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
