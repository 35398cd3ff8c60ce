"""A stateful property test of the lifecycle: any sequence of imports, assignments, status reports
(matching or not), transfers, revokes and duplicate deliveries keeps every invariant, checked after
every step on the table and on what each simulated device holds in its Ledger copy."""

from __future__ import annotations

import contextlib

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from moto import mock_aws

from tests.conftest import TABLE
from tests.support.rig import Rig
from tokenflow import wiring
from tokenflow.assign_queue import AssignQueue
from tokenflow.assignment import AssignRequest, RetryLater
from tokenflow.fleet import BadRequest, NotFound
from tokenflow.lifecycle import Conflict
from tokenflow.model import BOUND_TOKEN_STATES
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.resources import create_table

DEVICES = 5
device_index = st.integers(0, DEVICES - 1)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        wiring.reset()
        self.mock = mock_aws()
        self.mock.start()
        client = boto3.client("dynamodb")
        create_table(client, TABLE)
        self.sim = ParticleSimulator(product_id=0).start()
        self.devices = self.sim.add_devices(DEVICES)
        self.rig = Rig(client, self.sim)
        self.batches: list[tuple[int, int]] = []  # (seed, count) of every import

    @initialize(served=st.integers(0, DEVICES), stock=st.integers(0, 3))
    def a_fleet_partly_served(self, served: int, stock: int) -> None:
        """Start from some devices served and confirmed and a few tokens in stock, so that the steps
        meet devices in every state soon."""
        self.import_tokens(served + stock)
        self.rig.serve(self.devices[:served])
        for device in self.devices[: served // 2]:
            self.rig.report(device)

    def teardown(self) -> None:
        self.sim.stop()
        self.mock.stop()
        wiring.reset()

    def _token_of(self, n: int) -> str | None:
        item = self.rig.store.get_device(self.devices[n])
        return item.get("token_id") if item else None

    @rule(count=st.integers(1, 3))
    def import_tokens(self, count: int) -> None:
        if count == 0:
            return
        self.batches.append((100 + len(self.batches), count))
        self.rig.add_tokens(count, seed_=self.batches[-1][0])

    @precondition(lambda self: self.batches)
    @rule(pick=st.integers(0, 1_000))
    def import_an_earlier_batch_again(self, pick: int) -> None:
        seed, count = self.batches[pick % len(self.batches)]
        before = self.rig.store.summary()["tokens"]
        self.rig.add_tokens(count, seed_=seed)
        assert self.rig.store.summary()["tokens"] == before  # a known token never changes

    @rule(n=device_index)
    def sweep_finds(self, n: int) -> None:
        AssignQueue(self.rig.queue_url, self.rig.sqs).send([AssignRequest(self.devices[n], None, "new")])

    @rule(n=device_index)
    def device_reports_what_it_holds(self, n: int) -> None:
        self.rig.report(self.devices[n])

    @rule(n=device_index)
    def device_reports_another_token(self, n: int) -> None:
        self.rig.report(self.devices[n], "ffffffffffff")

    @rule(a=device_index, b=device_index)
    def transfer(self, a: int, b: int) -> None:
        # refused or not: the invariants say whether anything changed that may not
        with contextlib.suppress(Conflict, NotFound, BadRequest):
            self.rig.lifecycle.transfer(self.devices[a], self.devices[b])

    @rule(n=device_index)
    def revoke_a_devices_token(self, n: int) -> None:
        tid = self._token_of(n)
        if tid:
            self.rig.lifecycle.revoke(tid)

    @rule()
    def revoke_an_available_token(self) -> None:
        candidates = self.rig.store.available_candidates(1)
        if candidates:
            self.rig.lifecycle.revoke(candidates[0][0])

    @rule(pick=st.integers(0, 10_000))
    def a_request_is_delivered_again(self, pick: int) -> None:
        if self.rig.requests:
            request = self.rig.requests[pick % len(self.rig.requests)]
            with contextlib.suppress(RetryLater):
                self.rig.assigner.assign(request)

    @invariant()
    def invariants_hold_once_the_workers_are_done(self) -> None:
        state = self.rig.check()  # drains the queue, then table and device-side invariants
        for token in state["binding"].values():
            if token:
                assert self.rig.store.get_token(token)["state"] in BOUND_TOKEN_STATES


LifecycleMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    derandomize=True,  # the same sequences on every run, so CI cannot flip
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lifecycle_keeps_its_invariants = pytest.mark.slow(LifecycleMachine.TestCase)
