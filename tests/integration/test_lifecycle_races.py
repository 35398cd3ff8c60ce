"""Transfer, revoke, confirm and assignment against each other: moto, the assign workers, and the
Particle simulator over HTTP, whose devices keep their own synced Ledger copies as Device OS does.

After every race the queue is drained (the assign workers make every Ledger write the table asks for)
and the invariants are checked on the table and on what each simulated device holds.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from tests.conftest import TABLE
from tests.support import seed
from tests.support.invariants import check_invariants, check_ledgers
from tests.support.moto_atomic import AtomicClient
from tokenflow.assign_queue import AssignQueue
from tokenflow.assignment import Assigner, AssignRequest, RetryLater
from tokenflow.device_status import format_status_data, parse_status_event
from tokenflow.fleet import BadRequest, NotFound
from tokenflow.ingest import utc_now
from tokenflow.lifecycle import Conflict, Lifecycle
from tokenflow.particle import ParticleClient
from tokenflow.store import NewToken, Store
from tokenflow.tokens import fingerprint, token_id
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.sample_export import make_tokens

PAIRS = 50


class Rig:
    """The services of the api, webhook and assign functions, wired to moto and the simulator."""

    def __init__(self, dynamodb: Any, sim: ParticleSimulator) -> None:
        self.sim = sim
        self.sqs = boto3.client("sqs")
        self.queue_url = self.sqs.create_queue(QueueName="assign", Attributes={"VisibilityTimeout": "0"})[
            "QueueUrl"
        ]
        self.store = Store(TABLE, AtomicClient(dynamodb))
        self.particle = ParticleClient(
            sim.url, sim.access_token, sim.product, max_retries=2, backoff_base=0.01
        )
        self.lifecycle = Lifecycle(
            self.store, AssignQueue(self.queue_url, self.sqs), clock=utc_now, products=lambda: self.particle
        )
        self.assigner = Assigner(self.store, self.particle, clock=utc_now)
        self.outcomes: Counter[str] = Counter()

    def add_tokens(self, count: int, seed_: int) -> list[str]:
        exported = make_tokens(count, seed=seed_)
        self.store.add_tokens(
            [NewToken(t.token, t.qr_token) for t in exported], import_id="e" * 64, now=utc_now()
        )
        return [t.token for t in exported]

    def drain(self, rounds: int = 400) -> int:
        """Work the queue until it is empty, as the assign function would; returns messages handled."""
        handled = 0
        for _ in range(rounds):
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
            )
            messages = answer.get("Messages", [])
            if not messages:
                return handled
            for message in messages:
                request = AssignRequest.from_message(json.loads(message["Body"]))
                try:
                    self.outcomes[self.assigner.assign(request)] += 1
                except RetryLater:
                    continue  # back to the queue (visibility 0: at once)
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                handled += 1
        raise AssertionError("the assign queue did not drain")

    def serve(self, device_ids: list[str]) -> None:
        """Queue devices as a sweep would and let the workers serve them."""
        AssignQueue(self.queue_url, self.sqs).send([AssignRequest(d, None, "new") for d in device_ids])
        self.drain()

    def report(self, device_id: str) -> str:
        """The device publishes what its own Ledger copy holds (the firmware's status event)."""
        data = self.sim.device_ledger(device_id) or {}
        value = data.get("blynk_token") or ""
        body = {
            "event": "tokenflow/status",
            "data": format_status_data(fingerprint(value) if value else None, "1.0.0"),
            "device_id": device_id,
            "published_at": utc_now(),
        }
        return self.lifecycle.report_status(parse_status_event(body)).action

    def check(self) -> dict[str, Any]:
        self.drain()
        self.sim.settle()
        state = check_invariants(self.store)
        check_ledgers(self.store, {d: self.sim.device_ledger(d) for d in self.sim.fleet})
        return state


@pytest.fixture
def rig(dynamodb):
    with ParticleSimulator(product_id=0) as sim:
        yield Rig(dynamodb, sim)


def race(*actions: Callable[[], Any]) -> list[Any]:
    """Run the actions at the same moment in threads; each result or the exception it raised."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = actions[n]()
        except Exception as exc:  # the outcome of a lost race is part of what is checked
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def served_fleet(rig: Rig, count: int, confirmed: bool = True) -> list[str]:
    devices = rig.sim.add_devices(count)
    rig.add_tokens(count, seed_=count)
    rig.serve(devices)
    if confirmed:
        assert {rig.report(d) for d in devices} == {"confirmed"}
    return devices


def holder_token(rig: Rig, device_id: str) -> str:
    return rig.store.get_device(device_id)["token_id"]


LOSING = (Conflict, NotFound, BadRequest)


def test_transfer_and_revoke_of_the_same_token_fired_together_leave_no_revoked_token_in_a_ledger(rig):
    olds = served_fleet(rig, PAIRS)
    news = rig.sim.add_devices(PAIRS)
    rig.add_tokens(PAIRS, seed_=999)  # fresh tokens for the devices whose token is revoked
    tally: Counter[str] = Counter()
    for old, new in zip(olds, news, strict=True):
        tid = holder_token(rig, old)
        transferred, revoked = race(
            lambda o=old, n=new: rig.lifecycle.transfer(o, n), lambda t=tid: rig.lifecycle.revoke(t)
        )
        assert not isinstance(revoked, Exception), revoked  # a revoke always succeeds
        assert not isinstance(transferred, Exception) or isinstance(transferred, LOSING), transferred
        tally["transfer won" if not isinstance(transferred, Exception) else "transfer refused"] += 1
        assert rig.store.get_token(tid)["state"] == "revoked"
    state = rig.check()
    assert state["tokens"]["revoked"] == PAIRS
    # whoever held the revoked token (old, or new after a transfer) got a fresh one, after its clear
    assert state["devices"].get("clearing", 0) == 0
    assert sum(tally.values()) == PAIRS


def test_two_transfers_of_one_device_fired_together_move_its_token_once(rig):
    olds = served_fleet(rig, PAIRS)
    targets = rig.sim.add_devices(2 * PAIRS)
    winners = 0
    for n, old in enumerate(olds):
        tid = holder_token(rig, old)
        first, second = race(
            lambda o=old, t=targets[2 * n]: rig.lifecycle.transfer(o, t),
            lambda o=old, t=targets[2 * n + 1]: rig.lifecycle.transfer(o, t),
        )
        won = [r for r in (first, second) if not isinstance(r, Exception)]
        lost = [r for r in (first, second) if isinstance(r, Exception)]
        assert len(won) == 1 and all(isinstance(e, Conflict) for e in lost), (first, second)
        winners += 1
        assert rig.store.get_token(tid)["device_id"] == won[0]["to"]
    state = rig.check()
    assert winners == PAIRS
    assert state["devices"]["retired"] == PAIRS and state["devices"]["delivered"] == PAIRS


def test_revoke_fired_while_a_worker_delivers_the_token_leaves_it_in_no_ledger(rig):
    devices = rig.sim.add_devices(PAIRS)
    tokens = rig.add_tokens(PAIRS, seed_=5)
    for device, token in zip(devices, tokens, strict=True):
        seed.claim(rig.store, device, token_id(token), token, utc_now())  # pending: its write is next
    rig.add_tokens(PAIRS, seed_=6)  # stock for the fresh tokens
    for device, token in zip(devices, tokens, strict=True):
        delivered, revoked = race(
            lambda d=device: rig.assigner.assign(AssignRequest(d, "pending", "sweep")),
            lambda t=token: rig.lifecycle.revoke(token_id(t)),
        )
        assert not isinstance(revoked, Exception), revoked
        assert not isinstance(delivered, Exception) or isinstance(delivered, RetryLater), delivered
    state = rig.check()
    assert state["tokens"]["revoked"] == PAIRS
    assert state["devices"] == {"delivered": PAIRS}  # each got a fresh token after its clear


def test_confirm_and_revoke_fired_together_end_with_the_device_cleared_and_waiting(rig):
    devices = served_fleet(rig, PAIRS, confirmed=False)  # no stock left: the cleared state stays
    actions: Counter[str] = Counter()
    for device in devices:
        tid = holder_token(rig, device)
        confirmed, revoked = race(lambda d=device: rig.report(d), lambda t=tid: rig.lifecycle.revoke(t))
        assert not isinstance(revoked, Exception), revoked
        assert not isinstance(confirmed, Exception), confirmed
        actions[confirmed] += 1
    state = rig.check()
    assert state["tokens"]["revoked"] == PAIRS and state["tokens"].get("confirmed", 0) == 0
    assert state["devices"] == {"waiting": PAIRS}
    assert all(rig.sim.device_ledger(d) == {"blynk_token": "", "state": "revoked"} for d in devices)
    assert set(actions) <= {"confirmed", "ignored", "clear-queued"}
