"""The local stack's state survives a restart (tokenflow_local.persistence), and exactly-once holds
across it: a stack that assigned a fleet and stopped comes back with every import, token, device,
queued message and Ledger, and serving it again neither imports, assigns nor writes a Ledger again.
``fresh`` forgets the state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import eventually, local_stack, sim_api
from tokenflow.store import Store
from tokenflow_local import lambda_runtime
from tokenflow_local.aws_process import AwsProcess
from tokenflow_local.sample_export import make_export, make_tokens
from tokenflow_local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICES, QUARANTINED, TOKENS = 8, 1, 10
ELIGIBLE = DEVICES - QUARANTINED


def _stack(state_dir: Path, **options: Any) -> LocalStack:
    return local_stack(devices=DEVICES, quarantined=QUARANTINED, state_dir=state_dir, **options)


def _holders(stack: LocalStack) -> dict[str, str]:
    """device id -> the token id the table binds to it."""
    table = stack.client("dynamodb")
    held = {}
    for page in table.get_paginator("scan").paginate(TableName=stack.table):
        for item in page["Items"]:
            if item.get("kind", {}).get("S") == "device" and "token_id" in item:
                held[item["pk"]["S"]] = item["token_id"]["S"]
    return held


def _ledgers(stack: LocalStack) -> dict[str, tuple[Any, Any]]:
    """(device id) -> (the cloud instance's data, its updated_at): a rewrite changes updated_at."""
    assert stack.simulator is not None
    with stack.simulator.lock:
        return {key[2]: (dict(v["data"]), v["updated_at"]) for key, v in stack.simulator.ledgers.items()}


def _ledger_writes(stack: LocalStack) -> int:
    stats = sim_api(stack, "/stats")
    return sum(n for route, n in stats["requests"].items() if route.startswith("PUT"))


def _confirmed(stack: LocalStack) -> int:
    devices = Store(stack.table, stack.client("dynamodb")).summary()["devices"]
    assert int(devices.get("confirmed", 0)) == ELIGIBLE, devices
    return ELIGIBLE


def test_a_restarted_stack_keeps_its_state_and_assigns_nothing_twice(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with _stack(state_dir) as first:
        first.register_blynk_tokens(t.token for t in make_tokens(TOKENS, seed=3))
        first.client("s3").put_object(
            Bucket=first.bucket, Key="incoming/first.zip", Body=make_export(TOKENS, seed=3)
        )
        eventually(lambda: _confirmed(first), timeout=60)
        assert first.fleet is not None
        eventually(lambda: first.fleet.confirmed_count() == ELIGIBLE, timeout=30)
        holders, ledgers = _holders(first), _ledgers(first)
        summary_before = Store(first.table, first.client("dynamodb")).summary()
        objects_before = sorted(
            o["Key"] for o in first.client("s3").list_objects_v2(Bucket=first.bucket).get("Contents", [])
        )
        secret = first.webhook_secret
    assert len(holders) == ELIGIBLE and len(set(holders.values())) == ELIGIBLE

    with _stack(state_dir) as second:
        assert second.restored is not None and second.restored.devices == DEVICES
        assert second.webhook_secret == secret  # the SSM parameter and the devices agree again
        # Every device reports again (it read its Ledger copy from flash) and a sweep passes.
        assert second.fleet is not None
        eventually(lambda: second.fleet.confirmed_count() == ELIGIBLE, timeout=30)
        second.functions["sweep"].submit(lambda_runtime.schedule_event())
        eventually(lambda: second.idle(), timeout=30)
        assert _holders(second) == holders  # no device got a second token
        assert _ledgers(second) == ledgers  # no Ledger was written again (same data, same updated_at)
        assert _ledger_writes(second) == 0
        assert Store(second.table, second.client("dynamodb")).summary()["tokens"] == summary_before["tokens"]
        objects_after = sorted(
            o["Key"] for o in second.client("s3").list_objects_v2(Bucket=second.bucket).get("Contents", [])
        )
        assert objects_after == objects_before  # nothing imported again: no new report, nothing moved
        assert not second.errors

    with _stack(state_dir, fresh=True, simulate_devices=False) as clean:
        assert clean.restored is None
        assert _holders(clean) == {}
        assert clean.webhook_secret != secret


def _in_process_tables() -> list[str]:
    """The tables of this process's own moto (empty when the stack's moto runs elsewhere)."""
    from moto.dynamodb.models import dynamodb_backends

    from tokenflow_local.resources import ACCOUNT_ID, REGION

    return list(dynamodb_backends[ACCOUNT_ID][REGION].tables)


def test_moto_in_a_process_of_its_own_serves_the_stack_and_keeps_queued_messages(tmp_path: Path) -> None:
    """``make run``'s mode: the embedded AWS in a child process, concurrent webhook environments and
    devices that publish on their own. The upload's notification reaches
    ingest through the Lambda Invoke API, the fleet is confirmed, and a clean stop saves what that
    process holds (a dead-lettered message with its receive count included) for the next start."""
    state_dir = tmp_path / "state"
    with _stack(state_dir, aws_process=True, concurrent=True) as first:
        assert isinstance(first.moto, AwsProcess)
        assert first.table not in _in_process_tables()  # the table lives in the other process
        first.register_blynk_tokens(t.token for t in make_tokens(TOKENS, seed=4))
        first.client("s3").put_object(
            Bucket=first.bucket, Key="incoming/first.zip", Body=make_export(TOKENS, seed=4)
        )
        eventually(lambda: _confirmed(first), timeout=60)
        holders, ledgers = _holders(first), _ledgers(first)
        sqs, dlq = first.client("sqs"), first.queues["AssignDeadLetterQueue"]
        sqs.send_message(QueueUrl=dlq, MessageBody="a message nobody handled")
        received = sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0)["Messages"]
        assert [m["Body"] for m in received] == ["a message nobody handled"]

    with _stack(state_dir, aws_process=True, concurrent=True) as second:
        assert second.restored is not None and second.restored.messages == 1
        assert second.fleet is not None
        eventually(lambda: second.fleet.confirmed_count() == ELIGIBLE, timeout=30)
        assert _holders(second) == holders
        assert _ledgers(second) == ledgers
        assert _ledger_writes(second) == 0
        again = second.client("sqs").receive_message(
            QueueUrl=second.queues["AssignDeadLetterQueue"], AttributeNames=["ApproximateReceiveCount"]
        )["Messages"]
        assert [(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in again] == [
            ("a message nobody handled", "2")
        ]
        assert not second.errors
