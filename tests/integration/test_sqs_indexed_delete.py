"""The local SQS delete (``tokenflow_local.sqs_long_poll``) finds its message through the receipt
handles given out; what it answers is SQS's (and moto's) for every kind of handle."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError


@pytest.fixture
def sqs(local_sqs: Any) -> Any:
    return local_sqs


def _bodies(sqs: Any, url: str) -> list[str]:
    return sorted(
        m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    )


def test_a_message_is_deleted_by_any_handle_it_was_received_with_and_a_second_delete_is_a_no_op(
    sqs: Any,
) -> None:
    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    first = {
        m["Body"]: m["ReceiptHandle"]
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    }
    time.sleep(1.1)  # visible again: received a second time, with new handles
    second = {
        m["Body"]: m["ReceiptHandle"]
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    }
    assert first["b"] != second["b"]

    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["b"])  # the older handle
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["b"])  # already deleted: no error
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["c"])
    time.sleep(1.1)
    assert _bodies(sqs, url) == ["a"]


def test_a_handle_never_given_out_is_refused(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="a")
    with pytest.raises(ClientError) as raised:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    assert raised.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    assert _bodies(sqs, url) == ["a"]


def test_a_handle_of_a_message_moved_to_the_dead_letter_queue_is_refused_and_the_moved_message_kept(
    sqs: Any,
) -> None:
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "1"}}'
    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "1", "RedrivePolicy": redrive})[
        "QueueUrl"
    ]
    sqs.send_message(QueueUrl=url, MessageBody="a")
    [message] = sqs.receive_message(QueueUrl=url)["Messages"]
    time.sleep(1.1)
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []  # received once: moved

    with pytest.raises(ClientError) as raised:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert raised.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    assert _bodies(sqs, dlq) == ["a"]
