"""A small Tokenflow for lifecycle tests: the services of the api, webhook and assign functions over
moto and the Particle simulator (whose devices keep their own synced Ledger copies), and a way to
fire actions at the same moment."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3

from tests.conftest import TABLE
from tests.support.invariants import check_invariants, check_ledgers
from tests.support.moto_atomic import AtomicClient
from tokenflow import wiring
from tokenflow.assign_queue import AssignQueue
from tokenflow.assignment import AssignRequest, RetryLater
from tokenflow.device_status import format_status_data, parse_status_event
from tokenflow.ingest import utc_now
from tokenflow.particle import ParticleClient
from tokenflow.settings import Settings
from tokenflow.store import NewToken, Store
from tokenflow.tokens import fingerprint
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.sample_export import make_tokens


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
        # the functions' own graph, with the test's store (atomic requests), client and queue
        graph = wiring.Services(
            Settings(),
            store=self.store,
            particle=self.particle,
            assign_queue=AssignQueue(self.queue_url, self.sqs),
        )
        self.lifecycle = graph.lifecycle()
        self.assigner = graph.assigner()
        self.outcomes: Counter[str] = Counter()
        self.requests: list[AssignRequest] = []  # every request the workers took, in order

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
                self.requests.append(request)
                try:
                    receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
                    self.outcomes[self.assigner.assign(request, receives)] += 1
                except RetryLater:
                    continue  # back to the queue (visibility 0: at once)
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                handled += 1
        raise AssertionError("the assign queue did not drain")

    def serve(self, device_ids: list[str]) -> None:
        """Queue devices as a sweep would and let the workers serve them."""
        AssignQueue(self.queue_url, self.sqs).send([AssignRequest(d, None, "new") for d in device_ids])
        self.drain()

    def report(self, device_id: str, fingerprint_: str | None = None) -> str:
        """The device publishes what its own Ledger copy holds (the firmware's status event), or the
        fingerprint given."""
        data = self.sim.device_ledger(device_id) or {}
        value = data.get("blynk_token") or ""
        held = fingerprint_ or (fingerprint(value) if value else None)
        body = {
            "event": "tokenflow/status",
            "data": format_status_data(held, "1.0.0"),
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
