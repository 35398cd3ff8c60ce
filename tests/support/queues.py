"""Reading an SQS queue the way the tests check what a function queued."""

from __future__ import annotations

import json
from typing import Any


def queued(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The JSON bodies of the messages a receive returns now (up to 10; they stay in the queue)."""
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def queue_depth(sqs: Any, queue_url: str) -> int:
    """ApproximateNumberOfMessages: the visible messages (exact on moto)."""
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])
