"""New devices are queued by their own status report, after one Particle lookup, and every device of
work is one message: a device already waiting in the assign queue is not queued again until a worker
has handled it. The real sweep, webhook and assign handlers, moto and the Particle simulator over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from tests.conftest import TABLE
from tests.support.events import load_event
from tests.support.factories import TableClock, random_tokens
from tests.support.functions import configure_functions
from tokenflow import wiring
from tokenflow.particle import ParticleClient
from tokenflow.store import Store
from tokenflow.store.queue_marks import QueueMarks
from tokenflow_local import lambda_runtime
from tokenflow_local.particle_sim import ParticleSimulator

SECRET = "webhook-secret-for-tests"
START = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.fixture
def sim():
    with ParticleSimulator(max_per_page=50) as simulator:
        yield simulator


@pytest.fixture
def stack(monkeypatch, dynamodb, sim):
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="assign", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    boto3.client("ssm").put_parameter(Name="/tf/webhook", Value=SECRET, Type="SecureString")
    configure_functions(monkeypatch, sim, queue, WEBHOOK_SECRET_PARAM="/tf/webhook", SWEEP_FUNCTION_NAME="")
    clock = TableClock(START)
    particle = ParticleClient(sim.url, sim.access_token, sim.product)
    wiring.install(wiring.Services(clock=clock, particle=particle))
    return {"sqs": sqs, "queue": queue, "sim": sim, "clock": clock, "particle": particle}


def report(device_id: str) -> tuple[int, dict]:
    """A status report of a device that holds no token, through the webhook as API Gateway calls it."""
    event = load_event("api/post-webhook-status.json")
    event["headers"]["x-tokenflow-secret"] = SECRET
    event["body"] = json.dumps(
        {
            "event": "tokenflow/status",
            "data": "v=1;token=none;fw=1.0.0;synced=1",
            "device_id": device_id,
            "published_at": "2026-11-29T10:00:00.000Z",
        }
    )
    event["isBase64Encoded"] = False
    handler = lambda_runtime.load_handler("webhook")
    answer = handler.lambda_handler(event, lambda_runtime.LambdaContext(function_name="webhook"))
    return answer["statusCode"], json.loads(answer["body"])


def sweep() -> dict:
    handler = lambda_runtime.load_handler("sweep")
    return handler.lambda_handler(
        load_event("sweep/scheduled.json"), lambda_runtime.LambdaContext(function_name="sweep")
    )


def messages(stack: dict) -> list[dict]:
    """Every message body now in the assign queue; they stay (made visible again)."""
    sqs, url = stack["sqs"], stack["queue"]
    found: list[dict] = []
    while answer := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        found += answer
    for m in found:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in found]


def drain(stack: dict) -> None:
    while lambda_runtime.poll_once(stack["sqs"], stack["queue"], "assign"):
        pass


def test_a_report_from_a_new_device_of_the_product_queues_it_after_one_lookup(stack):
    [device] = stack["sim"].add_devices(1)

    status, answer = report(device)

    assert status == 200 and answer["action"] == "queued"
    assert stack["particle"].requests_sent == 1  # the product lookup; no listing, no sweep
    [message] = messages(stack)
    assert (message["device_id"], message["seen_state"], message["reason"]) == (device, None, "new")
    assert message["platform_id"] == 32 and message["queued_at"] == stack["clock"]()
    # It reports again before a worker got to it: still one message, and no second lookup (the
    # firmware repeats its report while it has no token, for as long as the queue takes).
    stack["clock"].now = START + timedelta(hours=2)
    assert report(device)[1]["action"] == "queued"
    assert [m["device_id"] for m in messages(stack)] == [device]
    assert stack["particle"].requests_sent == 1


def test_reports_from_quarantined_denied_and_foreign_devices_queue_nothing(stack):
    quarantined, denied = stack["sim"].add_devices(2, quarantined=1, denied=1)
    foreign = "e00fce68000000000000abcd"  # not in the product: the lookup answers 404

    for device in (quarantined, denied, foreign):
        status, answer = report(device)
        assert status == 200 and answer["action"] == "ignored", device

    assert stack["particle"].requests_sent == 3
    assert messages(stack) == []
    assert Store(TABLE).get_devices([quarantined, denied, foreign]) == {}


def test_a_device_queued_twice_in_a_row_is_sent_once_until_a_worker_handles_it(stack):
    ids = stack["sim"].add_devices(4)

    assert sweep()["queued"] == {"new": 4}
    again = sweep()  # the same devices still wait in the queue
    assert again["queued"] == {} and again["already_queued"] == 4
    assert sorted(m["device_id"] for m in messages(stack)) == sorted(ids)

    drain(stack)  # no tokens yet: every device is recorded waiting, and its mark is removed
    marks = QueueMarks(Store(TABLE).db)
    assert [marks.queued_at(d) for d in ids] == [None] * 4
    Store(TABLE).add_tokens(random_tokens(4), import_id="i", now="t")
    assert sweep()["queued"] == {"waiting": 4}  # queued again at once, once
    assert sweep()["queued"] == {}
    assert len(messages(stack)) == 4

    # A message that was lost (or went to the dead-letter queue) does not hold its device forever:
    # past the window its mark is taken for stale and the device is queued again.
    stack["clock"].now = START + timedelta(seconds=901)
    assert sweep()["queued"] == {"waiting": 4}
    assert len(messages(stack)) == 8
