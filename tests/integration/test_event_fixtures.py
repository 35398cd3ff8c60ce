"""The sample events under events/: every function of template.yaml has one, each is shaped as AWS
delivers it, and each is loaded by a test that runs it through the function's real handler, so the
files ``sam local invoke <Function> -e events/...`` takes are the ones the tests prove (events/README.md).

Shapes, per AWS's own descriptions:
- S3 event notifications (``Records[].s3``, URL-encoded keys):
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
- SQS records as Lambda's poller delivers them (``md5OfBody`` is the MD5 of the body):
  https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html
- EventBridge Scheduler: with no ``Input`` on the target it "delivers a default notification"
  (https://docs.aws.amazon.com/scheduler/latest/APIReference/API_Target.html), an event of source
  ``aws.scheduler`` and detail-type ``Scheduled Event`` naming the schedule in ``resources``;
  the sweep's other trigger is ingest's own asynchronous invoke (tokenflow.triggers);
- API Gateway HTTP API payload format 2.0 (``version``, ``routeKey``, ``rawPath``, ``requestContext.http``):
  https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import pytest

from tests.conftest import TABLE
from tests.support.events import EVENTS, invoke, load_event
from tests.support.factories import device_id, random_tokens
from tests.support.functions import configure_functions
from tests.support.queues import queued
from tokenflow.store import Store
from tokenflow_local import resources
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.stack import forget_clients

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted(p.relative_to(EVENTS).as_posix() for p in EVENTS.rglob("*.json"))
FUNCTIONS = {resources.function_dir(f): f for f in resources.resources_of_type("AWS::Serverless::Function")}


def http_routes() -> dict[str, str]:
    """routeKey -> the function directory whose HttpApi event declares that route."""
    return {
        f"{event['Method']} {event['Path']}": function
        for function, logical_id in FUNCTIONS.items()
        for event in resources.function_events(logical_id, "HttpApi")
    }


def function_of(fixture: str) -> str:
    """The function a fixture is for: by its route under events/api/, else by its directory."""
    folder = fixture.split("/", 1)[0]
    if folder == "api":
        return http_routes()[load_event(fixture)["routeKey"]]
    return folder


def of_kind(folder: str) -> list[str]:
    return [f for f in FIXTURES if f.startswith(f"{folder}/")]


# ---- which fixtures there are ----------------------------------------------------------------------


def test_every_function_of_the_template_has_an_event_fixture():
    covered = {function_of(f) for f in FIXTURES}
    assert set(FUNCTIONS) == {"ingest", "sweep", "assign", "api", "webhook", "verify"}
    assert covered == set(FUNCTIONS), f"functions without a sample event: {set(FUNCTIONS) - covered}"


def test_every_fixture_is_loaded_by_a_test():
    # By name: the shape checks below read every fixture, which does not make one used.
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py"))
    unused = [f for f in FIXTURES if Path(f).name not in sources]
    assert not unused, f"fixtures no test loads (use or delete them): {unused}"


# ---- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", of_kind("api"))
def test_http_fixtures_are_payload_2_0_for_a_route_of_the_template(fixture):
    event = load_event(fixture)
    assert event["version"] == "2.0"
    assert event["routeKey"] in http_routes()
    http = event["requestContext"]["http"]
    assert http["path"] == event["rawPath"] and http["method"] in {"GET", "POST"}
    assert event["requestContext"]["routeKey"] == event["routeKey"]
    assert event["requestContext"]["stage"] == "$default"
    assert all(name == name.lower() for name in event["headers"])  # HTTP APIs lower-case header names
    if event["routeKey"] == "ANY /{proxy+}":
        assert event["pathParameters"] == {"proxy": event["rawPath"].lstrip("/")}
        assert "iam" in event["requestContext"]["authorizer"]  # the operator routes are IAM-signed
    assert isinstance(event["isBase64Encoded"], bool)


@pytest.mark.parametrize("fixture", of_kind("ingest"))
def test_s3_fixtures_are_object_created_notifications_the_templates_filters_pass(fixture):
    [record] = load_event(fixture)["Records"]
    assert record["eventSource"] == "aws:s3" and record["eventVersion"] == "2.1"
    assert record["eventName"].startswith("ObjectCreated:")
    bucket = record["s3"]["bucket"]
    assert bucket["arn"] == f"arn:aws:s3:::{bucket['name']}"
    key = unquote_plus(record["s3"]["object"]["key"])  # S3 URL-encodes the key, spaces as "+"
    assert " " not in record["s3"]["object"]["key"]
    filters = resources.s3_key_filters("IngestFunction")
    assert any(key.startswith(prefix) and key.endswith(suffix) for prefix, suffix in filters), key


@pytest.mark.parametrize("fixture", of_kind("assign"))
def test_sqs_fixtures_are_records_as_lambdas_poller_delivers_them(fixture):
    for record in load_event(fixture)["Records"]:
        assert record["eventSource"] == "aws:sqs" and record["awsRegion"] == "us-east-1"
        assert re.fullmatch(r"arn:aws:sqs:us-east-1:\d{12}:[\w-]+", record["eventSourceARN"])
        # SQS computes it as a digest of the body (not a security use)
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode(), usedforsecurity=False).hexdigest()
        assert int(record["attributes"]["ApproximateReceiveCount"]) >= 1
        assert int(record["attributes"]["ApproximateFirstReceiveTimestamp"]) >= int(
            record["attributes"]["SentTimestamp"]
        )


def test_the_schedule_fixture_is_the_schedulers_default_notification():
    event = load_event("sweep/scheduled.json")
    assert (event["source"], event["detail-type"]) == ("aws.scheduler", "Scheduled Event")
    assert re.fullmatch(r"arn:aws:scheduler:us-east-1:\d{12}:schedule/default/[\w-]+", event["resources"][0])
    assert resources.function_events("SweepFunction", "ScheduleV2")  # the template's trigger
    verify = load_event("verify/scheduled.json")  # the verification pass: the same kind of schedule
    assert (verify["source"], verify["detail-type"]) == ("aws.scheduler", "Scheduled Event")
    assert resources.function_events("VerifyFunction", "ScheduleV2")
    # ingest's own invoke (tokenflow.triggers): {"source": "tokenflow", "reason": ...}
    assert set(load_event("sweep/after-import.json")) == {"source", "reason"}


# ---- through the real handlers ---------------------------------------------------------------------


@pytest.fixture
def sim():
    """Product 0: its devices are named as ``device_id(n)`` names them, as the fixtures do."""
    with ParticleSimulator(product_id=0) as simulator:
        yield simulator


@pytest.fixture
def functions(monkeypatch, dynamodb, sim):
    """What sweep and assign need: the table with 10 tokens, the assign queue, the Particle token."""
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="tokenflow-assign")["QueueUrl"]
    configure_functions(monkeypatch, sim, queue)
    store = Store(TABLE, dynamodb)
    store.add_tokens(random_tokens(10), import_id="i", now="2026-11-22T10:00:00.000Z")
    yield {"sqs": sqs, "queue": queue, "store": store, "sim": sim}
    forget_clients()


@pytest.mark.parametrize("fixture", ["sweep/scheduled.json", "sweep/after-import.json"])
def test_the_sweep_queues_every_eligible_device_on_either_of_its_events(functions, fixture):
    functions["sim"].add_devices(4, quarantined=1)
    result = invoke("sweep", load_event(fixture))
    assert result["devices"] == 4 and result["queued"] == {"new": 3}
    devices = sorted(body["device_id"] for body in queued(functions["sqs"], functions["queue"]))
    assert devices == [device_id(2), device_id(3), device_id(4)]  # device 1 is quarantined


def test_the_assign_batch_gives_each_device_one_token_even_when_it_is_queued_twice(functions):
    sim, store = functions["sim"], functions["store"]
    sim.add_devices(2)
    event = load_event("assign/sqs-batch.json")
    assert [json.loads(r["body"])["device_id"] for r in event["Records"]] == [
        device_id(1),
        device_id(2),
        device_id(1),
    ]

    assert invoke("assign", event) == {"batchItemFailures": []}
    held = {}
    for n in (1, 2):
        device = store.get_device(device_id(n))
        assert device["state"] == "delivered", device
        assert sim.ledger_writes(device_id(n)) == 1
        held[n] = sim.ledger_data(device_id(n))["blynk_token"]
    assert held[1] != held[2]
    assert store.get_device(device_id(1))["name"] == "pump-1"  # the message's Particle fields are kept


def test_the_assign_batch_drops_a_malformed_message_and_serves_the_rest(functions):
    sim, store = functions["sim"], functions["store"]
    sim.add_devices(5)
    event = load_event("assign/sqs-malformed.json")
    assert "device_id" not in json.loads(event["Records"][0]["body"])

    # Dropped, not failed: a malformed message can never succeed and would only loop to the DLQ.
    assert invoke("assign", event) == {"batchItemFailures": []}
    assert store.get_device(device_id(5))["state"] == "delivered"
    assert sim.ledger_writes(device_id(5)) == 1
    assert [sim.ledger_writes(device_id(n)) for n in (1, 2, 3, 4)] == [0, 0, 0, 0]
