"""What a device costs in DynamoDB calls at fleet scale: the sweep marks a page of devices with batch
calls, a worker's claim transaction removes the mark, and the claims of one batch share one candidate
query. Real sweep and assign handlers, moto and the Particle simulator over HTTP; the exactly-once
invariants are checked under parallel batches and duplicate delivery."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime

import boto3
import pytest

from tests.conftest import TABLE
from tests.support.events import load_event
from tests.support.factories import TableClock, device_id, random_tokens
from tests.support.functions import configure_functions
from tests.support.invariants import check_invariants
from tests.support.moto_atomic import AtomicClient
from tokenflow import wiring
from tokenflow.assignment import Assigner, AssignRequest
from tokenflow.particle import ParticleClient
from tokenflow.store import Store
from tokenflow.store.queue_marks import QueueMarks
from tokenflow.tokens import token_id
from tokenflow_local import lambda_runtime
from tokenflow_local.particle_sim import ParticleSimulator

START = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
NOW = "2026-11-29T10:00:00.000Z"


@pytest.fixture
def sim():
    with ParticleSimulator(max_per_page=100) as simulator:
        yield simulator


@pytest.fixture
def stack(monkeypatch, dynamodb, sim):
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="assign", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    configure_functions(monkeypatch, sim, queue, SWEEP_FUNCTION_NAME="")
    clock = TableClock(START)
    particle = ParticleClient(sim.url, sim.access_token, sim.product)
    graph = wiring.install(wiring.Services(clock=clock, particle=particle))
    return {"sqs": sqs, "queue": queue, "sim": sim, "clock": clock, "graph": graph}


def sweep() -> dict:
    handler = lambda_runtime.load_handler("sweep")
    return handler.lambda_handler(
        load_event("sweep/scheduled.json"), lambda_runtime.LambdaContext(function_name="sweep")
    )


def test_a_sweep_page_reads_and_writes_its_marks_in_batches_not_one_write_per_device(stack):
    ids = stack["sim"].add_devices(120)  # two pages: 100 and 20
    calls = stack["graph"].store().calls
    calls.counts.clear()

    assert sweep()["queued"] == {"new": 120}

    # Per page: the device items, then the marks of the devices to queue (one BatchGetItem each),
    # and the marks written 25 at a time (4 + 1). No conditional write per device any more.
    assert calls.counts["BatchGetItem"] == 1 + 2 + 2  # the counters, then two per page
    assert calls.counts["BatchWriteItem"] == 4 + 1
    assert "PutItem" not in calls.counts
    # The lease taken, the pass started, the cursor moved twice, the pass finished, the lease given back.
    assert calls.counts["UpdateItem"] == 6
    marks = QueueMarks(Store(TABLE).db)
    assert marks.read(ids) == dict.fromkeys(ids, NOW)

    calls.counts.clear()
    again = sweep()  # every device still waits in the queue: nothing written, nothing sent
    assert again["queued"] == {} and again["already_queued"] == 120
    assert "BatchWriteItem" not in calls.counts


def test_a_batch_of_ten_new_devices_costs_two_transactions_each_and_one_candidate_query(stack):
    ids = stack["sim"].add_devices(10)
    Store(TABLE).add_tokens(random_tokens(500), import_id="i", now="t")
    sweep()
    calls = stack["graph"].store().calls
    calls.counts.clear()

    assert lambda_runtime.poll_once(stack["sqs"], stack["queue"], "assign") == 10

    state = check_invariants(Store(TABLE))
    assert state["devices"] == {"delivered": 10}
    # The claim and the delivery per device; one query for the batch's candidates (a second one
    # only when its random point falls near the end of the shard); the pause check. The marks go
    # with the claims: no UpdateItem, and none is left.
    assert calls.counts["TransactWriteItems"] == 20
    assert calls.counts["Query"] <= 2
    assert calls.counts["GetItem"] == 1
    assert "UpdateItem" not in calls.counts
    assert QueueMarks(Store(TABLE).db).read(ids) == {}


def test_a_message_handled_without_a_transaction_still_removes_its_mark(stack):
    [device] = stack["sim"].add_devices(1)
    Store(TABLE).add_tokens(random_tokens(1), import_id="i", now="t")
    sweep()
    lambda_runtime.poll_once(stack["sqs"], stack["queue"], "assign")
    marks = QueueMarks(Store(TABLE).db)
    # A later message for the device (a status report's, say) finds it delivered: no transaction,
    # so the worker removes the mark on its own (one conditional UpdateItem).
    assert marks.mark(device, "2026-11-29T10:05:00.000Z", "2026-11-29T09:50:00.000Z")
    assigner = stack["graph"].assigner()
    outcome = assigner.assign(
        AssignRequest(device, "delivered", "webhook", queued_at="2026-11-29T10:05:00.000Z")
    )
    assert outcome == "done"
    assert marks.queued_at(device) is None


@pytest.mark.slow
def test_parallel_batches_bind_distinct_tokens_with_one_candidate_query_per_batch(dynamodb):
    client = AtomicClient(boto3.client("dynamodb"))
    store = Store(TABLE, client)
    store.add_tokens(random_tokens(1600), import_id="i", now="t")
    devices = [device_id(n) for n in range(400)]
    QueueMarks(store.db).put(devices, NOW)
    ledger = Ledger()
    stores: list[Store] = []

    def worker(share: list[AssignRequest], seed: int) -> None:
        own = Store(TABLE, client, rng=random.Random(seed))
        stores.append(own)
        assigner = Assigner(own, ledger, clock=lambda: NOW, rng=random.Random(seed))
        for start in range(0, len(share), 10):
            with assigner.batch(10):
                for request in share[start : start + 10]:
                    assigner.assign(request)

    requests = [AssignRequest(d, queued_at=NOW) for d in devices]
    run_workers(worker, requests, 4)

    state = check_invariants(store)
    assert state["devices"] == {"delivered": 400}
    assert len({token_id(t) for t in ledger.data.values()}) == 400
    assert all(n == 1 for n in ledger.writes.values())
    counts = sum((Counter(s.calls.counts) for s in stores), Counter())
    # 40 batches: one candidate query each, rarely two (its random point near a shard's end); four
    # workers reading from random points of 8 shards of ~200 tokens rarely hold the same candidate.
    assert counts["Query"] <= 40 * 1.5
    assert 800 <= counts["TransactWriteItems"] <= 800 * 1.05
    assert set(counts) == {"Query", "TransactWriteItems"}  # the marks went with the claims
    assert QueueMarks(store.db).read(devices) == {}
    assert (counts["Query"] + counts["TransactWriteItems"]) / 400 <= 2.2

    # Every request delivered again, in batches, shuffled: nothing changes, no Ledger write.
    again = requests * 2
    random.Random(3).shuffle(again)
    run_workers(worker, again, 4)
    assert check_invariants(store)["devices"] == {"delivered": 400}
    assert all(n == 1 for n in ledger.writes.values())


class Ledger:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes: Counter[str] = Counter()
        self.lock = threading.Lock()

    def set_ledger_token(self, device: str, token: str) -> None:
        with self.lock:
            self.writes[device] += 1
            self.data[device] = token

    def clear_ledger_token(self, device: str, reason: str) -> None:
        raise AssertionError("nothing is cleared here")


def run_workers(worker, requests: list[AssignRequest], count: int) -> None:
    threads = [threading.Thread(target=worker, args=(requests[n::count], n)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
