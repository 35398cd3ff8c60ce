"""The deployed client paces itself to its share of Particle's limit (Settings.particle_request_budget),
against the Particle simulator's sliding-window limiter over HTTP."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.factories import BLYNK_DOC_TOKEN
from tokenflow.particle import ParticleBusy, ParticleClient, ParticleError
from tokenflow.settings import Settings
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.resources import environment

TOKEN = BLYNK_DOC_TOKEN
ACTIVE = {"blynk_token": TOKEN, "state": "active"}


@pytest.fixture
def sim():
    with ParticleSimulator(access_token="particle-access-token-0123456789abcdef") as simulator:
        yield simulator


def paced_client(sim: ParticleSimulator, **env: str) -> ParticleClient:
    """The client as a function builds it (ParticleClient.from_settings), from its environment."""
    settings = Settings.from_env({"PARTICLE_API_URL": sim.url, "PARTICLE_PRODUCT": sim.product, **env})
    client = ParticleClient.from_settings(settings)
    client._token = sim.access_token  # the SSM read stands aside: the simulator's token
    return client


def test_each_assign_invocation_gets_its_share_of_the_documented_limit():
    assign = {k: str(v) for k, v in environment("AssignFunction").items() if k.startswith("PARTICLE_RATE")}
    assert assign["PARTICLE_RATE_SHARE"] == "0.95"
    assert assign["PARTICLE_RATE_CLIENTS"] == "{'Ref': 'AssignMaxConcurrency'}"
    # 95 % of 10,000 requests per 5 minutes, over AssignMaxConcurrency's default of 4 invocations.
    settings = Settings.from_env({"PARTICLE_RATE_SHARE": "0.95", "PARTICLE_RATE_CLIENTS": "4"})
    assert settings.particle_request_budget == (2375, 300.0)
    # Functions that set no share (sweep, api) are not paced: they use what the assign share leaves.
    assert Settings.from_env({}).particle_request_budget is None


def test_paced_workers_share_the_cloud_limit_without_a_429(sim):
    devices = sim.add_devices(16)
    sim.set_rate_limit(8, 1.0)  # the cloud: 8 requests per second, sliding
    env = {"PARTICLE_RATE_LIMIT": "8", "PARTICLE_RATE_WINDOW": "1.0", "PARTICLE_RATE_SHARE": "1"}
    workers = [paced_client(sim, PARTICLE_RATE_CLIENTS="2", **env) for _ in range(2)]
    assert [w.rate_limit for w in workers] == [(4, 1.0), (4, 1.0)]

    def serve(worker: ParticleClient, mine: list[str]) -> None:
        for device_id in mine:
            worker.set_ledger_token(device_id, TOKEN)

    started = time.monotonic()
    threads = [threading.Thread(target=serve, args=(w, devices[i::2])) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert all(sim.ledger_data(d) == ACTIVE for d in devices)
    assert "429" not in sim.stats()["statuses"]
    assert sum(w.requests_sent for w in workers) == 16  # no retries: the limit was never met
    assert elapsed >= 1.0  # 8 requests each at 4 per second: one full window waited per worker


def test_unpaced_workers_meet_the_same_limit(sim):
    # The same fleet without the share: the cloud answers 429s (the contrast the pacing removes).
    devices = sim.add_devices(16)
    sim.set_rate_limit(8, 1.0)
    workers = [paced_client(sim, PARTICLE_RATE_SHARE="0") for _ in range(2)]
    waits: list[float] = []
    for w in workers:
        w.sleep = waits.append  # no real wait: only whether the cloud pushed back is asked
        w.max_retries = 0
    refused = 0
    for i, device_id in enumerate(devices):
        try:
            workers[i % 2].set_ledger_token(device_id, TOKEN)
        except ParticleError:  # a 429, no retry left
            refused += 1
    assert refused > 0
    assert "429" in sim.stats()["statuses"]


def test_a_paced_worker_gives_up_its_turn_rather_than_wait_past_its_deadline(sim):
    devices = sim.add_devices(3)
    waits: list[float] = []
    worker = paced_client(sim, PARTICLE_RATE_LIMIT="2", PARTICLE_RATE_WINDOW="60", PARTICLE_RATE_SHARE="1")
    worker.sleep = waits.append
    with worker.deadline(time.monotonic() + 5.0):
        worker.set_ledger_token(devices[0], TOKEN)
        worker.set_ledger_token(devices[1], TOKEN)
        with pytest.raises(ParticleBusy) as busy:
            worker.set_ledger_token(devices[2], TOKEN)
    # The next turn is a window away: the caller (assignment) hands the device back for that long.
    assert busy.value.retry_after == pytest.approx(60.0 * 1.01 + 0.05, abs=1.0)
    assert waits == []  # nothing slept
    assert worker.requests_sent == 2  # the third request was never sent
    assert sim.ledger_data(devices[2]) is None
