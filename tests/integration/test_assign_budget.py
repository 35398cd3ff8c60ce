"""Assign within its time budget: a wait that outlives the invocation hands the device back to the
queue for that long instead of sleeping into a Lambda timeout; the local runtime stops an
invocation at its function's Timeout as Lambda does. Real handlers, moto, the simulator over HTTP."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support import iam_recorder
from tests.support.functions import assign_function, sweep_queues_new_devices
from tests.support.invariants import check_invariants
from tokenflow import aws
from tokenflow_local import lambda_runtime
from tokenflow_local.lambda_runtime import (
    FunctionTimeout,
    function_limits,
    invoke,
    poll_once,
)


@pytest.fixture
def stack(monkeypatch, dynamodb):
    with assign_function(monkeypatch, dynamodb) as functions:
        yield functions


def hidden_and_visible(stack: dict) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessages"]
    attrs = stack["sqs"].get_queue_attributes(QueueUrl=stack["queue"], AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


def test_the_local_runtime_gives_each_function_its_template_timeout_and_memory():
    limits = function_limits()
    assert limits["assign"] == (120.0, 512)
    assert limits["ingest"] == (900.0, 1769)  # sized for a 500,000-row export (template.yaml)
    assert limits["sweep"] == (300.0, 512)  # the Globals' MemorySize


def handed_back_delays() -> list[int]:
    """The VisibilityTimeout of every ChangeMessageVisibility the functions' SQS client sends."""
    delays: list[int] = []
    aws.client("sqs").meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibility",
        lambda params, **_: delays.append(params["VisibilityTimeout"]),
    )
    return delays


def test_a_retry_after_longer_than_the_time_left_hands_the_device_back_with_that_delay(stack):
    sim = stack["sim"]
    sweep_queues_new_devices(stack, 2)
    delays = handed_back_delays()
    sim.set_faults(error_rate=1.0, error_statuses=(429,), retry_after=600)
    before = sim.stats()["total"]
    started = time.monotonic()
    # retry_delay=0: a failed record the handler did not hand back would be visible again at once.
    assert poll_once(stack["sqs"], stack["queue"], "assign", retry_delay=0) == 2
    assert time.monotonic() - started < 10  # nothing slept through the 600 s
    # One 429 for the first device; the second is handed back without a request (the cloud's pause).
    assert sim.stats()["total"] - before == 1
    assert hidden_and_visible(stack) == (2, 0)
    assert delays == [600, 600]
    # Both keep the token they claimed: pending, not failed, and served once the cloud lets them.
    assert check_invariants(stack["store"])["devices"] == {"pending": 2}


def test_records_left_when_the_budget_is_spent_go_back_to_the_queue_unserved(stack):
    sim = stack["sim"]
    sweep_queues_new_devices(stack, 3)
    before = sim.stats()["total"]
    # A Timeout shorter than the margin kept for one request: no time to serve anything safely.
    assert poll_once(stack["sqs"], stack["queue"], "assign", retry_delay=0, timeout=5) == 3
    assert sim.stats()["total"] == before
    assert check_invariants(stack["store"])["devices"] == {}
    assert hidden_and_visible(stack) == (3, 0)  # handed back for a second, not the queue's 720 s
    time.sleep(1.2)
    assert hidden_and_visible(stack) == (0, 3)
    assert poll_once(stack["sqs"], stack["queue"], "assign") == 3
    assert check_invariants(stack["store"])["devices"] == {"delivered": 3}


SLOW_HANDLER = """
import time


def lambda_handler(event, context):
    time.sleep(1.5)
    return {"batchItemFailures": []}
"""


def test_a_handler_that_overruns_its_timeout_fails_locally_and_its_batch_returns(
    stack, tmp_path, monkeypatch
):
    # A function that takes longer than its Timeout (every real one budgets its time; this one is
    # the overrun the runtime must catch). Its module goes where the runtime looks for functions.
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "app.py").write_text(SLOW_HANDLER)
    monkeypatch.setattr(lambda_runtime, "FUNCTIONS", tmp_path)
    stack["sqs"].send_message(QueueUrl=stack["queue"], MessageBody="{}")
    started = time.monotonic()
    with pytest.raises(FunctionTimeout, match=r"Task timed out after 0\.50 seconds"):
        invoke("slow", {"Records": []}, timeout=0.5)
    assert time.monotonic() - started < 1.2  # failed at the Timeout, not when the handler ended
    # Through the SQS poller: the overrun fails the batch, which goes back to the queue whole (its
    # answer, which would have said all succeeded, comes too late to count).
    with iam_recorder.capture():  # a function of this test only: it has no role to check against
        assert poll_once(stack["sqs"], stack["queue"], "slow", timeout=0.5) == 1
    assert hidden_and_visible(stack) == (0, 1)
    # The abandoned invocations end by themselves; wait so they do not outlive the test.
    for thread in threading.enumerate():
        if thread.name == "invoke-slow":
            thread.join(10)
