"""The resumable sweep: a pass over the product's devices in pages, under a lease, from a cursor in the
table, within the invocation's remaining time; with moto and the Particle simulator over HTTP.

The sweep handler runs as Lambda runs it, with a context whose remaining time drops by a fixed step
at each question, so where a run stops is exact, not a matter of timing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from tests.conftest import TABLE
from tests.support import queues
from tests.support.events import load_event
from tests.support.factories import Countdown, TableClock
from tests.support.functions import configure_functions
from tokenflow import wiring
from tokenflow.particle import DevicePage, ParticleClient, ParticleUnavailable
from tokenflow.store import Store
from tokenflow.store.sweep_state import SweepState
from tokenflow_local import lambda_runtime
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.particle_sim_cloud import ROUTE_DEVICES

PER_PAGE = 10
START = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.fixture
def sim():
    with ParticleSimulator(max_per_page=PER_PAGE) as simulator:
        yield simulator


@pytest.fixture
def stack(monkeypatch, dynamodb, sim):
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="assign")["QueueUrl"]
    configure_functions(monkeypatch, sim, queue)
    clock = TableClock(START)
    particle = ParticleClient(sim.url, sim.access_token, sim.product)
    graph = wiring.install(wiring.Services(clock=clock, particle=particle))
    # 100 s of budget, 30 s less per question, 10 s kept back: two pages per run.
    graph.sweeper().safety_margin_ms = 10_000
    return {"sqs": sqs, "queue": queue, "sim": sim, "clock": clock, "particle": particle, "graph": graph}


def run_sweep_handler(context: lambda_runtime.LambdaContext | None = None) -> dict:
    handler = lambda_runtime.load_handler("sweep")
    return handler.lambda_handler(
        load_event("sweep/scheduled.json"),
        context or Countdown(function_name="sweep", left_ms=100_000, step_ms=30_000),
    )


def queued_device_ids(stack: dict) -> list[str]:
    """Every message now in the assign queue (received, then made visible again), by device id."""
    sqs, url = stack["sqs"], stack["queue"]
    bodies: list[dict] = []
    handles: list[str] = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
        messages = answer.get("Messages", [])
        if not messages:
            break
        bodies += [json.loads(m["Body"]) for m in messages]
        handles += [m["ReceiptHandle"] for m in messages]
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return [b["device_id"] for b in bodies]


def list_requests(stack: dict) -> int:
    """The product device list requests the simulator answered."""
    return stack["sim"].request_count("GET", ROUTE_DEVICES)


def state() -> dict:
    return SweepState(Store(TABLE).db).get() or {}


def test_a_run_out_of_time_stops_at_its_cursor_and_the_next_run_continues_the_pass(stack):
    ids = stack["sim"].add_devices(25)  # three pages of ten
    particle = stack["particle"]

    first = run_sweep_handler()
    assert (first["stopped"], first["first_page"], first["pages"], first["next_page"]) == ("budget", 1, 2, 3)
    assert first["queued"] == {"new": 20}
    cursor = state()
    assert (cursor["next_page"], cursor["pages_done"], cursor["pass_id"]) == (3, 2, first["pass_id"])
    assert "lease_owner" not in cursor  # given back before the run's end
    assert list_requests(stack) == 2

    second = run_sweep_handler()
    assert (second["stopped"], second["first_page"], second["pages"]) == ("finished", 3, 1)
    assert second["pass_id"] == first["pass_id"] and second["next_page"] is None
    assert second["queued"] == {"new": 5}
    # One list request per page for the whole pass, however many runs it took, and one question
    # about the access token's expiry when the pass ends.
    assert list_requests(stack) == 3
    assert particle.requests_sent == 4
    assert sorted(queued_device_ids(stack)) == sorted(ids)
    finished = state()
    assert "pass_id" not in finished and finished["last_pass_pages"] == 3
    assert finished["last_pass_id"] == first["pass_id"] and finished["last_pass_queued"] == 25

    # The next run starts a new pass at page 1; every device still waits in the queue: no message.
    third = run_sweep_handler(lambda_runtime.LambdaContext(function_name="sweep"))
    assert (third["first_page"], third["stopped"], third["pages"]) == (1, "finished", 3)
    assert third["pass_id"] != first["pass_id"]
    assert third["queued"] == {} and third["already_queued"] == 25
    assert len(queued_device_ids(stack)) == 25


def test_a_sweep_that_finds_the_lease_held_lists_nothing_and_queues_nothing(stack):
    stack["sim"].add_devices(5)
    now_ms = int(START.timestamp() * 1000)
    assert SweepState(Store(TABLE).db).acquire("another-run", now_ms, 60_000, "pass-a", "t") is not None

    result = run_sweep_handler()

    assert (result["stopped"], result["pages"], result["pass_id"]) == ("lease-held", 0, None)
    assert stack["particle"].requests_sent == 0
    assert queues.queue_depth(stack["sqs"], stack["queue"]) == 0
    assert state()["lease_owner"] == "another-run"  # not taken, not released


def test_an_expired_lease_is_taken_over_and_the_pass_continues_from_its_cursor(stack):
    ids = stack["sim"].add_devices(25)
    lease = SweepState(Store(TABLE).db)
    now_ms = int(START.timestamp() * 1000)
    # A run that listed page 1 and died (a Lambda timeout) without giving its lease back.
    cursor = lease.acquire("dead-run", now_ms, 60_000, "pass-a", "t")
    assert cursor is not None and cursor.next_page == 1
    assert lease.advance("dead-run", "pass-a", 2, PER_PAGE, 0)

    stack["clock"].now = START + timedelta(seconds=30)  # still its lease
    assert run_sweep_handler()["stopped"] == "lease-held"

    stack["clock"].now = START + timedelta(seconds=61)  # expired
    result = run_sweep_handler(lambda_runtime.LambdaContext(function_name="sweep"))

    assert (result["pass_id"], result["first_page"], result["pages"], result["stopped"]) == (
        "pass-a",
        2,
        2,
        "finished",
    )
    assert list_requests(stack) == 2  # pages 2 and 3; page 1 is not listed again
    assert sorted(queued_device_ids(stack)) == sorted(ids[PER_PAGE:])
    assert state()["last_pass_pages"] == 3


class FailsOnce:
    """The product's listing through the real client, failing once when page ``fail_at`` is asked for."""

    def __init__(self, particle: ParticleClient, fail_at: int) -> None:
        self.particle = particle
        self.fail_at = fail_at
        self.starts: list[int] = []

    def token_expires_at(self) -> str | None:
        return self.particle.token_expires_at()

    def iter_device_pages(self, per_page: int = 100, start: int = 1) -> Iterator[DevicePage]:
        self.starts.append(start)
        for page in self.particle.iter_device_pages(per_page, start):
            yield page
            if page.page + 1 == self.fail_at and self.fail_at:
                self.fail_at = 0
                raise ParticleUnavailable("GET /v1/products/{product}/devices answered 503", 503)


def test_a_failed_run_is_continued_from_its_cursor_not_from_page_one(stack):
    ids = stack["sim"].add_devices(25)
    sweeper = stack["graph"].sweeper()
    lister = FailsOnce(stack["particle"], fail_at=2)
    sweeper.particle = lister

    with pytest.raises(ParticleUnavailable):
        sweeper.resume(lambda_runtime.LambdaContext(function_name="sweep"), per_page=PER_PAGE)
    failed = state()
    assert failed["next_page"] == 2 and "lease_owner" not in failed  # the lease is given back at once

    result = sweeper.resume(lambda_runtime.LambdaContext(function_name="sweep"), per_page=PER_PAGE)

    assert lister.starts == [1, 2]
    assert result.first_page == 2 and result.pass_id == failed["pass_id"] and result.stopped == "finished"
    assert list_requests(stack) == 3  # pages 1, 2, 3: each once
    assert sorted(queued_device_ids(stack)) == sorted(ids)


def test_a_finished_pass_publishes_the_days_the_access_token_has_left(stack, capsys):
    stack["sim"].add_devices(5)
    stack["sim"].token_info["expires_at"] = "2026-12-09T00:00:00.000Z"
    stack["clock"].now = datetime(2026, 11, 29, tzinfo=UTC)
    assert run_sweep_handler()["stopped"] == "finished"
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m["ParticleTokenDaysLeft"] for m in emitted if "ParticleTokenDaysLeft" in m] == [[10.0]]
    # a token that never expires (a product API user's) publishes nothing
    stack["sim"].token_info["expires_at"] = None
    assert run_sweep_handler(lambda_runtime.LambdaContext(function_name="sweep"))["stopped"] == "finished"
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert not [m for m in emitted if "ParticleTokenDaysLeft" in m]
