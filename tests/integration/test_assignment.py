"""The claim / deliver / record service against moto, with an in-process Ledger double.

The same service over real HTTP against the Particle simulator is in test_assign_flow.py; here the
Ledger is a small double so that failures can be placed exactly (a crash between claim and write).
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import boto3
import pytest

from tests.conftest import TABLE
from tests.support.factories import device_id, random_tokens
from tests.support.invariants import check_invariants
from tests.support.moto_atomic import AtomicClient
from tokenflow.assignment import Assigner, AssignRequest, AuthFailure, RetryLater
from tokenflow.particle import ParticleAuthError, ParticleNotFound, ParticleUnavailable
from tokenflow.store import Store
from tokenflow.tokens import token_id


class FakeLedger:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes: Counter[str] = Counter()
        self.fail_next: list[Exception] = []
        self.lock = threading.Lock()

    def set_ledger_token(self, device: str, token: str) -> None:
        with self.lock:
            if self.fail_next:
                raise self.fail_next.pop(0)
            self.writes[device] += 1
            self.data[device] = token

    def delete_ledger_instance(self, device: str) -> bool:
        with self.lock:
            return self.data.pop(device, None) is not None


def clock() -> str:
    return "2026-01-01T00:00:00.000Z"


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def assigner(store: Store, ledger: FakeLedger) -> Assigner:
    return Assigner(store, ledger, max_attempts=3, clock=clock)


def test_new_device_gets_one_token_written_to_its_ledger(store, ledger, assigner):
    stored = random_tokens(3)
    store.add_tokens(stored, import_id="i", now="t")
    assert assigner.assign(AssignRequest(device_id(1), fields={"name": "pump-1"})) == "delivered"
    device = store.get_device(device_id(1))
    assert device["state"] == "delivered"
    assert device["name"] == "pump-1"
    assert ledger.data[device_id(1)] in {t.token for t in stored}
    assert token_id(ledger.data[device_id(1)]) == device["token_id"]
    assert ledger.writes[device_id(1)] == 1
    check_invariants(store)


def test_new_device_costs_three_dynamodb_calls(dynamodb, ledger):
    # The candidate query starts at a random point of the index and wraps around (a second query)
    # only when it starts past the last token: 1 time in (tokens left + 1). Draining 100 tokens
    # into 100 devices that adds about H(101) - 1 = 4.2 queries in all (8 with this seed).
    store = Store(TABLE, dynamodb, rng=random.Random(3))
    assigner = Assigner(store, ledger, max_attempts=3, clock=clock, rng=random.Random(3))
    store.add_tokens(random_tokens(100), import_id="i", now="t")
    store.calls.counts.clear()
    assigner.assign(AssignRequest(device_id(1)))
    assert store.calls.counts == {"Query": 1, "TransactWriteItems": 2}
    for n in range(2, 101):
        assigner.assign(AssignRequest(device_id(n)))
    assert store.calls.counts["TransactWriteItems"] == 200
    assert store.calls.counts["Query"] <= 110


def test_repeated_request_for_a_served_device_changes_nothing(store, ledger, assigner):
    store.add_tokens(random_tokens(3), import_id="i", now="t")
    assigner.assign(AssignRequest(device_id(1)))
    before = check_invariants(store)
    for seen in (None, "waiting", "pending"):
        assert assigner.assign(AssignRequest(device_id(1), seen_state=seen)) == "done"
    assert ledger.writes[device_id(1)] == 1
    assert check_invariants(store) == before


def test_crash_between_claim_and_ledger_write_ends_with_the_same_token(store, ledger, assigner):
    store.add_tokens(random_tokens(5), import_id="i", now="t")
    ledger.fail_next.append(RuntimeError("worker died"))
    with pytest.raises(RuntimeError):
        assigner.assign(AssignRequest(device_id(1)))
    pending = store.get_device(device_id(1))
    assert pending["state"] == "pending"
    # the message comes back with the state the sweep saw: none
    assert assigner.assign(AssignRequest(device_id(1)), receive_count=2) == "delivered"
    delivered = store.get_device(device_id(1))
    assert delivered["token_id"] == pending["token_id"]
    assert token_id(ledger.data[device_id(1)]) == pending["token_id"]
    assert check_invariants(store)["tokens"] == {"delivered": 1, "available": 4}


def test_device_waits_without_tokens_and_is_served_when_they_arrive(store, ledger, assigner):
    assert assigner.assign(AssignRequest(device_id(1))) == "waiting"
    assert assigner.assign(AssignRequest(device_id(1))) == "waiting"  # no second record, no counter drift
    assert check_invariants(store)["devices"] == {"waiting": 1}
    store.add_tokens(random_tokens(1), import_id="i", now="t")
    assert assigner.assign(AssignRequest(device_id(1), seen_state="waiting")) == "delivered"
    assert check_invariants(store)["devices"] == {"delivered": 1}


def test_retryable_ledger_failures_are_retried_then_recorded_failed(store, ledger, assigner):
    store.add_tokens(random_tokens(2), import_id="i", now="t")
    ledger.fail_next = [ParticleUnavailable("503 from Particle")] * 3
    for attempt in (1, 2):
        with pytest.raises(RetryLater):
            assigner.assign(AssignRequest(device_id(1)), receive_count=attempt)
        assert store.get_device(device_id(1))["state"] == "pending"
    with pytest.raises(RetryLater):
        assigner.assign(AssignRequest(device_id(1)), receive_count=3)
    failed = store.get_device(device_id(1))
    assert failed["state"] == "failed"
    assert failed["retryable"] is True
    assert "503" in failed["last_error"]
    assert check_invariants(store)["devices"] == {"failed": 1}
    # a later retry (the sweep queues retryable failures) delivers the same token
    assert assigner.assign(AssignRequest(device_id(1), seen_state="failed")) == "delivered"
    assert store.get_device(device_id(1))["token_id"] == failed["token_id"]
    check_invariants(store)


def test_refused_ledger_write_fails_the_device_without_retries(store, ledger, assigner):
    store.add_tokens(random_tokens(1), import_id="i", now="t")
    ledger.fail_next = [ParticleNotFound("ledger not found")]
    assert assigner.assign(AssignRequest(device_id(1))) == "failed"
    device = store.get_device(device_id(1))
    assert device["state"] == "failed" and device["retryable"] is False
    check_invariants(store)


def test_particle_auth_failure_raises_at_once(store, ledger, assigner):
    store.add_tokens(random_tokens(1), import_id="i", now="t")
    ledger.fail_next = [ParticleAuthError("401")]
    with pytest.raises(AuthFailure):
        assigner.assign(AssignRequest(device_id(1)))
    assert store.get_device(device_id(1))["state"] == "pending"


@pytest.mark.slow
def test_parallel_workers_bind_distinct_tokens_and_serve_waiting_devices_later(dynamodb):
    client = AtomicClient(boto3.client("dynamodb"))
    store = Store(TABLE, client)
    ledger = FakeLedger()
    store.add_tokens(random_tokens(900), import_id="i1", now="t")
    devices = [device_id(n) for n in range(1000)]
    # every request twice, shuffled: duplicate and out-of-order delivery
    requests = [AssignRequest(d) for d in devices] * 2
    random.Random(7).shuffle(requests)
    outcomes: Counter[str] = Counter()

    def worker(share: list[AssignRequest], seed: int) -> None:
        assigner = Assigner(Store(TABLE, client), ledger, clock=clock, rng=random.Random(seed))
        for request in share:
            result = assigner.assign(request)
            with ledger.lock:
                outcomes[result] += 1

    threads = [threading.Thread(target=worker, args=(requests[n::8], n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    state = check_invariants(store)
    assert state["devices"] == {"delivered": 900, "waiting": 100}
    assert state["tokens"] == {"delivered": 900}
    assert len({token_id(t) for t in ledger.data.values()}) == 900  # no token on two devices
    assert all(n == 1 for n in ledger.writes.values())  # one Ledger write per device

    store.add_tokens(random_tokens(200, seed=1), import_id="i2", now="t")
    waiting = [d for d, tid in state["binding"].items() if tid is None]
    threads = [
        threading.Thread(target=worker, args=([AssignRequest(d, "waiting") for d in waiting[n::8]], 100 + n))
        for n in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = check_invariants(store)
    assert state["devices"] == {"delivered": 1000}
    assert state["tokens"] == {"delivered": 1000, "available": 100}
    assert len(ledger.data) == 1000
