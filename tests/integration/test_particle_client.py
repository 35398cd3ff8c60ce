"""The real Particle client against the simulator over HTTP: paging, Ledger paths, retries, errors."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
import requests

from tests.support.factories import BLYNK_DOC_TOKEN
from tokenflow import wiring
from tokenflow.particle import (
    Device,
    ParticleAuthError,
    ParticleBadRequest,
    ParticleClient,
    ParticleError,
    ParticleForbidden,
    ParticleNotFound,
    ParticleUnavailable,
)
from tokenflow.settings import Settings
from tokenflow_local.particle_sim import ROUTE_INSTANCE, ParticleSimulator

TOKEN = BLYNK_DOC_TOKEN
ACTIVE = {"blynk_token": TOKEN, "state": "active"}  # what a delivered token's Ledger instance holds
ACCESS_TOKEN = "particle-access-token-0123456789abcdef"


@pytest.fixture
def sim():
    with ParticleSimulator(access_token=ACCESS_TOKEN, max_per_page=50) as simulator:
        yield simulator


def client(sim: ParticleSimulator, waits: list[float] | None = None, **kwargs) -> ParticleClient:
    """A client whose backoff sleeps are recorded instead of slept."""
    sleeps = waits if waits is not None else []
    kwargs.setdefault("timeout", (1.0, 1.0))
    return ParticleClient(sim.url, sim.access_token, sim.product, sleep=sleeps.append, **kwargs)


# ---- devices ----------------------------------------------------------------------------------------


def test_every_page_of_the_product_is_read(sim):
    ids = sim.add_devices(130, quarantined=2, denied=1)
    particle = client(sim)
    pages = list(particle.iter_device_pages(per_page=50))
    assert [(p.page, p.total_pages, len(p.devices)) for p in pages] == [(1, 3, 50), (2, 3, 50), (3, 3, 30)]
    assert [d.id for p in pages for d in p.devices] == ids
    assert [(d.quarantined, d.denied) for d in pages[0].devices[:4]] == [
        (True, False),
        (True, False),
        (False, True),
        (False, False),
    ]
    first = pages[0].devices[0]
    assert isinstance(first, Device)
    assert (first.name, first.serial_number, first.platform_id, first.product_id) == (
        "pump-0001",
        "P046AB0000001",
        32,
        sim.product_id,
    )
    assert first.online is True and first.development is False and first.last_heard
    assert particle.requests_sent == 3


def test_per_page_above_the_server_cap_still_reads_everything(sim):
    ids = sim.add_devices(120)
    pages = list(client(sim).iter_device_pages(per_page=100))  # the simulator serves 50 at most
    assert [len(p.devices) for p in pages] == [50, 50, 20]
    assert [d.id for p in pages for d in p.devices] == ids


def test_the_other_spelling_of_total_pages_and_a_missing_meta_are_handled(sim):
    ids = sim.add_devices(70)
    sim.meta_total_key = "total_page"
    assert [d.id for p in client(sim).iter_device_pages(per_page=50) for d in p.devices] == ids
    sim.meta_total_key = "unknown"  # no page count at all: read until an empty page
    particle = client(sim)
    assert [d.id for p in particle.iter_device_pages(per_page=50) for d in p.devices] == ids
    assert particle.requests_sent == 3


def test_an_empty_product_is_one_empty_page(sim):
    pages = list(client(sim).iter_device_pages())
    assert [(p.devices, p.page) for p in pages] == [([], 1)]


def test_a_product_name_is_quoted_into_the_path():
    with ParticleSimulator(product="acme widgets/v2") as sim:
        [device] = sim.add_devices(1)
        particle = client(sim)
        assert [d.id for p in particle.iter_device_pages() for d in p.devices] == [device]
        assert particle.get_product_device(device).id == device


# ---- one product device -----------------------------------------------------------------------------


def test_a_product_device_is_looked_up_with_its_quarantine_and_deny_flags(sim):
    quarantined, denied, plain = sim.add_devices(3, quarantined=1, denied=1)
    sim.set_device(plain, groups=["field", "beta"])
    sim.set_online(plain, False)
    particle = client(sim)
    looked_up = {d: particle.get_product_device(d) for d in (quarantined, denied, plain)}
    assert [(d.id, d.quarantined, d.denied) for d in looked_up.values()] == [
        (quarantined, True, False),
        (denied, False, True),
        (plain, False, False),
    ]
    device = looked_up[plain]
    assert isinstance(device, Device)
    assert (device.name, device.platform_id, device.product_id, device.online) == (
        "pump-0003",
        32,
        sim.product_id,
        False,
    )
    assert device.groups == ("field", "beta")
    assert particle.requests_sent == 3
    by_number = ParticleClient(sim.url, sim.access_token, str(sim.product_id), sleep=lambda s: None)
    assert by_number.get_product_device(plain) == device  # the product id works as well as the slug


def test_an_id_the_product_does_not_hold_is_none_without_retries(sim):
    [kept, removed] = sim.add_devices(2)
    sim.remove_device(removed)
    waits: list[float] = []
    particle = client(sim, waits)
    assert particle.get_product_device("0" * 24) is None
    assert particle.get_product_device(removed) is None
    assert particle.get_product_device(kept) is not None
    assert particle.requests_sent == 3 and waits == []
    with pytest.raises(ParticleBadRequest):
        particle.get_product_device("../" + kept)  # checked before any request
    assert particle.requests_sent == 3


def test_a_product_device_lookup_is_retried_and_refusals_are_typed(sim):
    [device] = sim.add_devices(1)
    sim.set_faults(error_rate=1.0, error_statuses=(500, 503))
    waits: list[float] = []
    particle = client(sim, waits, max_retries=3)
    with pytest.raises(ParticleUnavailable):  # not "no such device": the caller must try again
        particle.get_product_device(device)
    assert particle.requests_sent == 4 and len(waits) == 3
    sim.set_faults()
    assert particle.get_product_device(device).id == device
    refused = ParticleClient(sim.url, "wrong-access-token-123", sim.product, sleep=lambda s: None)
    with pytest.raises(ParticleAuthError):
        refused.get_product_device(device)


# ---- Ledger -----------------------------------------------------------------------------------------


def test_a_cleared_ledger_holds_no_token_and_the_reason_and_keeps_other_keys(sim):
    revoked, moved = sim.add_devices(2)
    requests.put(
        f"{sim.url}/v1/ledgers/blynk-tokens-c2d/instances/{revoked}",
        json={"instance": {"data": {"other": "kept"}}},
        headers={"Authorization": f"Bearer {sim.access_token}"},
        timeout=5,
    )
    particle = client(sim)
    particle.set_ledger_token(revoked, TOKEN)
    particle.set_ledger_token(moved, TOKEN)
    particle.clear_ledger_token(revoked, "revoked")
    particle.clear_ledger_token(moved, "transferred")
    assert sim.ledger_data(revoked) == {"other": "kept", "blynk_token": "", "state": "revoked"}
    assert sim.ledger_data(moved) == {"blynk_token": "", "state": "transferred"}
    assert sim.request_count("PUT", ROUTE_INSTANCE) == 5
    assert TOKEN not in str(particle.get_ledger_instance(moved))


def test_a_revoke_reaches_the_device_where_a_deleted_instance_does_not(sim):
    deleted, cleared = sim.add_devices(2)
    particle = client(sim)
    for device in (deleted, cleared):
        particle.set_ledger_token(device, TOKEN)
        assert sim.device_ledger(device) == ACTIVE  # online: the device's own copy synced
    assert particle.delete_ledger_instance(deleted) is True
    particle.clear_ledger_token(cleared, "revoked")
    assert sim.ledger_data(deleted) is None
    assert sim.device_ledger(deleted) == ACTIVE  # the device still holds the token
    assert sim.device_ledger(cleared) == {"blynk_token": "", "state": "revoked"}


def test_only_the_two_cleared_reasons_are_written(sim):
    [device] = sim.add_devices(1)
    particle = client(sim)
    for reason in ("active", "", "deleted", "Revoked", None):
        with pytest.raises(ValueError):
            particle.clear_ledger_token(device, reason)
    with pytest.raises(ParticleBadRequest):
        particle.clear_ledger_token("0" * 23, "revoked")
    assert particle.requests_sent == 0 and sim.stats()["total"] == 0


def test_a_clear_is_retried_like_a_delivery_and_a_missing_device_is_typed(sim):
    [device] = sim.add_devices(1)
    sim.set_faults(error_rate=0.6, error_statuses=(500, 429, 503), seed=11)
    waits: list[float] = []
    particle = client(sim, waits, max_retries=10)
    particle.clear_ledger_token(device, "transferred")
    assert sim.ledger_data(device) == {"blynk_token": "", "state": "transferred"}
    assert sim.ledger_writes(device) == 1 and len(waits) == particle.requests_sent - 1 > 0
    sim.set_faults()
    with pytest.raises(ParticleNotFound):
        particle.clear_ledger_token("0" * 24, "revoked")


@pytest.mark.parametrize(
    ("scope", "prefix"),
    [("sandbox", "/v1"), ("org", "/v1/orgs/tokenflow-org")],
)
def test_the_ledger_is_written_under_the_prefix_of_its_scope(sim, scope, prefix):
    devices = sim.add_devices(3)
    particle = client(sim, scope=scope, org="tokenflow-org")
    assert particle.ledger_prefix == prefix
    for device in devices:
        particle.set_ledger_token(device, TOKEN)
    assert all(sim.ledger_data(d, prefix=prefix) == ACTIVE for d in devices)
    others = {"/v1", "/v1/orgs/tokenflow-org"} - {prefix}
    assert all(sim.ledger_data(devices[0], prefix=p) is None for p in others)
    instance = particle.get_ledger_instance(devices[0])
    assert instance["data"] == ACTIVE
    assert instance["scope"] == {"type": "Device", "value": devices[0]}
    assert [i["scope"]["value"] for i in particle.list_ledger_instances(per_page=2)] == devices
    assert particle.delete_ledger_instance(devices[0]) is True
    assert particle.delete_ledger_instance(devices[0]) is False
    assert particle.get_ledger_instance(devices[0]) is None


def test_the_token_is_merged_and_other_ledger_keys_are_kept(sim):
    [device] = sim.add_devices(1)
    requests.put(
        f"{sim.url}/v1/ledgers/blynk-tokens-c2d/instances/{device}",
        json={"instance": {"data": {"other": "kept", "blynk_token": "old"}}},
        headers={"Authorization": f"Bearer {sim.access_token}"},
        timeout=5,
    )
    client(sim).set_ledger_token(device, TOKEN)
    assert sim.ledger_data(device) == {"other": "kept", "blynk_token": TOKEN, "state": "active"}


def test_the_ledger_list_reads_every_page_in_either_spelling(sim):
    devices = sim.add_devices(7)
    particle = client(sim, ledger="other-ledger")
    for device in devices:
        particle.set_ledger_token(device, TOKEN)
    sim.meta_total_key = "total_page"
    assert [i["scope"]["value"] for i in particle.list_ledger_instances(per_page=3)] == devices
    assert sim.ledger_data(devices[0], ledger="other-ledger") == ACTIVE


def test_device_ids_are_checked_before_any_request(sim):
    particle = client(sim)
    for bad in ("../../v1/evil", "E00FCE68" + "0" * 16, "0" * 23, "0" * 24 + "?x=1", "0" * 24 + "\n"):
        with pytest.raises(ParticleBadRequest):
            particle.set_ledger_token(bad, TOKEN)
    assert particle.requests_sent == 0 and sim.stats()["total"] == 0
    with pytest.raises(ValueError):
        ParticleClient(sim.url, "t", "p", scope="org")  # the org scope needs an org
    with pytest.raises(ValueError):
        ParticleClient(sim.url, "t", "p", scope="global")
    with pytest.raises(ValueError):  # /v1/products/{p}/ledgers: in neither Particle's SDK nor its docs
        ParticleClient(sim.url, "t", "p", scope="product")


# ---- retries ----------------------------------------------------------------------------------------


def test_server_errors_are_retried_with_capped_full_jitter_backoff(sim):
    [device] = sim.add_devices(1)
    sim.set_faults(error_rate=1.0, error_statuses=(500, 502, 503, 504, 408))
    waits: list[float] = []
    particle = client(sim, waits, max_retries=5, backoff_base=0.5, backoff_cap=3.0)
    with pytest.raises(ParticleUnavailable) as caught:
        particle.set_ledger_token(device, TOKEN)
    assert caught.value.status in (500, 502, 503, 504, 408)
    assert particle.requests_sent == 6 == sim.stats()["total"]
    assert len(waits) == 5
    for attempt, wait in enumerate(waits):
        assert 0 <= wait <= min(3.0, 0.5 * 2**attempt)
    assert len(set(waits)) > 1  # jittered, not a fixed schedule


def test_a_flaky_cloud_is_ridden_out(sim):
    devices = sim.add_devices(5)
    sim.set_faults(error_rate=0.6, error_statuses=(500, 503), seed=8)
    waits: list[float] = []
    particle = client(sim, waits, max_retries=10)
    for device in devices:
        particle.set_ledger_token(device, TOKEN)
    assert all(sim.ledger_data(d) == ACTIVE for d in devices)
    assert all(sim.ledger_writes(d) == 1 for d in devices)  # an error answer means nothing was written
    assert particle.requests_sent == len(waits) + 5 > 5


def test_429_waits_as_long_as_retry_after_says_capped(sim):
    [device] = sim.add_devices(1)
    sim.set_faults(error_rate=1.0, error_statuses=(429,), retry_after=7)
    waits: list[float] = []
    particle = client(sim, waits, max_retries=3)
    with pytest.raises(ParticleUnavailable) as caught:
        particle.set_ledger_token(device, TOKEN)
    assert caught.value.status == 429
    assert waits == [pytest.approx(7.0, abs=0.05)] * 3
    assert particle.requests_sent == 4
    waits.clear()
    sim.set_faults(error_rate=1.0, error_statuses=(429,), retry_after=600)
    with pytest.raises(ParticleUnavailable):
        client(sim, waits, max_retries=2, retry_after_cap=20.0).set_ledger_token(device, TOKEN)
    assert waits == [pytest.approx(20.0, abs=0.05)] * 2
    waits.clear()
    sim.set_faults(error_rate=1.0, error_statuses=(429,))  # no Retry-After: exponential backoff
    with pytest.raises(ParticleUnavailable):
        client(sim, waits, max_retries=2, backoff_base=0.25).set_ledger_token(device, TOKEN)
    assert len(waits) == 2 and waits[0] <= 0.25 and waits[1] <= 0.5


def test_the_rate_limiter_is_respected_in_real_time(sim):
    devices = sim.add_devices(6)
    sim.set_rate_limit(3, 1.0, mode="fixed")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    particle = ParticleClient(sim.url, sim.access_token, sim.product, sleep=sleep, max_retries=5)
    started = time.monotonic()
    for device in devices:
        particle.set_ledger_token(device, TOKEN)
    assert all(sim.ledger_data(d) == ACTIVE for d in devices)
    assert waits and all(w >= 0.9 for w in waits)  # the simulator's Retry-After, honoured
    assert time.monotonic() - started >= 1.0
    assert sim.stats()["statuses"]["429"] == len(waits)


def test_timeouts_and_dropped_connections_are_retried(sim):
    [device] = sim.add_devices(1)
    sim.set_faults(timeout_rate=0.5, timeout_seconds=0.5, seed=3)
    particle = client(sim, max_retries=8, timeout=(1.0, 0.2))
    particle.set_ledger_token(device, TOKEN)
    assert sim.ledger_data(device) == ACTIVE
    assert particle.requests_sent > 1
    sim.set_faults(timeout_rate=1.0, timeout_seconds=0)  # every connection dropped
    with pytest.raises(ParticleUnavailable) as caught:
        particle.get_ledger_instance(device)
    assert caught.value.status is None
    assert "ConnectionError" in str(caught.value)


def test_a_write_whose_answer_was_lost_is_repeated_harmlessly(sim):
    [device] = sim.add_devices(1)
    sim.set_faults(timeout_rate=1.0, timeout_seconds=0, timeout_applied=True)
    waits: list[float] = []
    with pytest.raises(ParticleUnavailable):
        client(sim, waits, max_retries=2).set_ledger_token(device, TOKEN)
    sim.set_faults()
    client(sim).set_ledger_token(device, TOKEN)
    assert sim.ledger_data(device) == ACTIVE  # Merge of the same value: same state


# ---- refusals, typed errors and secrets ---------------------------------------------------------------


def test_401_and_404_are_not_retried_and_are_typed(sim):
    [device] = sim.add_devices(1)
    waits: list[float] = []
    refused = ParticleClient(sim.url, "wrong-access-token-123", sim.product, sleep=waits.append)
    with pytest.raises(ParticleAuthError) as caught:
        refused.set_ledger_token(device, TOKEN)
    assert caught.value.status == 401 and refused.requests_sent == 1 and waits == []
    assert "invalid" in str(caught.value)

    particle = client(sim, waits)
    with pytest.raises(ParticleNotFound) as missing:
        particle.set_ledger_token("0" * 24, TOKEN)
    assert missing.value.status == 404 and particle.requests_sent == 1
    with pytest.raises(ParticleNotFound):
        list(
            ParticleClient(
                sim.url, sim.access_token, "no-such-product", sleep=waits.append
            ).iter_device_pages()
        )
    assert waits == []
    assert issubclass(ParticleNotFound, ParticleError) and issubclass(ParticleAuthError, ParticleError)


@pytest.mark.parametrize(("status", "kind"), [(400, ParticleBadRequest), (403, ParticleForbidden)])
def test_400_and_403_are_typed_and_not_retried(sim, status, kind):
    [device] = sim.add_devices(1)
    sim.set_faults(error_rate=1.0, error_statuses=(status,))
    waits: list[float] = []
    particle = client(sim, waits)
    with pytest.raises(kind) as caught:
        particle.set_ledger_token(device, TOKEN)
    assert caught.value.status == status and particle.requests_sent == 1 and waits == []


@pytest.mark.parametrize("status", [400, 403, 500, 429])
def test_neither_token_appears_in_errors_even_when_the_answer_echoes_the_request(sim, status):
    [device] = sim.add_devices(1)
    sim.set_faults(error_rate=1.0, error_statuses=(status,), echo_request=True)
    with pytest.raises(ParticleError) as caught:
        client(sim, max_retries=1).set_ledger_token(device, TOKEN)
    text = f"{caught.value} {caught.value!r} {caught.value.args}"
    assert TOKEN not in text and ACCESS_TOKEN not in text and device not in text
    assert f"answered {status}" in text and "Simulated" in text


def test_the_access_token_is_not_in_connection_errors(sim):
    refused = ParticleClient("http://127.0.0.1:9", ACCESS_TOKEN, "p", sleep=lambda s: None, max_retries=1)
    with pytest.raises(ParticleUnavailable) as caught:
        refused.set_ledger_token("0" * 24, TOKEN)
    assert ACCESS_TOKEN not in str(caught.value) and TOKEN not in str(caught.value)


# ---- sharing, counting, settings ----------------------------------------------------------------------


def test_threads_share_one_client_its_connections_and_an_exact_request_count(sim):
    devices = sim.add_devices(40)
    # A generous read timeout: on a loaded machine a 1 s one can expire and add a retry to the count.
    particle = client(sim, pool_size=8, timeout=(3.05, 10.0))
    errors: list[BaseException] = []

    def work(share: list[str]) -> None:
        try:
            for device in share:
                particle.set_ledger_token(device, TOKEN)
                particle.get_ledger_instance(device)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(devices[n::8],)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert particle.requests_sent == 80 == sim.stats()["total"]
    assert sim.request_count("PUT", ROUTE_INSTANCE) == 40
    assert sim.stats()["connections"] <= 8  # reused, not one per request


def test_sequential_calls_reuse_one_connection(sim):
    devices = sim.add_devices(20)
    particle = client(sim)
    for device in devices:
        particle.set_ledger_token(device, TOKEN)
    assert sim.stats()["connections"] == 1


def test_from_settings_reads_the_access_token_lazily_from_ssm(sim, aws_mock):
    [device] = sim.add_devices(1)
    settings = Settings(
        particle_api_url=sim.url,
        particle_product=sim.product,
        particle_ledger="blynk-tokens-c2d",
        particle_ledger_scope="org",
        particle_org=sim.org,
        particle_token_param="/tokenflow/test/particle-token",
    )
    wiring.reset()
    particle = ParticleClient.from_settings(settings)  # no parameter yet: nothing is read here
    boto3.client("ssm").put_parameter(
        Name="/tokenflow/test/particle-token", Value=sim.access_token, Type="SecureString"
    )
    particle.set_ledger_token(device, TOKEN)
    assert sim.ledger_data(device, prefix=f"/v1/orgs/{sim.org}") == ACTIVE
    assert ACCESS_TOKEN not in repr(particle.__dict__.get("_token"))
    wiring.reset()


def test_a_retry_after_pauses_every_later_request_of_the_client(sim):
    devices = sim.add_devices(2)
    sim.set_faults(error_rate=1.0, error_statuses=(429,), retry_after=2)
    waits: list[float] = []
    particle = client(sim, waits, max_retries=0)
    with pytest.raises(ParticleUnavailable):
        particle.set_ledger_token(devices[0], TOKEN)
    assert waits == []
    sim.set_faults()
    # Another thread's next request (here the next call) waits out the pause the cloud asked for.
    threading.Thread(target=particle.set_ledger_token, args=(devices[1], TOKEN)).run()
    assert waits == [pytest.approx(2.0, abs=0.1)]
    assert sim.ledger_data(devices[1]) == ACTIVE


def test_a_client_rate_limit_keeps_below_the_cloud_limit(sim):
    devices = sim.add_devices(12)
    sim.set_rate_limit(5, 0.5)
    particle = ParticleClient(sim.url, sim.access_token, sim.product, rate_limit=(5, 0.5))
    started = time.monotonic()
    threads = [threading.Thread(target=particle.set_ledger_token, args=(d, TOKEN)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(sim.ledger_data(d) == ACTIVE for d in devices)
    assert "429" not in sim.stats()["statuses"]
    assert particle.requests_sent == 12
    assert time.monotonic() - started >= 1.0  # 12 requests at 5 per 0.5 s: two full windows waited


def test_a_request_that_leaves_late_moves_the_window_with_it(sim):
    # A busy process wakes a thread late: the pacing must count a request from when it left, or the
    # requests one window later arrive too early for the cloud's sliding window.
    devices = sim.add_devices(9)
    sim.set_rate_limit(3, 0.5)
    late = [0.25]  # the first wait ends 250 ms late, the others on time

    def sleep(seconds: float) -> None:
        time.sleep(seconds + (late.pop() if late else 0.0))

    particle = ParticleClient(sim.url, sim.access_token, sim.product, rate_limit=(3, 0.5), sleep=sleep)
    for device_id in devices:
        particle.set_ledger_token(device_id, TOKEN)
    assert not late  # the late wake happened
    assert "429" not in sim.stats()["statuses"]
    assert particle.requests_sent == 9
