"""The local SQS (moto with ``tokenflow_local.sqs_long_poll``) under concurrent deletes and sends.

The assign pollers delete their batches at the same time while the sweep sends; moto's
``Queue.delete_message`` copies the message list and replaces it. These tests hold one delete in
the middle of its copy (a pause injected into moto's per-message receipt check, or, on the local
delete's indexed path, into its look at the queue's pending messages between reading the list
and replacing it) while another delete, or a send, runs, so the interleaving that brought back
deleted messages (hidden for the queue's visibility timeout) and dropped sent ones is the same on
every run.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from moto.sqs import models as sqs_models


@pytest.fixture
def sqs(local_sqs: Any) -> Any:
    return local_sqs


class PausedDelete:
    """Runs ``delete_message`` in a thread of its own that pauses when moto's copy loop reaches
    ``gate`` (the message body where it stops), until ``resume()`` (or 2 s, so a delete that holds
    the queue's lock cannot hang the test)."""

    def __init__(self, sqs: Any, url: str, handle: str, gate: str) -> None:
        self.sqs, self.url, self.handle, self.gate = sqs, url, handle, gate
        self.paused, self._resume = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._delete, daemon=True)
        self._original = sqs_models.Message.had_receipt_handle
        self._pending = sqs_models.Queue.__dict__["pending_messages"]

    def _pause(self) -> None:
        if threading.current_thread() is self.thread and not self.paused.is_set():
            self.paused.set()
            self._resume.wait(2.0)

    def __enter__(self) -> PausedDelete:
        pause = self

        def had_receipt_handle(message: Any, receipt_handle: str) -> bool:
            if message.body == pause.gate:
                pause._pause()
            return bool(pause._original(message, receipt_handle))

        def pending_messages(queue: Any) -> Any:
            pause._pause()
            return pause._pending.fget(queue)

        sqs_models.Message.had_receipt_handle = had_receipt_handle  # type: ignore[method-assign]
        sqs_models.Queue.pending_messages = property(pending_messages)  # type: ignore[method-assign,assignment]
        self.thread.start()
        assert self.paused.wait(5.0), "the delete never reached its copy of the message list"
        return self

    def resume(self) -> None:
        self._resume.set()
        self.thread.join(10.0)

    def __exit__(self, *exc: object) -> None:
        self.resume()
        sqs_models.Message.had_receipt_handle = self._original  # type: ignore[method-assign]
        sqs_models.Queue.pending_messages = self._pending  # type: ignore[method-assign]

    def _delete(self) -> None:
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=self.handle)


def _queue_with(sqs: Any, *bodies: str) -> tuple[str, dict[str, str]]:
    """A queue holding ``bodies`` in order, the first two received (hidden for 720 s, as the assign
    queue's visibility timeout hides them): their receipt handles by body."""
    url = sqs.create_queue(QueueName="assign", Attributes={"VisibilityTimeout": "720"})["QueueUrl"]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
    return url, {m["Body"]: m["ReceiptHandle"] for m in received}


def _counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _run_while_paused(paused: PausedDelete, work: threading.Thread) -> None:
    """Start ``work`` while the delete is paused in its copy; let it finish first if it can (a
    delete without the queue's lock lets it), then resume the paused delete."""
    work.start()
    work.join(0.5)
    paused.resume()
    work.join(10.0)
    assert not work.is_alive()


def test_two_deletes_at_once_both_stay_deleted(sqs: Any) -> None:
    url, handles = _queue_with(sqs, "a", "b", "gate")

    with PausedDelete(sqs, url, handles["a"], gate="gate") as paused:
        other = threading.Thread(
            target=lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle=handles["b"]), daemon=True
        )
        _run_while_paused(paused, other)

    # Only "gate" is left, visible; neither deleted message is back (hidden for 720 s).
    assert _counts(sqs, url) == (1, 0)
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in left] == ["gate"]


def test_a_message_sent_while_two_deletes_run_is_kept(sqs: Any) -> None:
    url, handles = _queue_with(sqs, "a", "b", "gate")

    with PausedDelete(sqs, url, handles["a"], gate="gate") as paused:
        # Another delete replaces the list, then a send lands in the replaced list.
        work = threading.Thread(
            target=lambda: (
                sqs.delete_message(QueueUrl=url, ReceiptHandle=handles["b"]),
                sqs.send_message(QueueUrl=url, MessageBody="sent"),
            ),
            daemon=True,
        )
        _run_while_paused(paused, work)

    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in left) == ["gate", "sent"]
    assert _counts(sqs, url) == (0, 2)  # both just received; "a" and "b" are not back


def test_a_visibility_change_finds_its_message_while_a_delete_removes_one_before_it(sqs: Any) -> None:
    # The local delete removes its message from the list in place; moto's ChangeMessageVisibility
    # walks that list. A removal ahead of the walk, between two of its steps, would shift the
    # changed message past it (ReceiptHandleIsInvalid for a message that is there): the change
    # holds the queue's lock, so the delete waits for it.
    url = sqs.create_queue(QueueName="assign", Attributes={"VisibilityTimeout": "720"})["QueueUrl"]
    for body in ("a", "b", "handed-back"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    handles = {
        m["Body"]: m["ReceiptHandle"]
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3)["Messages"]
    }
    original = sqs_models.Message.had_receipt_handle
    paused, resume = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def change() -> None:
        try:
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=handles["handed-back"], VisibilityTimeout=0
            )
        except Exception as error:  # recorded for the assertion below
            errors.append(error)

    changer = threading.Thread(target=change, daemon=True)

    def had_receipt_handle(message: Any, receipt_handle: str) -> bool:
        if threading.current_thread() is changer and message.body == "b" and not paused.is_set():
            paused.set()
            resume.wait(2.0)
        return bool(original(message, receipt_handle))

    sqs_models.Message.had_receipt_handle = had_receipt_handle  # type: ignore[method-assign]
    try:
        changer.start()
        assert paused.wait(5.0), "the visibility change never walked the message list"
        deleter = threading.Thread(
            target=lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle=handles["a"]), daemon=True
        )
        deleter.start()
        deleter.join(0.5)  # a delete that does not wait for the change removes "a" now
        resume.set()
        changer.join(10.0)
        deleter.join(10.0)
    finally:
        sqs_models.Message.had_receipt_handle = original  # type: ignore[method-assign]

    assert errors == []
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in left] == ["handed-back"]  # visible again; "a" deleted, "b" hidden
    assert _counts(sqs, url) == (0, 2)
