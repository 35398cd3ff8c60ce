"""Every metric the CloudWatch dashboard and the alarms of template.yaml name is one the functions
emit: same namespace, name, and dimensions (Powertools' ``service`` = the function's
POWERTOOLS_SERVICE_NAME). The real handlers run through the situations each widget is about (an
import with a rejected row and a broken file, Particle 429s and 5xx, a device Particle no longer
knows, a write deferred by a Retry-After, a refused access token that pauses the stack and a probe
that resumes it, a confirmation, a revoke whose Ledger clear fails, a Blynk verification), over moto
and the Particle and Blynk simulators; their EMF output is read back (tests/support/emf.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.conftest import BUCKET, TABLE
from tests.support import emf
from tests.support.events import invoke, load_event
from tests.support.factories import random_tokens
from tests.support.functions import assign_function
from tokenflow import wiring
from tokenflow.device_status import format_status_data
from tokenflow.ingest import utc_now
from tokenflow.particle import ParticleAuthError
from tokenflow.tokens import fingerprint
from tokenflow_local.blynk_sim import BlynkSimulator
from tokenflow_local.lambda_runtime import poll_once, s3_put_event
from tokenflow_local.resources import create_bucket, create_table
from tokenflow_local.sample_export import make_export, make_tokens
from tokenflow_local.stack import forget_clients

NAMESPACE = "Tokenflow"
WEBHOOK_SECRET = "webhook-secret-for-dashboard-tests"


def drain(stack: dict[str, Any], emitted: set[emf.MetricKey], rounds: int = 20) -> None:
    """Poll the assign queue as the event source does until it is empty."""
    for _ in range(rounds):
        with emf.emitted_by("assign", emitted):
            handled = poll_once(stack["sqs"], stack["queue"], "assign")
        if not handled:
            return
    raise AssertionError("the assign queue did not drain")


def sweep(emitted: set[emf.MetricKey]) -> Any:
    with emf.emitted_by("sweep", emitted):
        return invoke("sweep", load_event("sweep/scheduled.json"))


def webhook_event(device_id: str, held: str | None) -> dict[str, Any]:
    event = load_event("api/post-webhook-status.json")
    event["headers"]["x-tokenflow-secret"] = WEBHOOK_SECRET
    event["body"] = json.dumps(
        {
            "event": "tokenflow/status",
            "data": format_status_data(held, "1.0.0"),
            "device_id": device_id,
            "published_at": utc_now(),
        }
    )
    event["isBase64Encoded"] = False
    return event


def revoke_event(token_id: str) -> dict[str, Any]:
    event = load_event("api/post-revoke.json")
    path = f"/tokens/{token_id}/revoke"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"]["proxy"] = path.lstrip("/")
    return event


@pytest.fixture(scope="module")
def emitted() -> Iterator[set[emf.MetricKey]]:
    """Every metric the functions emit through the module's story (run once: it takes a few
    seconds, and both the dashboard and the alarms are checked against it)."""
    found: set[emf.MetricKey] = set()
    wiring.reset()
    with pytest.MonkeyPatch.context() as mp, mock_aws(), BlynkSimulator() as blynk:
        dynamodb = boto3.client("dynamodb")
        create_table(dynamodb, TABLE)
        s3 = boto3.client("s3")
        create_bucket(s3, BUCKET)
        boto3.client("ssm").put_parameter(
            Name="/tf/webhook", Value=WEBHOOK_SECRET, Type="SecureString", Overwrite=True
        )
        with assign_function(mp, dynamodb) as stack:
            for name, value in {
                "EXPORTS_BUCKET": BUCKET,
                "SWEEP_FUNCTION_NAME": "",  # ingest and the api start no sweep: the story does
                "WEBHOOK_SECRET_PARAM": "/tf/webhook",
                # One attempt per message: a failed Ledger write or clear is final at once.
                "MAX_DELIVERY_ATTEMPTS": "1",
                "BLYNK_URL_TEMPLATE": blynk.url_template,
                "BLYNK_REGION": "ny3",
                "BLYNK_RATE": "50",
            }.items():
                mp.setenv(name, value)
            forget_clients()
            story(stack, s3, blynk, found)
        forget_clients()
    wiring.reset()
    yield found


def story(stack: dict[str, Any], s3: Any, blynk: BlynkSimulator, emitted: set[emf.MetricKey]) -> None:
    sim, store = stack["sim"], stack["store"]

    # An import with one rejected row, and a file that is no export at all.
    tokens = make_tokens(4, seed=151)
    rows = [f"{t.token},{t.qr_token}" for t in tokens] + ["not-a-token,"]
    s3.put_object(
        Bucket=BUCKET, Key="incoming/t.csv", Body=("Device Token,QR Token\n" + "\n".join(rows)).encode()
    )
    s3.put_object(Bucket=BUCKET, Key="incoming/broken.zip", Body=make_export(tokens)[:300])
    with emf.emitted_by("ingest", emitted):
        [imported] = invoke("ingest", s3_put_event(BUCKET, "incoming/t.csv"))["imports"]
        [rejected] = invoke("ingest", s3_put_event(BUCKET, "incoming/broken.zip"))["imports"]
    assert (imported["tokens_added"], rejected["status"]) == (4, "rejected")

    # Four devices, a Particle that answers about a third of the requests 429 or 503 (retried by the client),
    # and an access token that expires (the sweep publishes the days it has left).
    devices = sim.add_devices(4)
    sim.token_info["expires_at"] = "2099-01-01T00:00:00.000Z"
    for function in ("sweep", "assign"):
        # Seeded per phase: the answers each function meets are the same on every run.
        sim.set_faults(error_rate=0.3, error_statuses=(429, 503), seed=1)
        if function == "sweep":
            assert sweep(emitted)["queued"] == {"new": 4}
        else:
            gone = devices[0]
            sim.remove_device(gone)  # left the product after it was queued: its Ledger write answers 404
            drain(stack, emitted)
        pushed_back = {e.name for e in emitted if e.dimensions == (("service", function),)}
        assert {"ParticleRateLimited", "ParticleServerErrors"} <= pushed_back, (
            f"{function}: pick another seed"
        )
    sim.set_faults()
    assert store.get_device(gone)["state"] == "failed"
    delivered = [d for d in devices[1:] if store.get_device(d)["state"] == "delivered"]
    assert len(delivered) == 3

    # Two more devices and no token left: they wait.
    waiting = sim.add_devices(2)
    assert sweep(emitted)["queued"] == {"new": 2}
    drain(stack, emitted)
    assert {store.get_device(d)["state"] for d in waiting} == {"waiting"}

    # Tokens for them, and an access token Particle refuses: the first write pauses the stack (the
    # batch goes back to the queue for the pause's recheck delay); a sweep sees the pause and the 401.
    store.add_tokens(random_tokens(2, seed=152), import_id="i", now=utc_now())
    assert sweep(emitted)["queued"] == {"waiting": 2}
    sim.set_faults(auth_failure=True)
    drain(stack, emitted)
    assert store.summary()["paused"] is not None
    with pytest.raises(ParticleAuthError):
        sweep(emitted)

    # Fixed: the next batch (a new device's) probes Particle, resumes, and is served.
    sim.set_faults()
    [later] = sim.add_devices(1)
    store.add_tokens(random_tokens(1, seed=153), import_id="i", now=utc_now())
    assert sweep(emitted)["queued"] == {"new": 1}
    drain(stack, emitted)
    assert store.summary()["paused"] is None
    assert store.get_device(later)["state"] == "delivered"

    # Particle busy for longer than the invocation has (a Retry-After of an hour): deferred.
    [busy] = sim.add_devices(1)
    store.add_tokens(random_tokens(1, seed=154), import_id="i", now=utc_now())
    assert sweep(emitted)["queued"] == {"new": 1}
    sim.set_faults(error_rate=1.0, error_statuses=(429,), retry_after=3600)
    drain(stack, emitted)
    assert store.get_device(busy)["state"] == "pending"
    sim.set_faults()
    forget_clients()  # the client keeps the hour's pause for its later calls; a new container has none

    # A device confirms the token its Ledger holds.
    confirmer = delivered[0]
    sim.settle()
    held = (sim.device_ledger(confirmer) or {}).get("blynk_token")
    assert held
    with emf.emitted_by("webhook", emitted):
        assert invoke("webhook", webhook_event(confirmer, fingerprint(held)))["statusCode"] == 200
    assert store.get_device(confirmer)["state"] == "confirmed"

    # Blynk verification of the confirmed device (its token has no value yet: not live).
    blynk.add_token(held, "ny3")
    with emf.emitted_by("verify", emitted):
        invoke("verify", load_event("verify/scheduled.json"))

    # A revoked token whose Ledger clear Particle refuses (400, the device's own problem): final.
    revoked = delivered[1]
    with emf.emitted_by("api", emitted):
        answer = invoke("api", revoke_event(store.get_device(revoked)["token_id"]))
    assert answer["statusCode"] in (200, 202), answer
    sim.set_faults(error_rate=1.0, error_statuses=(400,))
    with emf.emitted_by("assign", emitted):  # one receive: the message stays for the next one
        poll_once(stack["sqs"], stack["queue"], "assign")
    sim.set_faults()
    assert store.get_device(revoked)["state"] == "clearing"


def test_every_metric_on_the_dashboard_is_emitted_with_its_dimensions_or_names_a_template_resource(
    emitted,
):
    stack = emf.deployment()
    body = emf.dashboard_body(stack)
    named = emf.dashboard_metrics(body)
    assert {n.key.namespace for n in named} >= {NAMESPACE, "AWS/SQS", "AWS/Lambda"}
    assert emf.problems(named, emitted, NAMESPACE, stack) == []
    # The functions' namespace is the one the template gives them.
    assert {e.namespace for e in emitted} == {NAMESPACE}
    assert emf.function_environment("assign")["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    # Every widget reads the stack's own region.
    assert {w["properties"]["region"] for w in body["widgets"] if w["type"] == "metric"} == {
        emf.sam_template.REGION
    }


def test_the_dashboard_shows_every_alarm_of_the_template(emitted):
    stack = emf.deployment()
    [widget] = [w for w in emf.dashboard_body(stack)["widgets"] if w["type"] == "alarm"]
    alarms = {stack.arn(a): a for a in stack.logical_ids("AWS::CloudWatch::Alarm")}
    shown = widget["properties"]["alarms"]
    assert [a for a in shown if a not in alarms] == []  # each is one of the template's alarms
    missing = sorted(a for arn, a in alarms.items() if arn not in shown)
    assert missing == [], f"add these alarms to the dashboard's alarm widget: {missing}"


def test_every_metric_an_alarm_watches_is_emitted_with_its_dimensions_or_names_a_template_resource(
    emitted,
):
    stack = emf.deployment()
    named = emf.alarm_metrics(stack)
    assert len({n.where for n in named}) == len(stack.logical_ids("AWS::CloudWatch::Alarm"))
    assert emf.problems(named, emitted, NAMESPACE, stack) == []


def test_a_misspelled_metric_a_wrong_service_or_an_unknown_queue_is_reported(emitted):
    stack = emf.deployment()
    named = emf.dashboard_metrics(emf.dashboard_body(stack))
    [assigned] = [n for n in named if n.key.name == "TokensAssigned"]
    [dlq] = [n for n in named if n.key.namespace == "AWS/SQS" and "AssignDeadLetter" in str(n.key)]
    wrong = [
        replace(assigned, key=replace(assigned.key, name="TokensAsigned")),
        replace(assigned, key=replace(assigned.key, dimensions=(("service", "sweep"),))),
        replace(dlq, key=replace(dlq.key, dimensions=(("QueueName", "tokenflow-AssignQueueDLQ"),))),
        replace(dlq, key=replace(dlq.key, name="ApproximateNumberOfMessages")),
    ]
    reported = emf.problems(wrong, emitted, NAMESPACE, stack)
    assert len(reported) == 4, reported
    assert "TokensAsigned" in reported[0] and "no metric of that name" in reported[0]
    assert "service=assign" in reported[1]  # names where it is emitted
