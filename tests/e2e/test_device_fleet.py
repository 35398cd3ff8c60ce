"""The simulated devices behave like the firmware: real HTTP to the Particle simulator and to a webhook."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tokenflow.device_status import parse_status_event
from tokenflow.tokens import fingerprint
from tokenflow_local.devices import DeviceFleet
from tokenflow_local.particle_sim import ParticleSimulator

TOKEN = "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl"
SECRET = "s3cret-for-tests"


class Webhook:
    """Records what the Particle integration would deliver; answers ``status`` (500 to refuse)."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.posts.append((dict(self.headers), body))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/particle"

    def by_device(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for _, body in self.posts:
            out.setdefault(body["device_id"], []).append(body["data"])
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    hook = Webhook()
    with ParticleSimulator() as sim:
        ids = sim.add_devices(4, quarantined=1, denied=1)
        clock = Clock()
        fleet = DeviceFleet(
            sim.url, hook.url, SECRET, first_retry=2.0, max_retry=8.0, jitter=0.0, clock=clock
        )
        yield sim, hook, fleet, clock, ids
        fleet.stop()
    hook.server.shutdown()
    hook.server.server_close()


def put_ledger(sim: ParticleSimulator, device_id: str, data: dict) -> None:
    import requests

    response = requests.put(
        f"{sim.url}/v1/ledgers/blynk-tokens-c2d/instances/{device_id}",
        params={"set_mode": "Merge"},
        json={"instance": {"data": data}},
        headers={"Authorization": f"Bearer {sim.access_token}"},
        timeout=5,
    )
    response.raise_for_status()


def test_devices_report_on_connect_with_the_integration_body_and_secret(world):
    _sim, hook, fleet, _, ids = world
    assert fleet.step() == 2  # the quarantined and the denied device never reach the cloud
    assert set(hook.by_device()) == set(ids[2:])
    for headers, body in hook.posts:
        assert headers["X-Tokenflow-Secret"] == SECRET
        assert set(body) == {"event", "data", "device_id", "published_at"}
        status = parse_status_event(body)  # the API's own parser accepts it
        assert status.holds == "none" and status.synced is False


def test_a_device_reports_its_token_fingerprint_when_its_ledger_changes_and_then_stays_quiet(world):
    sim, hook, fleet, clock, ids = world
    fleet.step()
    put_ledger(sim, ids[2], {"blynk_token": TOKEN})
    clock.now += 0.5
    assert fleet.step() == 1
    assert hook.by_device()[ids[2]][-1] == f"v=1;token={fingerprint(TOKEN)};fw=1.0.0;synced=1"
    assert TOKEN not in json.dumps(hook.posts)  # only the fingerprint travels
    clock.now += 100
    before = len(hook.by_device()[ids[2]])
    fleet.step()
    assert len(hook.by_device()[ids[2]]) == before  # holds a token: no report without a change
    assert fleet.confirmed_count() == 1

    put_ledger(sim, ids[2], {"blynk_token": "not a token"})
    fleet.step()
    assert hook.by_device()[ids[2]][-1].startswith("v=1;token=invalid;")
    clock.now += 2.0  # a malformed value is reported again, like no token, so it can be rewritten
    fleet.step()
    assert hook.by_device()[ids[2]][-2:] == [hook.by_device()[ids[2]][-1]] * 2

    sim.ledgers.clear()  # the instance is deleted (a transfer): the device says it has none
    fleet.step()
    assert hook.by_device()[ids[2]][-1].startswith("v=1;token=none;")


def test_without_a_token_reports_repeat_with_growing_waits(world):
    _sim, _hook, fleet, clock, _ids = world
    times = []
    for _ in range(40):  # 20 s in steps of 0.5 s
        if fleet.step():
            times.append(clock.now)
        clock.now += 0.5
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert waits[:3] == [2.0, 4.0, 8.0]
    assert max(waits) == 8.0  # capped at max_retry


def test_a_refused_report_is_published_again(world):
    _sim, hook, fleet, clock, ids = world
    hook.status = 500
    fleet.step()
    assert fleet.reported()[ids[2]] is None
    hook.status = 200
    clock.now += 2.0
    fleet.step()
    assert fleet.reported()[ids[2]].startswith("v=1;token=none;")
