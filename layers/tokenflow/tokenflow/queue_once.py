"""One message per device of work: a device already queued and not yet handled is not queued again.

Before a request goes to the assign queue its device is marked (``store.queue_marks``: a
conditional UpdateItem that holds only when the device has no mark, or one older than the window);
a device whose mark holds is left out, its waiting message will serve it. The message carries
``queued_at``, and the worker removes the mark once it has handled that message
(``handled``), so the next need of the device is queued again at once.

Why a mark in the table rather than an SQS FIFO queue's deduplication: FIFO deduplication forgets
an id five minutes after the send, whether or not the message was handled ("if multiple messages
with the same deduplication ID are sent within a 5 minute deduplication interval, they are treated
as duplicates", https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-key-terms.html),
so a backlog longer than five minutes (a 100,000-device first pass) would be queued twice anyway;
and a FIFO queue bounds the event source's throughput per message group and changes the queue, its
DLQ and the event source mapping. The mark lasts exactly as long as the message is waiting (or up
to the window, for a message that was lost or went to the dead-letter queue), on the standard
queue as it is; it costs one conditional write when queued and one when handled.

Only the requests whose handling depends on the device's record alone are deduplicated (the
sweep's and the status reports'); an operator's (``manual``, ``redeliver``, ``transfer``, ``clear``)
asks for something the waiting message would not do, so it is always sent, unmarked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from tokenflow.assignment import AssignRequest
from tokenflow.observability import logger, metrics
from tokenflow.store.queue_marks import QueueMarks

# The message attribute that names the mark a message stands for.
QUEUED_AT = "queued_at"
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
                request = replace(request, fields={**request.fields, QUEUED_AT: now})
            to_send.append(request)
        failed = self.queue.send(to_send) if to_send else []
        for device_id in failed:
            if device_id in marked:
                self.marks.unmark(device_id, now)  # not queued after all: the next need may queue it
        if already:
            metrics.add_metric(name="DevicesAlreadyQueued", unit="Count", value=len(already))
        failed_set = set(failed)
        return Sent([r.device_id for r in to_send if r.device_id not in failed_set], already, failed)


def handled(marks: QueueMarks, message: dict[str, Any]) -> None:
    """The worker handled ``message``: remove the mark it stands for, if it carries one. A failure
    is logged, not raised: the mark then lapses after the window, and the device is queued again."""
    queued_at = message.get(QUEUED_AT)
    device_id = message.get("device_id")
    if not isinstance(queued_at, str) or not isinstance(device_id, str):
        return
    try:
        marks.unmark(device_id, queued_at)
    except Exception:  # the message is handled; only a later queueing of the device waits longer
        logger.exception("Could not remove a queued mark", extra={"device_id": device_id})


def _iso(moment: datetime) -> str:
    """The table's time format (``wiring.utc_now``): UTC, milliseconds, ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
