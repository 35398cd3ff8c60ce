"""The assign queue: how the sweep, the API and the webhook ask the assign workers to serve devices."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tokenflow import aws
from tokenflow.assignment import AssignRequest
from tokenflow.observability import logger

SQS_BATCH = 10


class AssignQueue:
    def __init__(self, queue_url: str, sqs: Any | None = None) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = aws.client("sqs")
        return self._sqs

    def send(self, requests: Sequence[AssignRequest]) -> list[str]:
        """Queue requests, ten per SendMessageBatch; returns the device ids that could not be queued."""
        failed: list[str] = []
        for start in range(0, len(requests), SQS_BATCH):
            chunk = requests[start : start + SQS_BATCH]
            entries = [{"Id": str(n), "MessageBody": json.dumps(r.to_message())} for n, r in enumerate(chunk)]
            answer = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed.extend(chunk[int(f["Id"])].device_id for f in answer.get("Failed", []))
        if failed:
            logger.warning("Some devices could not be queued", extra={"devices": failed})
        return failed

    def backlog(self) -> int:
        """Messages in the queue not yet handled: waiting, in flight and delayed (one
        GetQueueAttributes; the counts are approximate, as SQS says)."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        answer = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
        return sum(int(answer.get("Attributes", {}).get(name, 0)) for name in names)
