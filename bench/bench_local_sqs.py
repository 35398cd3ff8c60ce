"""The local SQS (moto with the local stack's patches) against a deep queue, with and without them.

    .venv/bin/python bench/bench_local_sqs.py --messages 100000

A queue holding ``--messages`` messages, as the assign queue holds a fleet's devices while the limit
paces their Ledger writes. Timed, as the assign pollers and the sweep use the queue: a receive of
ten, the deletes of the ten received, and a send. Once with moto as it is, once with
``tokenflow_local.moto_speedups`` and ``tokenflow_local.sqs_long_poll`` installed (in that order, as
the stack installs them). The fleet benchmark at 100,000 devices is only possible with the second.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3
from moto import mock_aws
from moto.sqs import models as sqs_models

from tokenflow_local import moto_speedups, sqs_long_poll

ACCOUNT, REGION = "123456789012", "us-east-1"


def measure(messages: int, rounds: int) -> dict[str, float]:
    """Milliseconds per operation on a queue of ``messages`` messages (moto as currently patched)."""
    with mock_aws():
        boto3.client("sqs", region_name=REGION).create_queue(QueueName="assign")
        backend = sqs_models.sqs_backends[ACCOUNT][REGION]
        queue = backend.get_queue("assign")
        now_ms = int(time.time() * 1000)
        for n in range(messages):  # straight into the queue: filling it is not what is measured
            message = sqs_models.Message(str(n), json.dumps({"device_id": f"{n:024x}"}))
            message.sent_timestamp = now_ms
            queue.add_message(message)
        receive = delete = send = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            received = backend.receive_message("assign", 10, 0, 720)
            receive += time.perf_counter() - started
            started = time.perf_counter()
            for message in received:
                queue.delete_message(message.receipt_handle)
            delete += time.perf_counter() - started
            started = time.perf_counter()
            backend.send_message("assign", '{"device_id": "new"}')
            send += time.perf_counter() - started
    return {
        "receive_of_ten_ms": round(1000 * receive / rounds, 2),
        "delete_ms": round(1000 * delete / (10 * rounds), 3),
        "send_ms": round(1000 * send / rounds, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    result: dict[str, Any] = {"messages": args.messages}
    moto_speedups.uninstall()
    sqs_long_poll.uninstall()
    result["moto"] = measure(args.messages, args.rounds)
    moto_speedups.install()
    sqs_long_poll.install()
    result["patched"] = measure(args.messages, args.rounds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
