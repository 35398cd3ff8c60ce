"""SQS long polling in the embedded AWS that sleeps until something can change the answer.

Lambda's SQS event source mapping long-polls its queue ("For standard queues, Lambda uses long
polling to poll a queue until it becomes active", AWS Lambda developer guide, "Configuring scaling
behavior for SQS event source mappings", https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html),
with ReceiveMessage's ``WaitTimeSeconds`` (at most 20 s). The local pollers do the same
(``triggers.sqs_pollers``), so an idle stack makes one receive per poller per 20 s instead of
polling every fraction of a second.

moto answers a long poll by re-scanning the queue once a second (``Queue.wait_for_messages(1)``),
and a message that becomes visible again (a changed visibility, an expired visibility timeout, a
delay) is only noticed at that next scan. Here the receive waits on the queue's own condition
(which ``add_message`` notifies) until the moment the earliest hidden message becomes visible,
and ``ChangeMessageVisibility`` notifies it too: the poll wakes when, and only when, the answer can
have changed. ``interrupt()`` ends every waiting receive at once (empty), so stopping the stack does
not wait out a 20 s poll; ``resume()`` (the next stack's start) lets receives wait again.

It wraps moto's own ``receive_message`` (called with no wait: moto's scan, receive counts,
visibility and dead-letter redrive are unchanged) and is installed once per process.

It also makes moto's ``Queue.delete_message`` hold the queue's lock. moto deletes by copying the
queue's message list without the deleted message and then replacing the list, with no lock, while
``add_message`` appends under the lock and the server answers requests in concurrent threads. Two
deletes at once (the assign pollers' DeleteMessageBatch) each copy the old list, and the last to
replace it brings back the message the other deleted: a processed message returns, hidden for the
rest of the visibility timeout it was received with (720 s for the assign queue), and is received
again after it. A message sent between the two copies and the replacement is lost. SQS "can delete
a message from a queue even if a visibility timeout setting causes the message to be locked by
another consumer", and a deleted message comes back only "on rare occasions if one of the servers
which stores a copy of the message is unavailable" (DeleteMessage,
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_DeleteMessage.html), not
whenever two consumers delete at once; and a message it accepted is not dropped.

And the delete finds its message through the receipt handles given out (every handle a message was
received with, as moto's ``had_receipt_handle`` accepts), not by asking every message of the queue
twice: at 100,000 queued messages moto's delete took 70 ms, and the assign pollers delete every
message they handle. A handle it does not know (never given, already deleted, or of a message moved
to the dead-letter queue) goes to moto's own delete, which answers as before. The message leaves
the list in place rather than in a copy of it, so ``ChangeMessageVisibility``, which walks the
list, holds the lock too.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from moto.sqs import models as sqs_models

_interrupted = threading.Event()
_saved: list[tuple[type, str, Any]] = []
_EPSILON_S = 0.005  # moto's "visible" is strictly after visible_at (milliseconds)
# Every receipt handle given out, to its message (while the message lives).
_received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def installed() -> bool:
    return bool(_saved)


def install() -> None:
    """Patch moto's SQS backend (once per process)."""
    if _saved:
        return
    backend, queue_class, message_class = sqs_models.SQSBackend, sqs_models.Queue, sqs_models.Message
    receive, change = backend.receive_message, backend.change_message_visibility
    delete, purge = queue_class.delete_message, backend.purge_queue
    mark_received = message_class.mark_received
    _saved.extend(
        [
            (backend, "receive_message", receive),
            (backend, "change_message_visibility", change),
            (backend, "purge_queue", purge),
            (queue_class, "delete_message", delete),
            (message_class, "mark_received", mark_received),
        ]
    )

    def marked_received(self: Any, visibility_timeout: int | None = None) -> None:
        mark_received(self, visibility_timeout)
        _received[self.receipt_handle] = self

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        deadline = time.monotonic() + float(wait_seconds_timeout or 0)
        queue = self.get_queue(queue_name)
        condition = queue._messages_lock
        with condition:  # held from the scan to the wait: no message can slip in between
            while True:
                result = receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
                left = deadline - time.monotonic()
                if result or left <= 0 or _interrupted.is_set():
                    return list(result)
                condition.wait(min(left, _next_visible_in(queue)))

    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:  # moto walks the list: no delete may shift it meanwhile
            change(self, queue_name, receipt_handle, visibility_timeout)
            queue._messages_lock.notify_all()

    def delete_message(self: Any, receipt_handle: str) -> None:
        # moto's read-copy-replace of the message list, made atomic with every other change to it
        # (the receive above, add_message, another delete): nothing is brought back or dropped.
        with self._messages_lock:
            message = _received.get(receipt_handle)
            if message is not None and receipt_handle not in self.deleted_messages:
                messages = self._messages
                try:
                    at = messages.index(message)  # by identity: moto's Message has no __eq__
                except ValueError:
                    pass  # not in this queue (moved to its dead-letter queue): moto answers
                else:
                    self.pending_messages.discard(message)
                    # In place: a copy of the list per delete cost a reference count per queued
                    # message (5.5 % of the fleet benchmark's process with 60,000 queued). The
                    # walks of the list that must not miss a message hold this lock (the receive,
                    # the visibility change); moto's attribute counts are approximate, and its
                    # FIFO deduplication walk in add_message, outside the lock, serves no queue of
                    # this project (none is FIFO).
                    del messages[at]
                    self.deleted_messages.update(message.all_receipt_handles)
                    return
            delete(self, receipt_handle)

    def purge_queue(self: Any, queue_name: str) -> None:
        with self.get_queue(queue_name)._messages_lock:  # replaces the list too
            purge(self, queue_name)

    backend.receive_message = receive_message  # type: ignore[method-assign]
    backend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]
    backend.purge_queue = purge_queue  # type: ignore[method-assign]
    queue_class.delete_message = delete_message  # type: ignore[method-assign]
    message_class.mark_received = marked_received  # type: ignore[method-assign]


def uninstall() -> None:
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


def interrupt() -> None:
    """End every waiting receive now (with no messages) and keep later ones from waiting."""
    _interrupted.set()
    for queue in _all_queues():
        _notify(queue)


def resume() -> None:
    _interrupted.clear()


def _notify(queue: Any) -> None:
    with queue._messages_lock:
        queue._messages_lock.notify_all()


def _all_queues() -> list[Any]:
    queues = []
    for account in list(sqs_models.sqs_backends.values()):
        for backend in list(account.values()):
            queues.extend(list(backend.queues.values()))
    return queues


def _next_visible_in(queue: Any) -> float:
    """Seconds until the earliest hidden or delayed message of ``queue`` becomes receivable (20 s
    when none is hidden: the longest any receive waits)."""
    now_ms = time.time() * 1000.0
    due = [
        max(m.visible_at, m.delayed_until)
        for m in list(queue._messages)
        if max(m.visible_at, m.delayed_until) >= now_ms
    ]
    if not due:
        return 20.0
    return max(_EPSILON_S, (min(due) - now_ms) / 1000.0 + _EPSILON_S)
