"""The sweep's pace: a full pass over the product at most once per schedule period (an import asks for
one at once), and a run that ends well before its timeout. The sweep handler as Lambda runs it,
with moto and the Particle simulator over HTTP, and a table clock the tests move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from tests.conftest import TABLE
from tests.support.events import load_event
from tests.support.factories import Countdown, TableClock
from tests.support.functions import configure_functions
from tokenflow import wiring
from tokenflow.particle import ParticleClient
from tokenflow.settings import pass_interval
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
    configure_functions(monkeypatch, sim, queue, SWEEP_SCHEDULE="rate(10 minutes)")
    clock = TableClock(START)
    particle = ParticleClient(sim.url, sim.access_token, sim.product)
    graph = wiring.install(wiring.Services(clock=clock, particle=particle))
    return {"sim": sim, "clock": clock, "graph": graph, "sqs": sqs, "queue": queue}


def run(event: str = "sweep/scheduled.json", context: lambda_runtime.LambdaContext | None = None) -> dict:
    handler = lambda_runtime.load_handler("sweep")
    return handler.lambda_handler(
        load_event(event), context or lambda_runtime.LambdaContext(function_name="sweep")
    )


def listed(stack: dict) -> int:
    return stack["sim"].request_count("GET", ROUTE_DEVICES)


def slow_limit_with_25_queued(monkeypatch, sim) -> tuple:
    """Particle's limit at 10 requests per 5 minutes (30 s a message), a 5-minute schedule, and a
    first pass that queued 25 devices: the SQS client, the assign queue's URL, the table clock."""
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="assign")["QueueUrl"]
    configure_functions(monkeypatch, sim, queue, SWEEP_SCHEDULE="rate(5 minutes)", PARTICLE_RATE_LIMIT="10")
    clock = TableClock(START)
    wiring.install(
        wiring.Services(clock=clock, particle=ParticleClient(sim.url, sim.access_token, sim.product))
    )
    sim.add_devices(25)
    assert run()["queued"] == {"new": 25}
    return sqs, queue, clock


def test_the_pass_interval_is_the_schedule_period_less_its_minute_of_jitter():
    assert pass_interval("rate(10 minutes)") == 540
    assert pass_interval("rate(1 hour)") == 3540
    assert pass_interval("rate(1 minute)") == 30
    assert pass_interval("rate(5 seconds)") == 2.5  # the local stack's tick
    assert pass_interval("cron(0 * * * ? *)") == 0 and pass_interval("") == 0


def test_a_new_pass_starts_at_most_once_per_schedule_period(stack):
    stack["sim"].add_devices(25)
    first = run()
    assert (first["stopped"], first["pages"]) == ("finished", 3)
    assert listed(stack) == 3

    # Ticks (and sweeps started by status reports) before the period is over list nothing.
    for seconds in (0, 5, 300, 539):
        stack["clock"].now = START + timedelta(seconds=seconds)
        rested = run()
        assert (rested["stopped"], rested["pages"], rested["pass_id"]) == ("rested", 0, None)
    assert listed(stack) == 3
    assert "lease_owner" not in (SweepState(Store(TABLE).db).get() or {})  # given back at once

    stack["sqs"].purge_queue(QueueUrl=stack["queue"])  # the workers served the first pass's devices
    stack["clock"].now = START + timedelta(seconds=541)
    second = run()
    assert (second["stopped"], second["first_page"], second["pages"]) == ("finished", 1, 3)
    assert second["pass_id"] != first["pass_id"]
    assert listed(stack) == 6


def test_an_import_starts_a_new_pass_at_once_or_right_after_the_one_under_way(stack):
    stack["sim"].add_devices(25)
    assert run()["stopped"] == "finished"

    # Tokens were added: waiting devices on every page may be served now, whatever the pace. (This
    # run has time for two pages.)
    stack["clock"].now = START + timedelta(seconds=5)
    partial = run(
        "sweep/after-import.json", Countdown(function_name="sweep", left_ms=100_000, step_ms=30_000)
    )
    assert (partial["stopped"], partial["first_page"], partial["next_page"]) == ("budget", 1, 3)
    # Another import while that pass is under way: this run continues the pass from its cursor,
    # and the pass after it starts at the next tick instead of a period later.
    continued = run("sweep/after-import.json")
    assert (continued["stopped"], continued["first_page"]) == ("finished", 3)
    stack["clock"].now = START + timedelta(seconds=10)
    assert run()["first_page"] == 1
    assert listed(stack) == 3 + 2 + 1 + 3
    assert run()["stopped"] == "rested"  # the request was used up by that pass


def test_a_run_uses_at_most_sixty_percent_of_its_time(stack):
    stack["sim"].add_devices(150)  # 15 pages
    # 300 s at the start, 20 s less per question: it stops while 120 s (40 %) are still left,
    # where the margin alone (30 s and its longest page) would have let it run to 40 s.
    result = run(context=Countdown(function_name="sweep"))
    assert (result["stopped"], result["pages"], result["next_page"]) == ("budget", 9, 10)
    rest = run(context=Countdown(function_name="sweep"))
    assert (rest["stopped"], rest["first_page"], rest["pages"]) == ("finished", 10, 6)


def test_a_new_pass_waits_while_the_last_ones_devices_are_still_queued(stack):
    stack["sim"].add_devices(25)
    assert run()["queued"] == {"new": 25}  # 25 messages wait in the assign queue

    # A period later the devices are still being served: listing the fleet again would only find
    # them queued already, so the pass waits (for up to three periods).
    for seconds in (541, 1000, 1619):
        stack["clock"].now = START + timedelta(seconds=seconds)
        assert run()["stopped"] == "rested"
    assert listed(stack) == 3
    stack["clock"].now = START + timedelta(seconds=1621)  # a queue that never empties holds no longer
    assert (run()["stopped"], listed(stack)) == ("finished", 6)

    stack["sqs"].purge_queue(QueueUrl=stack["queue"])  # the queue emptied: the next period's pass runs
    stack["clock"].now = START + timedelta(seconds=1621 + 541)
    assert (run()["stopped"], listed(stack)) == ("finished", 9)


def test_a_deep_backlog_holds_the_next_pass_and_the_queued_marks_for_as_long_as_it_takes_to_serve(
    monkeypatch, dynamodb, sim
):
    """At 100,000 devices the last message of a first pass waits about 53 minutes at Particle's limit:
    neither a new pass after three periods nor a mark taken for lost after 15 minutes may queue the
    waiting devices again. Here the limit is 10 requests per 5 minutes, so 25 waiting messages take
    at least 750 s, held for twice that: 1,500 s."""
    sqs, queue, clock = slow_limit_with_25_queued(monkeypatch, sim)

    # Three periods (3 x 240 s) have gone by, and the marks are older than 15 minutes: still waiting.
    clock.now = START + timedelta(seconds=1000)
    assert run()["stopped"] == "rested"
    clock.now = START + timedelta(seconds=1501)  # the backlog's time is out: the pass runs ...
    answer = run()
    assert answer["stopped"] == "finished"
    assert answer["queued"] == {} and answer["already_queued"] == 25  # ... and finds them all queued
    assert (
        int(
            sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])[
                "Attributes"
            ]["ApproximateNumberOfMessages"]
        )
        == 25
    )


def test_a_shrinking_backlog_holds_the_next_pass_for_the_time_of_everything_the_last_pass_queued(
    monkeypatch, dynamodb, sim
):
    """The hold counts from the last pass's start, so it is the time of that pass's whole backlog.
    At 100,000 devices a backlog read 34 minutes in was 34,000 messages (34 minutes, twice over, all
    behind the pass's start) and a rule on what was left started a second pass while 34,000 devices
    still waited. Here the limit is 10 requests per 5 minutes (30 s a message): 25 queued devices
    hold the next pass for 1,500 s, however few of them are left."""
    sqs, queue, clock = slow_limit_with_25_queued(monkeypatch, sim)
    served = 0
    while served < 20:  # the assign workers serve 20 of the 25: 5 messages are left
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=min(10, 20 - served))[
            "Messages"
        ]:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            served += 1

    # What is left would take 5 x 30 s twice over (300 s) and three periods are 720 s: both are
    # behind. The 25 the pass queued take 1,500 s from its start.
    clock.now = START + timedelta(seconds=1000)
    assert run()["stopped"] == "rested"
    clock.now = START + timedelta(seconds=1499)
    assert run()["stopped"] == "rested"
    clock.now = START + timedelta(seconds=1501)  # still finite: the queue need not empty first
    answer = run()
    assert answer["stopped"] == "finished"
    # No device is queued a second time: the marks, 1,501 s old, stand for as long as the last
    # pass's backlog (15 minutes plus 1,500 s), not for 15 minutes plus the 300 s of what is left.
    # (The 20 taken here have marks and no record: no assign function ran.)
    assert answer["queued"] == {} and answer["already_queued"] == 25
