"""Run the functions' handlers the way Lambda does, without Lambda: load, build events, poll SQS.

The local stack and the tests use this to call the real, unchanged handlers with the events AWS
would send: an S3 notification, a schedule tick, a batch of SQS messages (with receive counts and
partial batch failures honoured as the SQS event source mapping honours them).
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"


@dataclass
class LambdaContext:
    """What Powertools reads from a Lambda context object."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = ""
    invoked_function_arn: str = ""
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = (
            self.invoked_function_arn
            or f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        )

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def load_handler(name: str, *, fresh: bool = False, instance: str = "") -> ModuleType:
    """Import ``functions/<name>/app.py`` under a module name of its own (every handler file is app.py).

    ``instance`` loads another copy with its own module state, as each concurrent Lambda execution
    environment has: handler modules keep per-invocation state (a batch processor, caches) that two
    threads must not share.
    """
    module_name = f"tokenflow_function_{name}" + (f"__{instance}" if instance else "")
    if module_name in sys.modules and not fresh:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler for function {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def invoke(name: str, event: dict[str, Any], *, instance: str = "") -> Any:
    return load_handler(name, instance=instance).lambda_handler(event, LambdaContext(function_name=name))


def s3_put_event(bucket: str, key: str, size: int = 0) -> dict[str, Any]:
    """An S3 ObjectCreated:Put notification; the key is URL-encoded as S3 encodes it."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "tokenflow-local",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "sequencer": uuid.uuid4().hex[:16],
                    },
                },
            }
        ]
    }


def sqs_event(queue_arn: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", "0"),
                    "SenderId": "local",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def poll_once(
    sqs: Any, queue_url: str, function: str, *, batch_size: int = 10, retry_delay: int = 0, instance: str = ""
) -> int:
    """One poll of the SQS event source: receive a batch, invoke, delete what succeeded.

    Failed records (``batchItemFailures``, or all of them when the handler raised) become visible
    again after ``retry_delay`` seconds, as the queue's visibility timeout would make them.
    Returns the number of messages handled (0: the queue was empty).
    """
    answer = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=batch_size, AttributeNames=["All"], WaitTimeSeconds=0
    )
    messages = answer.get("Messages", [])
    if not messages:
        return 0
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    try:
        result = invoke(function, sqs_event(arn, messages), instance=instance) or {}
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
    except Exception:  # the whole batch returns to the queue, as with Lambda
        failed = {m["MessageId"] for m in messages}
    done = [m for m in messages if m["MessageId"] not in failed]
    for start in range(0, len(done), 10):
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                for n, m in enumerate(done[start : start + 10])
            ],
        )
    for m in messages:
        if m["MessageId"] in failed:
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=retry_delay
            )
    return len(messages)


def schedule_event() -> dict[str, Any]:
    return {"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}
