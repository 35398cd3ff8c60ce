"""The simulated devices behave like the firmware: real HTTP to the Particle simulator and to a webhook."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.factories import BLYNK_DOC_TOKEN, BLYNK_DOC_TOKEN_2, ManualClock
from tokenflow.device_status import parse_status_event
from tokenflow.tokens import fingerprint
from tokenflow_local.devices import DeviceFleet
from tokenflow_local.particle_sim import ParticleSimulator

TOKEN, OTHER = BLYNK_DOC_TOKEN, BLYNK_DOC_TOKEN_2
SECRET = "s3cret-for-tests"
ACTIVE = {"blynk_token": TOKEN, "state": "active"}
# The firmware's own table of Ledger contents and what it reports for each (its host tests read it too).
LEDGER_VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "firmware/test/vectors/ledger_states.json").read_text(
        encoding="utf-8"
    )
)["ledger_states"]


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
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/particle"

    def by_device(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for _, body in self.posts:
            out.setdefault(body["device_id"], []).append(body["data"])
        return out


@pytest.fixture
def world():
    hook = Webhook()
    with ParticleSimulator() as sim:
        ids = sim.add_devices(4, quarantined=1, denied=1)
        clock = ManualClock(1000.0)
        fleet = DeviceFleet(
            sim.url, hook.url, SECRET, first_retry=2.0, max_retry=8.0, jitter=0.0, clock=clock
        )
        yield sim, hook, fleet, clock, ids
        fleet.stop()
    hook.server.shutdown()
    hook.server.server_close()


def put_ledger(sim: ParticleSimulator, device_id: str, data: dict, mode: str = "Merge") -> None:
    response = requests.put(
        f"{sim.url}/v1/ledgers/blynk-tokens-c2d/instances/{device_id}",
        params={"set_mode": mode},
        json={"instance": {"data": data}},
        headers={"Authorization": f"Bearer {sim.access_token}"},
        timeout=5,
    )
    response.raise_for_status()


def delete_ledger(sim: ParticleSimulator, device_id: str) -> None:
    response = requests.delete(
        f"{sim.url}/v1/ledgers/blynk-tokens-c2d/instances/{device_id}",
        headers={"Authorization": f"Bearer {sim.access_token}"},
        timeout=5,
    )
    response.raise_for_status()


@pytest.fixture
def slow_sync():
    """One device, a Ledger sync that takes 5 s, and one clock for the simulator and the fleet."""
    hook = Webhook()
    clock = ManualClock(1000.0)
    with ParticleSimulator(sync_delay=5.0, clock=clock) as sim:
        [device] = sim.add_devices(1)
        fleet = DeviceFleet(
            sim.url,
            hook.url,
            SECRET,
            first_retry=2.0,
            max_retry=8.0,
            jitter=0.0,
            first_sync_grace=60.0,
            clock=clock,
        )
        yield sim, hook, fleet, clock, device
        fleet.stop()
    hook.server.shutdown()
    hook.server.server_close()


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

    # A deleted instance never reaches the device: it keeps (and reports) what its copy holds.
    put_ledger(sim, ids[2], {"blynk_token": TOKEN})
    fleet.step()
    delete_ledger(sim, ids[2])
    clock.now += 100
    fleet.step()
    assert hook.by_device()[ids[2]][-1] == f"v=1;token={fingerprint(TOKEN)};fw=1.0.0;synced=1"
    assert fleet.holding()[ids[2]] == fingerprint(TOKEN)
    # The cleared state does reach it (a transfer): it says it has none, and why.
    put_ledger(sim, ids[2], {"blynk_token": "", "state": "transferred"})
    fleet.step()
    assert hook.by_device()[ids[2]][-1] == "v=1;token=none;fw=1.0.0;synced=1;reason=transferred"


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


# ---- the firmware's Ledger rules ------------------------------------------------------------------------


@pytest.mark.parametrize("vector", LEDGER_VECTORS, ids=lambda v: v["name"])
def test_each_ledger_content_gives_the_report_and_data_use_the_firmware_gives(world, vector):
    sim, hook, fleet, _, ids = world
    put_ledger(sim, ids[2], vector["ledger"], mode="Replace")
    fleet.step()
    assert hook.by_device()[ids[2]] == [vector["status"]]
    assert (fleet.using()[ids[2]] is not None) is vector["sends_data"]
    assert bool(fleet.data_sent()[ids[2]]) is vector["sends_data"]


def test_a_revoke_drops_the_token_stops_its_data_and_reports_the_reason_until_a_new_one_comes(world):
    sim, hook, fleet, clock, ids = world
    put_ledger(sim, ids[2], ACTIVE)
    fleet.step()
    fleet.step()
    assert fleet.using()[ids[2]] == fingerprint(TOKEN)
    assert fleet.data_sent()[ids[2]] == {fingerprint(TOKEN): 2}

    put_ledger(sim, ids[2], {"blynk_token": "", "state": "revoked"})
    for _ in range(4):
        fleet.step()
        clock.now += 2.0
    assert fleet.holding()[ids[2]] is None and fleet.using()[ids[2]] is None
    assert fleet.data_sent()[ids[2]] == {fingerprint(TOKEN): 2}  # not one more under the revoked token
    reports = hook.by_device()[ids[2]]
    assert reports[-1] == "v=1;token=none;fw=1.0.0;synced=1;reason=revoked"
    assert reports.count(reports[-1]) >= 2  # it waits for a token, so it keeps asking
    assert TOKEN not in json.dumps(hook.posts)

    put_ledger(sim, ids[2], {"blynk_token": OTHER, "state": "active"})
    fleet.step()
    assert fleet.using()[ids[2]] == fingerprint(OTHER)
    assert hook.by_device()[ids[2]][-1] == f"v=1;token={fingerprint(OTHER)};fw=1.0.0;synced=1"


def test_a_deleted_instance_leaves_the_device_its_token_and_its_data(world):
    sim, hook, fleet, clock, ids = world
    put_ledger(sim, ids[3], ACTIVE)
    fleet.step()
    delete_ledger(sim, ids[3])
    clock.now += 100
    fleet.step()
    assert sim.ledger_data(ids[3]) is None
    assert fleet.holding()[ids[3]] == fleet.using()[ids[3]] == fingerprint(TOKEN)
    assert fleet.data_sent()[ids[3]] == {fingerprint(TOKEN): 2}
    assert len(hook.by_device()[ids[3]]) == 1  # its token, once: nothing new to say


def test_a_reconnect_and_every_sync_are_reported_even_when_nothing_changed(world):
    sim, hook, fleet, clock, ids = world
    put_ledger(sim, ids[2], ACTIVE)
    fleet.step()
    sim.set_online(ids[2], False)
    clock.now += 10
    fleet.step()
    assert len(hook.by_device()[ids[2]]) == 1  # offline: it publishes nothing
    assert fleet.holding()[ids[2]] == fingerprint(TOKEN) and fleet.using()[ids[2]] is None
    sim.set_online(ids[2], True)  # the connect syncs the (unchanged) instance
    fleet.step()
    put_ledger(sim, ids[2], ACTIVE)  # the same value written again: one more sync
    fleet.step()
    assert hook.by_device()[ids[2]] == [f"v=1;token={fingerprint(TOKEN)};fw=1.0.0;synced=1"] * 3
    assert fleet.using()[ids[2]] == fingerprint(TOKEN)


# ---- boots and the first sync ---------------------------------------------------------------------------


def test_after_a_boot_the_report_goes_out_at_once_and_data_waits_for_the_first_sync(slow_sync):
    sim, hook, fleet, clock, device = slow_sync
    put_ledger(sim, device, ACTIVE)
    clock.now += 5
    fleet.step()
    assert hook.by_device()[device] == [f"v=1;token={fingerprint(TOKEN)};fw=1.0.0;synced=1"]
    sent_before_boot = fleet.data_sent()[device][fingerprint(TOKEN)]

    sim.set_online(device, False)
    put_ledger(sim, device, {"blynk_token": "", "state": "revoked"})  # revoked while it was offline
    sim.reboot(device, online=True)  # boots with the old token in flash; the sync takes 5 s
    fleet.step()
    assert hook.by_device()[device][-1] == f"v=1;token={fingerprint(TOKEN)};fw=1.0.0;synced=0"
    assert fleet.holding()[device] == fingerprint(TOKEN) and fleet.using()[device] is None
    clock.now += 4.9
    fleet.step()
    assert fleet.using()[device] is None
    clock.now += 0.1  # the sync lands: the revoke reaches the device before it ever used the token
    fleet.step()
    assert hook.by_device()[device][-1] == "v=1;token=none;fw=1.0.0;synced=1;reason=revoked"
    assert fleet.holding()[device] is None
    assert fleet.data_sent()[device] == {fingerprint(TOKEN): sent_before_boot}


def test_a_sync_after_a_boot_opens_the_gate_for_the_token_it_confirms(slow_sync):
    sim, hook, fleet, clock, device = slow_sync
    put_ledger(sim, device, ACTIVE)
    clock.now += 5
    fleet.step()
    sim.reboot(device)
    fleet.step()
    assert fleet.using()[device] is None
    clock.now += 5
    fleet.step()
    assert fleet.using()[device] == fingerprint(TOKEN)
    assert [r[-1] for r in hook.by_device()[device]] == ["1", "0", "1"]  # synced=1, =0 at boot, =1


def test_without_any_sync_the_flash_token_is_used_once_the_grace_time_is_over(slow_sync):
    # Why a delete cannot revoke: the instance is gone, no sync comes, and after the firmware's
    # grace time the device falls back on its flash copy.
    sim, _hook, fleet, clock, device = slow_sync
    put_ledger(sim, device, ACTIVE)
    clock.now += 5
    fleet.step()
    delete_ledger(sim, device)
    sim.reboot(device)
    fleet.step()
    clock.now += 59
    fleet.step()
    assert fleet.using()[device] is None
    clock.now += 1
    fleet.step()
    assert fleet.using()[device] == fingerprint(TOKEN)


def test_a_token_switched_twice_quickly_reaches_the_device_as_the_last_one(slow_sync):
    sim, hook, fleet, clock, device = slow_sync
    put_ledger(sim, device, ACTIVE)
    clock.now += 2
    put_ledger(sim, device, {"blynk_token": OTHER, "state": "active"})
    fleet.step()
    assert fleet.holding()[device] is None  # nothing synced yet
    clock.now += 3
    fleet.step()
    assert fleet.holding()[device] == fleet.using()[device] == fingerprint(OTHER)
    assert fingerprint(TOKEN) not in json.dumps(hook.posts) and fleet.data_sent()[device] == {
        fingerprint(OTHER): 1
    }
