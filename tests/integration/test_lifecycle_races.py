"""Transfer, revoke, confirm and assignment against each other: moto, the assign workers, and the
Particle simulator over HTTP, whose devices keep their own synced Ledger copies as Device OS does.

After every race the queue is drained (the assign workers make every Ledger write the table asks for)
and the invariants are checked on the table and on what each simulated device holds.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support import seed
from tests.support.rig import Rig, race
from tokenflow.assignment import AssignRequest, RetryLater
from tokenflow.fleet import BadRequest, NotFound
from tokenflow.ingest import utc_now
from tokenflow.lifecycle import Conflict
from tokenflow.tokens import token_id
from tokenflow_local.particle_sim import ParticleSimulator

PAIRS = 50


@pytest.fixture
def rig(dynamodb):
    with ParticleSimulator(product_id=0) as sim:
        yield Rig(dynamodb, sim)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_clear_particle_fails_leaves_the_device_clearing_until_a_retry_succeeds(rig):
    old, new = served_fleet(rig, 1)[0], rig.sim.add_devices(1)[0]
    rig.lifecycle.transfer(old, new)
    rig.sim.set_faults(error_rate=1.0, error_statuses=(503,))
    with pytest.raises(RetryLater):
        rig.assigner.assign(AssignRequest(old, "clearing", "clear"), receive_count=5)
    item = rig.store.get_device(old)
    assert item["state"] == "clearing" and "503" in item["last_error"] and item["attempts"] == 1
    assert rig.sim.device_ledger(old)["blynk_token"]  # the device still holds the token: not retired
    rig.sim.set_faults()
    state = rig.check()  # the queued clear (and the new device's delivery) go through now
    assert rig.store.get_device(old)["state"] == "retired"
    assert rig.sim.device_ledger(old) == {"blynk_token": "", "state": "transferred"}
    assert state["devices"] == {"retired": 1, "delivered": 1}
