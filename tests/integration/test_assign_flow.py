"""sweep -> SQS -> assign, with the real handlers, moto and the Particle simulator over HTTP."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import boto3
import pytest
import requests
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from tests.conftest import TABLE
from tests.support import queues, seed
from tests.support.events import invoke as run_handler
from tests.support.events import load_event
from tests.support.factories import random_tokens
from tests.support.functions import configure_functions
from tests.support.invariants import check_invariants
from tokenflow import wiring
from tokenflow.assign_queue import AssignQueue
from tokenflow.particle import ParticleAuthError, ParticleClient, ParticleUnavailable
from tokenflow.store import Store
from tokenflow.sweep import Sweeper
from tokenflow.tokens import token_id
from tokenflow_local.lambda_runtime import invoke, load_handler, poll_once, sqs_event
from tokenflow_local.particle_sim import ParticleSimulator


@pytest.fixture
def sim():
    with ParticleSimulator(max_per_page=50) as simulator:
        yield simulator


@pytest.fixture
def stack(monkeypatch, dynamodb, sim):
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="assign-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName="assign",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    configure_functions(monkeypatch, sim, queue, MAX_DELIVERY_ATTEMPTS="5")
    return {"sqs": sqs, "queue": queue, "dlq": dlq, "store": Store(TABLE, dynamodb), "sim": sim}


def run_sweep() -> dict:
    return run_handler("sweep", load_event("sweep/scheduled.json"))  # as the schedule starts it


def drain(stack: dict, rounds: int = 200) -> int:
    handled = 0
    for _ in range(rounds):
        n = poll_once(stack["sqs"], stack["queue"], "assign")
        if n == 0:
            return handled
        handled += n
    raise AssertionError("the queue did not drain")


def queue_depth(stack: dict, url: str) -> int:
    return queues.queue_depth(stack["sqs"], url)


@pytest.mark.slow
def test_every_eligible_device_of_a_multi_page_product_gets_one_token_and_one_ledger_write(stack):
    sim, store = stack["sim"], stack["store"]
    ids = sim.add_devices(130, quarantined=2, denied=1)
    store.add_tokens(random_tokens(200), import_id="i", now="t")
    load_handler("assign", fresh=True)

    result = run_sweep()
    assert result["pages"] == 3
    assert result["queued"] == {"new": 127}
    assert drain(stack) == 127

    state = check_invariants(store)
    assert state["devices"] == {"delivered": 127}
    for device in ids[:3]:  # quarantined and denied: never a token
        assert sim.ledger_data(device) is None
        assert store.get_device(device) is None
    tokens_seen = set()
    for device in ids[3:]:
        data = sim.ledger_data(device)
        assert set(data) == {"blynk_token", "state"} and data["state"] == "active"
        assert token_id(data["blynk_token"]) == store.get_device(device)["token_id"]
        assert sim.ledger_writes(device) == 1
        tokens_seen.add(data["blynk_token"])
    assert len(tokens_seen) == 127
    assert store.get_device(ids[3])["name"] == "pump-0004"
    # The simulator's Ledger state is the table's, and nothing else: one instance per served device.
    ledger_state = {
        i["device_id"]: i["data"]
        for i in requests.get(f"{sim.url}/_sim/ledgers", timeout=5).json()["instances"]
    }
    assert {d: token_id(data["blynk_token"]) for d, data in ledger_state.items()} == {
        d: tid for d, tid in state["binding"].items()
    }
    assert sim.stats()["ledger_writes"] == 127


@pytest.mark.slow
def test_a_finished_fleet_costs_no_messages_and_no_writes(stack):
    sim, store = stack["sim"], stack["store"]
    sim.add_devices(60)
    store.add_tokens(random_tokens(60), import_id="i", now="t")
    load_handler("assign", fresh=True)
    run_sweep()
    drain(stack)
    writes_before = sim.stats()["ledger_writes"]
    result = run_sweep()
    assert result["queued"] == {}
    assert queue_depth(stack, stack["queue"]) == 0
    assert sim.stats()["ledger_writes"] == writes_before
    # The same through the service, counting: one device listing per page, reads only.
    particle = ParticleClient(sim.url, sim.access_token, sim.product)
    counted = Store(TABLE)
    sent = []

    class CountingQueue(AssignQueue):
        def send(self, requests):
            sent.extend(requests)
            return super().send(requests)

    Sweeper(counted, particle, CountingQueue(stack["queue"])).sweep(per_page=50)
    assert sent == [] and counted.calls.writes() == 0
    assert counted.calls.counts == {"BatchGetItem": 3}  # the counters, then one per page
    assert particle.requests_sent == 2  # 60 devices, 50 per page


def test_waiting_devices_are_served_when_tokens_arrive(stack):
    sim, store = stack["sim"], stack["store"]
    sim.add_devices(12)
    store.add_tokens(random_tokens(8), import_id="i", now="t")
    load_handler("assign", fresh=True)
    run_sweep()
    drain(stack)
    assert check_invariants(store)["devices"] == {"delivered": 8, "waiting": 4}
    assert run_sweep()["queued"] == {}  # nothing to give: waiting devices are not queued
    store.add_tokens(random_tokens(10, seed=1), import_id="j", now="t")
    assert run_sweep()["queued"] == {"waiting": 4}
    drain(stack)
    assert check_invariants(store)["devices"] == {"delivered": 12}


def test_duplicate_messages_in_one_batch_deliver_once(stack):
    sim, store = stack["sim"], stack["store"]
    [device] = sim.add_devices(1)
    store.add_tokens(random_tokens(3), import_id="i", now="t")
    load_handler("assign", fresh=True)
    body = json.dumps({"device_id": device, "seen_state": None, "reason": "new"})
    stack["sqs"].send_message_batch(
        QueueUrl=stack["queue"], Entries=[{"Id": str(n), "MessageBody": body} for n in range(3)]
    )
    drain(stack)
    assert sim.ledger_writes(device) == 1
    assert check_invariants(store)["tokens"] == {"delivered": 1, "available": 2}


@pytest.mark.slow
def test_under_twenty_percent_faults_every_device_is_delivered_without_duplicates(stack):
    sim, store = stack["sim"], stack["store"]
    ids = sim.add_devices(60)
    store.add_tokens(random_tokens(70), import_id="i", now="t")
    particle = ParticleClient(
        sim.url, sim.access_token, sim.product, timeout=(1.0, 0.3), backoff_base=0.01, max_retries=2
    )
    load_handler("assign", fresh=True)
    # The function's own graph, with a client that gives up sooner and more attempts per device.
    wiring.install(wiring.Services(replace(wiring.settings(), max_delivery_attempts=50), particle=particle))
    sim.set_faults(
        error_rate=0.15,
        error_statuses=(500, 502, 503, 429),
        timeout_rate=0.05,
        timeout_seconds=0.5,
        timeout_applied=0.5,  # half the lost answers belong to writes that landed
        seed=11,
    )
    sweeper = Sweeper(Store(TABLE), particle, AssignQueue(stack["queue"]), stale_after=0)
    for _ in range(30):
        # A sweep may fail on a faulty page once its retries are spent; the next one catches up.
        with contextlib.suppress(ParticleUnavailable):
            sweeper.sweep(per_page=50)
        drain(stack)
        if check_invariants(store)["devices"] == {"delivered": 60}:
            break
    sim.set_faults()
    state = check_invariants(store)
    assert state["devices"] == {"delivered": 60}
    tokens = [sim.ledger_data(d)["blynk_token"] for d in ids]
    assert len(set(tokens)) == 60
    assert all(token_id(sim.ledger_data(d)["blynk_token"]) == state["binding"][d] for d in ids)
    assert state["tokens"] == {"delivered": 60, "available": 10}
    assert sim.stats()["statuses"].get("500", 0) > 0 and sim.stats()["statuses"].get("429", 0) > 0
    assert queue_depth(stack, stack["dlq"]) == 0


def test_a_persistent_401_stops_the_batch_at_once_and_emits_the_alarm_metric(stack, capsys):
    sim, store = stack["sim"], stack["store"]
    sim.add_devices(10)
    store.add_tokens(random_tokens(10), import_id="i", now="t")
    load_handler("assign", fresh=True)
    run_sweep()
    sim.set_faults(auth_failure=True)
    before = sim.stats()["total"]
    messages = stack["sqs"].receive_message(
        QueueUrl=stack["queue"], MaxNumberOfMessages=10, AttributeNames=["All"]
    )["Messages"]
    # Every record failed: Powertools raises, and Lambda returns the whole batch to the queue.
    with pytest.raises(BatchProcessingError) as caught:
        invoke("assign", sqs_event("arn:aws:sqs:us-east-1:123456789012:assign", messages))
    assert len(caught.value.child_exceptions) == len(messages) == 10
    assert sim.stats()["total"] - before == 1  # one refused call, then nothing more
    assert '"ParticleAuthFailures"' in capsys.readouterr().out
    assert check_invariants(store)["tokens"] == {"assigned": 1, "available": 9}
    with pytest.raises(ParticleAuthError):
        run_sweep()
    assert '"ParticleAuthFailures"' in capsys.readouterr().out


def test_a_device_left_pending_by_a_dead_worker_gets_its_own_token_from_the_next_sweep(stack):
    sim, store = stack["sim"], stack["store"]
    [device] = sim.add_devices(1)
    store.add_tokens(random_tokens(3), import_id="i", now="t")
    [(tid, token)] = store.available_candidates(1)
    seed.claim(store, device, tid, token, "2026-01-01T00:00:00.000Z")  # then the worker died
    load_handler("assign", fresh=True)
    assert run_sweep()["queued"] == {"stale": 1}
    drain(stack)
    assert store.get_device(device)["state"] == "delivered"
    assert sim.ledger_data(device) == {"blynk_token": token, "state": "active"}
    assert check_invariants(store)["tokens"] == {"delivered": 1, "available": 2}


def test_a_malformed_device_id_never_costs_a_token(stack):
    store = stack["store"]
    store.add_tokens(random_tokens(2), import_id="i", now="t")
    load_handler("assign", fresh=True)
    for bad in ("E00FCE680004D20000000001", "zz0fce680004d20000000001"):
        body = json.dumps({"device_id": bad, "seen_state": None, "reason": "webhook"})
        stack["sqs"].send_message(QueueUrl=stack["queue"], MessageBody=body)
    assert drain(stack) == 2
    assert check_invariants(store)["tokens"] == {"available": 2}
    assert queue_depth(stack, stack["queue"]) == 0
