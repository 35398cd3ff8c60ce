"""The circuit breaker: Particle saying the configuration is wrong pauses the whole stack, leaves the
devices as they are, shows in the summary, and a probe resumes by itself once it is fixed; a 404
about one device does not pause anything. Real handlers, moto, the simulator over HTTP."""

from __future__ import annotations

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from tests.support.functions import assign_function, sweep_queues_new_devices
from tests.support.invariants import check_invariants
from tokenflow.api_models import Summary
from tokenflow.fleet import Fleet
from tokenflow_cli import output
from tokenflow_local.lambda_runtime import invoke, poll_once, sqs_event

ARN = "arn:aws:sqs:us-east-1:123456789012:assign"


@pytest.fixture
def stack(monkeypatch, dynamodb):
    with assign_function(monkeypatch, dynamodb) as functions:
        yield functions


def receive_all(stack: dict) -> list[dict]:
    return (
        stack["sqs"]
        .receive_message(QueueUrl=stack["queue"], MaxNumberOfMessages=10, AttributeNames=["All"])
        .get("Messages", [])
    )


def wait_is_over(stack: dict, messages: list[dict]) -> None:
    """What the paused stack's visibility delay does after its 10 minutes: the messages return."""
    for m in messages:
        stack["sqs"].change_message_visibility(
            QueueUrl=stack["queue"], ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )


def summary(stack: dict) -> dict:
    answer = Fleet(stack["store"], low_stock_threshold=1).summary()
    Summary.model_validate(answer)  # the API's own answer model accepts it
    return answer


def test_a_401_pauses_the_stack_devices_stay_pending_and_a_probe_resumes_once_the_token_is_fixed(
    stack, capsys
):
    sim, store = stack["sim"], stack["store"]
    sweep_queues_new_devices(stack, 3)
    sim.set_faults(auth_failure=True)  # the stored access token is refused from now on
    before = sim.stats()["total"]

    messages = receive_all(stack)
    with pytest.raises(BatchProcessingError):  # every record failed: the batch goes back
        invoke("assign", sqs_event(ARN, messages))
    assert sim.stats()["total"] - before == 1  # one refused write, then nothing more
    paused = summary(stack)["paused"]
    assert "401" in paused["reason"] and paused["since"]
    assert "PAUSED" in output.summary(summary(stack)) and "401" in output.summary(summary(stack))
    assert '"AssignmentPaused"' in capsys.readouterr().out
    # Nothing failed: the one device that got its token keeps it (pending), the others never
    # started; all messages are kept out of sight for the pause's recheck delay.
    state = check_invariants(store)
    assert state["devices"] == {"pending": 1}
    assert state["tokens"] == {"assigned": 1, "available": 2}
    assert receive_all(stack) == []

    # The next batch, still broken: one probe call, no Ledger write, still paused.
    wait_is_over(stack, messages)
    messages = receive_all(stack)
    before = sim.stats()["total"]
    with pytest.raises(BatchProcessingError):
        invoke("assign", sqs_event(ARN, messages))
    assert sim.stats()["total"] - before == 1
    assert sim.stats()["ledger_writes"] == 0
    assert summary(stack)["paused"] == paused  # the first reason and time are kept

    # The operator fixes the token; the next batch's probe succeeds, clears the pause, serves all.
    sim.set_faults()
    wait_is_over(stack, messages)
    assert poll_once(stack["sqs"], stack["queue"], "assign") == 3
    assert summary(stack)["paused"] is None
    assert "PAUSED" not in output.summary(summary(stack))
    state = check_invariants(store)
    assert state["devices"] == {"delivered": 3}
    assert sim.stats()["ledger_writes"] == 3


def test_a_device_specific_404_fails_only_that_device_and_does_not_pause(stack):
    sim, store = stack["sim"], stack["store"]
    gone, *others = sweep_queues_new_devices(stack, 3)
    sim.remove_device(gone)  # left the product after it was queued: its Ledger write answers 404
    assert poll_once(stack["sqs"], stack["queue"], "assign") == 3
    assert summary(stack)["paused"] is None
    assert store.get_device(gone)["state"] == "failed"
    assert {store.get_device(d)["state"] for d in others} == {"delivered"}
    check_invariants(store)


def test_a_403_on_the_ledger_write_pauses_the_stack_without_failing_the_device(stack):
    sim, store = stack["sim"], stack["store"]
    sweep_queues_new_devices(stack, 2)
    sim.set_faults(error_rate=1.0, error_statuses=(403,))  # the token lost a scope
    with pytest.raises(BatchProcessingError):
        invoke("assign", sqs_event(ARN, receive_all(stack)))
    assert "403" in summary(stack)["paused"]["reason"]
    assert check_invariants(store)["devices"] == {"pending": 1}
