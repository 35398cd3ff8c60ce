"""The Particle Cloud simulator, pinned to the API shapes of REFERENCE.md with plain HTTP requests.

The client and the flow tests trust the simulator; these tests are why they may.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.support.factories import ManualClock
from tokenflow_local.particle_sim import ROUTE_DEVICE, ROUTE_DEVICES, ROUTE_INSTANCE, ParticleSimulator

LEDGER = "blynk-tokens-c2d"
DEVICE_FIELDS = {
    "id",
    "name",
    "online",
    "last_heard",
    "platform_id",
    "product_id",
    "firmware_version",
    "development",
    "quarantined",
    "denied",
    "groups",
    "serial_number",
}


@pytest.fixture
def sim():
    with ParticleSimulator(max_per_page=40) as simulator:
        yield simulator


@pytest.fixture
def http(sim):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {sim.access_token}"
    yield session
    session.close()


def instance_url(sim: ParticleSimulator, device: str, prefix: str = "/v1") -> str:
    return f"{sim.url}{prefix}/ledgers/{LEDGER}/instances/{device}"


def put(http: requests.Session, sim: ParticleSimulator, device: str, data: dict) -> None:
    answer = http.put(
        instance_url(sim, device), params={"set_mode": "Merge"}, json={"instance": {"data": data}}
    )
    assert answer.status_code == 200, answer.text


# ---- devices ----------------------------------------------------------------------------------------


def test_device_listing_pages_with_meta_and_the_documented_fields(sim, http):
    ids = sim.add_devices(55, quarantined=1, denied=1)
    devices_url = f"{sim.url}/v1/products/{sim.product}/devices"

    first = http.get(devices_url, timeout=5).json()
    assert first["meta"] == {"page": 1, "per_page": 25, "total_pages": 3}  # default per_page 25
    assert [d["id"] for d in first["devices"]] == ids[:25]
    device = first["devices"][0]
    assert set(device) >= DEVICE_FIELDS
    assert len(device["id"]) == 24 and int(device["id"], 16) >= 0 and device["id"] == device["id"].lower()
    assert device["product_id"] == sim.product_id
    assert (device["quarantined"], device["denied"]) == (True, False)
    assert (first["devices"][1]["quarantined"], first["devices"][1]["denied"]) == (False, True)
    assert first["devices"][2]["quarantined"] is False and first["devices"][2]["denied"] is False

    last = http.get(devices_url, params={"page": 3, "per_page": 20}, timeout=5).json()
    assert last["meta"] == {"page": 3, "per_page": 20, "total_pages": 3}
    assert [d["id"] for d in last["devices"]] == ids[40:]
    capped = http.get(devices_url, params={"per_page": 1000}, timeout=5).json()
    assert capped["meta"]["per_page"] == 40 and len(capped["devices"]) == 40
    beyond = http.get(devices_url, params={"page": 9}, timeout=5).json()
    assert beyond["devices"] == [] and beyond["meta"]["total_pages"] == 3
    by_id = http.get(f"{sim.url}/v1/products/{sim.product_id}/devices", timeout=5).json()
    assert by_id["devices"][0]["id"] == ids[0]


def test_one_product_device_is_served_at_the_top_level_with_its_flags(sim, http):
    quarantined, denied, plain = sim.add_devices(3, quarantined=1, denied=1)
    url = f"{sim.url}/v1/products/{sim.product}/devices"
    answers = {d: http.get(f"{url}/{d}", timeout=5) for d in (quarantined, denied, plain)}
    assert all(a.status_code == 200 for a in answers.values())
    bodies = {d: a.json() for d, a in answers.items()}
    assert all(set(b) >= DEVICE_FIELDS for b in bodies.values())  # the device object itself, no wrapper
    assert [(b["id"], b["quarantined"], b["denied"]) for b in bodies.values()] == [
        (quarantined, True, False),
        (denied, False, True),
        (plain, False, False),
    ]
    listed = http.get(url, timeout=5).json()["devices"]
    assert bodies[plain] == listed[2]  # the same fields as the listing
    assert (
        http.get(f"{sim.url}/v1/products/{sim.product_id}/devices/{plain}", timeout=5).json()["id"] == plain
    )
    assert sim.request_count("GET", ROUTE_DEVICE) == 4


def test_a_product_device_lookup_answers_404_401_and_405_like_the_listing(sim, http):
    [device] = sim.add_devices(1)
    url = f"{sim.url}/v1/products/{sim.product}/devices"
    missing = http.get(f"{url}/{'0' * 24}", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"ok": False, "error": "Device not found."}
    sim.remove_device(device)
    assert http.get(f"{url}/{device}", timeout=5).status_code == 404
    [device] = sim.add_devices(1)
    assert http.get(f"{sim.url}/v1/products/other/devices/{device}", timeout=5).status_code == 404
    assert requests.get(f"{url}/{device}", timeout=5).status_code == 401
    assert (
        requests.get(f"{url}/{device}", headers={"Authorization": "Bearer no"}, timeout=5).status_code == 401
    )
    assert http.put(f"{url}/{device}", json={}, timeout=5).status_code == 405
    sim.set_faults(error_rate=1.0, error_statuses=(403,))
    assert http.get(f"{url}/{device}", timeout=5).status_code == 403


def test_the_listing_applies_the_filters_the_official_sdk_sends(sim, http):
    ids = sim.add_devices(6)
    sim.set_device(ids[1], name="Kitchen-Pump", groups=["beta"])
    sim.set_device(ids[4], name="kitchen-spare", groups=["beta", "field"])
    sim.set_device(ids[5], groups=["field"])
    url = f"{sim.url}/v1/products/{sim.product}/devices"

    def listed(**params: str) -> list[str]:
        answer = http.get(url, params=params, timeout=5)
        assert answer.status_code == 200, answer.text
        return [d["id"] for d in answer.json()["devices"]]

    assert listed(deviceId=ids[3][-6:]) == [ids[3]]  # partial match
    assert listed(deviceId=ids[3][-6:].upper()) == [ids[3]]
    assert listed(deviceName="KITCHEN") == [ids[1], ids[4]]
    assert listed(groups="field") == [ids[4], ids[5]]
    assert listed(groups="beta,field") == [ids[1], ids[4], ids[5]]
    assert listed(groups="nobody") == []
    assert listed(serialNumber="0000003") == [ids[2]]
    assert listed(sortAttr="deviceId", sortDir="desc") == ids[::-1]
    assert listed(sortAttr="deviceName", deviceName="kitchen") == [ids[1], ids[4]]  # "K" < "k"
    assert listed(sortAttr="deviceName", sortDir="desc", groups="beta") == [ids[4], ids[1]]
    assert listed() == ids  # no filter: every device, in the order they were added
    page = http.get(url, params={"groups": "beta,field", "per_page": 2, "page": 2}, timeout=5).json()
    assert [d["id"] for d in page["devices"]] == [ids[5]] and page["meta"]["total_pages"] == 2
    assert http.get(url, params={"sortAttr": "color"}, timeout=5).status_code == 400
    assert http.get(url, params={"sortDir": "up"}, timeout=5).status_code == 400


def test_device_ids_names_and_serials_are_deterministic_and_unique():
    with ParticleSimulator() as one, ParticleSimulator() as two:
        assert one.add_devices(5) == two.add_devices(5)
        removed = one.add_device(name="spare", serial_number="SN-1")
        one.remove_device(removed)
        after = one.add_device()
    assert after != removed and len({d["id"] for d in one.devices()}) == 6
    assert [d["name"] for d in one.devices()][:2] == ["pump-0001", "pump-0002"]
    assert len({d["serial_number"] for d in one.devices()}) == 6


def test_a_bad_token_answers_401_and_unknown_things_404(sim, http):
    [device] = sim.add_devices(1)
    refused = requests.get(instance_url(sim, device), headers={"Authorization": "Bearer nope"}, timeout=5)
    assert refused.status_code == 401
    assert refused.json() == {
        "error": "invalid_token",
        "error_description": "The access token provided is invalid.",
    }
    assert requests.get(f"{sim.url}/v1/products/{sim.product}/devices", timeout=5).status_code == 401
    assert http.get(f"{sim.url}/v1/products/nope/devices", timeout=5).status_code == 404
    assert http.get(instance_url(sim, "0" * 24), timeout=5).status_code == 404
    assert (
        http.put(instance_url(sim, "0" * 24), json={"instance": {"data": {}}}, timeout=5).status_code == 404
    )
    assert http.get(instance_url(sim, device, "/v1/orgs/other-org"), timeout=5).status_code == 404
    assert http.get(instance_url(sim, device, "/v1/products/other"), timeout=5).status_code == 404
    assert http.get(f"{sim.url}/v1/devices", timeout=5).status_code == 404


# ---- Ledger instances -------------------------------------------------------------------------------


def test_ledger_put_replace_and_merge_get_shape_and_delete(sim, http):
    [device] = sim.add_devices(1)
    url = instance_url(sim, device, f"/v1/orgs/{sim.org}")
    put = http.put(url, json={"instance": {"data": {"a": 1, "b": 2}}}, timeout=5)  # Replace: the default
    assert put.status_code == 200
    created = put.json()["instance"]["created_at"]
    assert http.put(url, params={"set_mode": "Merge"}, json={"instance": {"data": {"b": 3}}}, timeout=5).ok

    instance = http.get(url, timeout=5).json()["instance"]
    assert set(instance) == {"name", "scope", "data", "size_bytes", "created_at", "updated_at"}
    assert instance["name"] == LEDGER
    assert instance["scope"] == {"type": "Device", "value": device}
    assert instance["data"] == {"a": 1, "b": 3}
    assert instance["size_bytes"] > 0
    assert instance["created_at"] == created and instance["updated_at"] >= created

    assert http.put(url, params={"set_mode": "Replace"}, json={"instance": {"data": {"c": 4}}}, timeout=5).ok
    assert sim.ledger_data(device, prefix=f"/v1/orgs/{sim.org}") == {"c": 4}
    assert sim.ledger_data(device) is None  # each prefix keeps its own instances
    assert sim.ledger_writes(device) == 3

    assert http.delete(url, timeout=5).status_code == 200
    assert http.get(url, timeout=5).status_code == 404
    assert http.delete(url, timeout=5).status_code == 404


def test_ledger_writes_are_checked(sim, http):
    [device] = sim.add_devices(1)
    url = instance_url(sim, device)
    assert http.put(url, json={"data": {"a": 1}}, timeout=5).status_code == 400  # not under "instance"
    assert (
        http.put(url, params={"set_mode": "Append"}, json={"instance": {"data": {}}}, timeout=5).status_code
        == 400
    )
    too_big = {"instance": {"data": {"blob": "x" * 17_000}}}
    assert http.put(url, json=too_big, timeout=5).status_code == 400
    bad_name = f"{sim.url}/v1/ledgers/Not_A_Ledger/instances/{device}"
    assert http.put(bad_name, json={"instance": {"data": {}}}, timeout=5).status_code == 400
    assert sim.ledger_writes(device) == 0


def test_ledger_instances_are_listed_per_prefix_with_paging(sim, http):
    ids = sim.add_devices(5)
    for device in ids:
        http.put(
            instance_url(sim, device, f"/v1/orgs/{sim.org}"),
            json={"instance": {"data": {"k": device}}},
            timeout=5,
        )
    http.put(instance_url(sim, ids[0]), json={"instance": {"data": {"k": "sandbox"}}}, timeout=5)
    listing_url = f"{sim.url}/v1/orgs/{sim.org}/ledgers/{LEDGER}/instances"
    page = http.get(listing_url, params={"per_page": 2, "page": 3}, timeout=5).json()
    assert page["meta"] == {"page": 3, "per_page": 2, "total_pages": 3}
    assert [i["scope"]["value"] for i in page["instances"]] == [ids[4]]
    everything = http.get(listing_url, params={"per_page": 100}, timeout=5).json()["instances"]
    assert [i["data"]["k"] for i in everything] == ids
    sim.meta_total_key = "total_page"  # the other spelling some answers use
    assert http.get(listing_url, timeout=5).json()["meta"]["total_page"] == 1


# ---- the devices' own Ledger copies (Device OS) -------------------------------------------------------


def test_an_online_device_receives_every_write_and_keeps_its_copy_when_the_instance_is_deleted(sim, http):
    [device] = sim.add_devices(1)
    assert sim.device_ledger(device) is None and sim.device_view(device)["synced_since_boot"] is False
    put(http, sim, device, {"blynk_token": "one", "state": "active"})
    assert sim.device_ledger(device) == {"blynk_token": "one", "state": "active"}
    view = sim.device_view(device)
    assert view["synced_since_boot"] is True and view["synced_at"] and view["syncs"] == 1
    put(http, sim, device, {"blynk_token": "", "state": "revoked"})
    assert sim.device_ledger(device) == {"blynk_token": "", "state": "revoked"}
    put(http, sim, device, {"blynk_token": "two", "state": "active"})

    assert http.delete(instance_url(sim, device), timeout=5).status_code == 200
    assert sim.ledger_data(device) is None  # gone from the cloud ...
    assert sim.device_ledger(device) == {"blynk_token": "two", "state": "active"}  # ... not from the device
    sim.set_online(device, False)
    sim.set_online(device, True)  # a reconnect finds no instance: nothing changes on the device
    assert sim.device_ledger(device) == {"blynk_token": "two", "state": "active"}
    assert sim.device_view(device)["syncs"] == 3


def test_an_offline_device_gets_the_latest_write_at_its_next_connect(sim, http):
    [device] = sim.add_devices(1)
    put(http, sim, device, {"blynk_token": "old", "state": "active"})
    sim.set_online(device, False)
    put(http, sim, device, {"blynk_token": "", "state": "transferred"})
    put(http, sim, device, {"blynk_token": "", "state": "revoked"})
    assert sim.device_ledger(device) == {"blynk_token": "old", "state": "active"}  # its flash, unchanged
    assert sim.devices()[0]["online"] is False
    sim.set_online(device, True)
    assert sim.device_ledger(device) == {"blynk_token": "", "state": "revoked"}
    assert sim.device_view(device)["syncs"] == 2  # one sync at the connect carries the latest


def test_a_sync_delay_holds_a_change_back_and_a_disconnect_loses_it_until_the_next_connect(http):
    clock = ManualClock(100.0)  # the simulator's clock for sync delays
    with ParticleSimulator(sync_delay=5.0, clock=clock) as sim:
        http.headers["Authorization"] = f"Bearer {sim.access_token}"
        [device] = sim.add_devices(1)
        put(http, sim, device, {"blynk_token": "a"})
        assert sim.device_ledger(device) is None
        clock.now += 3
        put(http, sim, device, {"blynk_token": "b"})  # rides along with the sync on its way
        clock.now += 2
        assert sim.device_ledger(device) == {"blynk_token": "b"} and sim.device_view(device)["syncs"] == 1

        put(http, sim, device, {"blynk_token": "c"})
        clock.now += 1
        sim.set_online(device, False)  # gone before the sync landed
        clock.now += 10
        assert sim.device_ledger(device) == {"blynk_token": "b"}
        sim.set_online(device, True)
        clock.now += 4.9
        assert sim.device_ledger(device) == {"blynk_token": "b"}
        clock.now += 0.1
        assert sim.device_ledger(device) == {"blynk_token": "c"}


def test_a_long_poll_of_the_device_copies_wakes_when_a_delayed_sync_arrives(http):
    """The simulated fleet long-polls the device copies; a write whose sync to the device comes
    ``sync_delay`` later wakes the poll then, not at the poll's own timeout."""
    with ParticleSimulator(sync_delay=0.3) as sim:
        http.headers["Authorization"] = f"Bearer {sim.access_token}"
        [device] = sim.add_devices(1)
        since = sim.version
        polled: dict = {}

        def poll() -> None:
            started = time.monotonic()
            polled["answer"] = sim.wait_for_changes(since, timeout=10.0)
            polled["seconds"] = time.monotonic() - started

        waiter = threading.Thread(target=poll)
        waiter.start()
        time.sleep(0.2)  # the poll is waiting, with no sync on its way
        put(http, sim, device, {"blynk_token": "one"})
        waiter.join(timeout=15)

        version, views = polled["answer"]
        assert version > since
        assert [(v["device_id"], v["data"]) for v in views] == [(device, {"blynk_token": "one"})]
        assert polled["seconds"] < 2.0  # the sync was due 0.3 s after the write, the timeout 10 s


def test_a_reboot_keeps_the_flash_copy_and_waits_for_the_first_sync_since_boot(http):
    clock = ManualClock(100.0)  # the simulator's clock for sync delays
    with ParticleSimulator(sync_delay=2.0, clock=clock) as sim:
        http.headers["Authorization"] = f"Bearer {sim.access_token}"
        [device] = sim.add_devices(1)
        put(http, sim, device, {"blynk_token": "held"})
        clock.now += 2
        assert sim.device_view(device)["synced_since_boot"] is True

        assert sim.reboot(device) == 2  # online: it reconnects and syncs after the delay
        view = sim.device_view(device)
        assert (view["boot"], view["data"], view["synced_since_boot"]) == (2, {"blynk_token": "held"}, False)
        clock.now += 2
        assert sim.device_view(device)["synced_since_boot"] is True

        sim.reboot(device, online=False)  # boots without a connection: reads its flash only
        put(http, sim, device, {"blynk_token": "", "state": "revoked"})
        clock.now += 60
        view = sim.device_view(device)
        assert (view["boot"], view["online"], view["synced_since_boot"]) == (3, False, False)
        assert view["data"] == {"blynk_token": "held"}  # the stale token: only a sync replaces it
        sim.set_online(device, True)
        clock.now += 2
        view = sim.device_view(device)
        assert view["data"] == {"blynk_token": "", "state": "revoked"} and view["synced_since_boot"] is True


def test_a_quarantined_device_gets_no_sync_until_it_is_released(sim, http):
    [device] = sim.add_devices(1, quarantined=1)
    put(http, sim, device, {"blynk_token": "x"})
    assert sim.device_ledger(device) is None
    sim.set_device(device, quarantined=False)
    assert sim.device_ledger(device) == {"blynk_token": "x"}
    sim.set_device(device, name="renamed")  # no new connect, no new sync
    assert sim.device_view(device)["syncs"] == 1
    with pytest.raises(ValueError):
        sim.set_device(device, online=True)


def test_the_control_api_reads_every_device_copy_and_moves_devices(sim, http):
    ids = sim.add_devices(3, quarantined=1)
    for device in ids:
        put(http, sim, device, {"blynk_token": device[-4:]})
    control = f"{sim.url}/_sim"
    answer = requests.get(f"{control}/device-ledgers", timeout=5).json()["devices"]
    assert [(d["device_id"], d["data"], d["quarantined"]) for d in answer] == [
        (ids[0], None, True),
        (ids[1], {"blynk_token": ids[1][-4:]}, False),
        (ids[2], {"blynk_token": ids[2][-4:]}, False),
    ]
    assert set(answer[1]) >= {"online", "boot", "synced_at", "synced_since_boot", "prefix", "ledger"}
    other = requests.get(f"{control}/device-ledgers", params={"ledger": "other"}, timeout=5).json()
    assert [d["data"] for d in other["devices"]] == [None, None, None]

    off = requests.post(f"{control}/devices/{ids[1]}/online", json={"online": False}, timeout=5)
    assert off.status_code == 200 and off.json()["device"]["online"] is False
    put(http, sim, ids[1], {"blynk_token": "", "state": "revoked"})
    rebooted = requests.post(f"{control}/devices/{ids[1]}/reboot", json={}, timeout=5).json()["device"]
    assert (rebooted["boot"], rebooted["online"], rebooted["data"]) == (
        2,
        False,
        {"blynk_token": ids[1][-4:]},
    )
    on = requests.post(f"{control}/devices/{ids[1]}/reboot", json={"online": True}, timeout=5).json()
    assert on["device"]["data"] == {"blynk_token": "", "state": "revoked"} and on["device"]["boot"] == 3
    released = requests.post(f"{control}/devices/{ids[0]}", json={"quarantined": False}, timeout=5)
    assert released.json()["device"]["data"] == {"blynk_token": ids[0][-4:]}

    assert requests.post(f"{control}/ledger-sync", json={"delay_seconds": 30}, timeout=5).json()["ok"]
    put(http, sim, ids[2], {"blynk_token": "later"})
    assert sim.device_ledger(ids[2]) == {"blynk_token": ids[2][-4:]}
    assert (
        requests.post(f"{control}/devices/{'0' * 24}/online", json={"online": True}, timeout=5).status_code
        == 404
    )
    assert (
        requests.post(f"{control}/devices/{ids[2]}/online", json={"online": "yes"}, timeout=5).status_code
        == 400
    )
    assert requests.post(f"{control}/devices/{ids[2]}", json={"color": "red"}, timeout=5).status_code == 400
    assert sim.stats()["device_syncs"] == 4  # two writes, the reconnect, the release; "later" is on its way


# ---- rate limit and faults --------------------------------------------------------------------------


def test_the_rate_limit_answers_429_with_retry_after_and_counts_refused_requests(sim, http):
    sim.add_devices(1)
    sim.set_rate_limit(3, 60)
    devices_url = f"{sim.url}/v1/products/{sim.product}/devices"
    answers = [http.get(devices_url, timeout=5) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    assert "error" in answers[3].json()
    stats = sim.stats()
    assert stats["total"] == 5 and stats["statuses"] == {"200": 3, "429": 2}
    assert stats["requests"] == {f"GET {ROUTE_DEVICES}": 5}

    sim.rate_limit_retry_after = False
    assert "Retry-After" not in http.get(devices_url, timeout=5).headers


def test_a_fixed_window_opens_again_when_the_window_ends(sim, http):
    sim.add_devices(1)
    sim.set_rate_limit(2, 0.4, mode="fixed")
    devices_url = f"{sim.url}/v1/products/{sim.product}/devices"
    first = [http.get(devices_url, timeout=5).status_code for _ in range(3)]
    time.sleep(0.45)
    second = [http.get(devices_url, timeout=5).status_code for _ in range(3)]
    assert first == second == [200, 200, 429]
    sim.set_rate_limit(None)
    assert all(http.get(devices_url, timeout=5).ok for _ in range(5))


def test_injected_errors_latency_and_auth_failure(sim, http):
    [device] = sim.add_devices(1)
    sim.set_faults(error_rate=1.0, error_statuses=(503,))
    assert http.get(instance_url(sim, device), timeout=5).status_code == 503
    sim.set_faults(error_rate=1.0, error_statuses=(429,), retry_after=4)
    assert http.get(instance_url(sim, device), timeout=5).headers["Retry-After"] == "4"
    sim.set_faults(latency=0.2)
    started = time.monotonic()
    assert http.put(instance_url(sim, device), json={"instance": {"data": {"a": 1}}}, timeout=5).ok
    assert time.monotonic() - started >= 0.2
    sim.set_faults(auth_failure=True)  # even the right token is refused
    assert http.get(instance_url(sim, device), timeout=5).status_code == 401


def test_an_error_rate_is_reproducible_with_a_seed(sim, http):
    sim.add_devices(1)
    devices_url = f"{sim.url}/v1/products/{sim.product}/devices"
    runs = []
    for _ in range(2):
        sim.set_faults(error_rate=0.5, error_statuses=(500, 502), seed=42)
        runs.append([http.get(devices_url, timeout=5).status_code for _ in range(30)])
    assert runs[0] == runs[1]
    assert {200, 500, 502} <= set(runs[0])


def test_timeouts_hang_past_the_read_timeout_or_drop_the_connection(sim, http):
    [device] = sim.add_devices(1)
    sim.set_faults(timeout_rate=1.0, timeout_seconds=0.6)
    with pytest.raises(requests.ReadTimeout):
        http.put(instance_url(sim, device), json={"instance": {"data": {"a": 1}}}, timeout=(1, 0.2))
    assert sim.ledger_data(device) is None  # the request never took effect
    sim.set_faults(timeout_rate=1.0, timeout_seconds=0)
    with pytest.raises(requests.ConnectionError):
        http.get(instance_url(sim, device), timeout=5)
    # A lost answer to a write that landed: the client cannot tell it from one that did not.
    sim.set_faults(timeout_rate=1.0, timeout_seconds=0, timeout_applied=True)
    with pytest.raises(requests.ConnectionError):
        http.put(instance_url(sim, device), json={"instance": {"data": {"a": 2}}}, timeout=5)
    assert sim.ledger_data(device) == {"a": 2}
    sim.set_faults()
    assert http.get(instance_url(sim, device), timeout=5).ok


# ---- control API and the command line -----------------------------------------------------------------


def test_the_control_api_drives_the_simulator_without_auth(sim, http):
    added = requests.post(
        f"{sim.url}/_sim/devices", json={"count": 3, "quarantined": 1, "denied": 1}, timeout=5
    )
    ids = added.json()["ids"]
    assert len(ids) == 3
    listed = requests.get(f"{sim.url}/_sim/devices", timeout=5).json()["devices"]
    assert [(d["quarantined"], d["denied"]) for d in listed] == [(True, False), (False, True), (False, False)]

    http.put(instance_url(sim, ids[2]), json={"instance": {"data": {"x": 1}}}, timeout=5)
    ledgers = requests.get(f"{sim.url}/_sim/ledgers", timeout=5).json()["instances"]
    assert ledgers == [{"prefix": "/v1", "ledger": LEDGER, "device_id": ids[2], "data": {"x": 1}}]
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
    assert stats["requests"] == {f"PUT {ROUTE_INSTANCE}": 1}
    assert stats["ledger_writes"] == 1 and stats["devices"] == 3

    faults = {"error_rate": 1.0, "error_statuses": [502], "seed": 1}
    assert requests.post(f"{sim.url}/_sim/faults", json=faults, timeout=5).ok
    assert http.get(instance_url(sim, ids[2]), timeout=5).status_code == 502
    assert requests.post(f"{sim.url}/_sim/faults", json={"bogus": 1}, timeout=5).status_code == 400
    assert requests.post(f"{sim.url}/_sim/faults", json={}, timeout=5).ok
    limit = {"requests": 1, "window_seconds": 60, "mode": "fixed"}
    assert requests.post(f"{sim.url}/_sim/rate-limit", json=limit, timeout=5).ok
    assert [http.get(instance_url(sim, ids[2]), timeout=5).status_code for _ in range(2)] == [200, 429]
    assert requests.post(f"{sim.url}/_sim/reset-stats", timeout=5).ok
    assert sim.stats()["total"] == 0
    assert requests.get(f"{sim.url}/_sim/nothing", timeout=5).status_code == 404


def test_the_simulator_runs_standalone_from_the_command_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenflow_local.particle_sim", "--port", str(port), "--devices", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                stats = requests.get(f"http://127.0.0.1:{port}/_sim/stats", timeout=1).json()
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.05)
        assert stats["devices"] == 7
        listing = requests.get(
            f"http://127.0.0.1:{port}/v1/products/tokenflow-demo/devices",
            headers={"Authorization": "Bearer sim-access-token"},
            timeout=5,
        ).json()
        assert len(listing["devices"]) == 7 and listing["devices"][0]["quarantined"] is True
    finally:
        process.terminate()
        process.wait(timeout=10)
