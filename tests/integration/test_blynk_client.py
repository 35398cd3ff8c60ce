"""The Blynk client against the Blynk simulator over HTTP, and the simulator against Blynk's documented
answers (REFERENCE.md, "Blynk static tokens"; https://docs.blynk.io/en/blynk.cloud/device-https-api)."""

from __future__ import annotations

import logging
import traceback

import pytest
import requests

from tests.support.factories import BLYNK_DOC_TOKEN, BLYNK_DOC_TOKEN_2, random_tokens
from tokenflow.blynk import (
    INVALID_TOKEN,
    NO_DATA,
    OK,
    BlynkBadRequest,
    BlynkClient,
    BlynkSettings,
    BlynkUnavailable,
    region_of_url,
)
from tokenflow_local.blynk_sim import BlynkSimulator

PUBLISHED_AT = "2026-11-29T08:00:00.000Z"


@pytest.fixture
def sim():
    with BlynkSimulator() as simulator:
        yield simulator


def client(sim: BlynkSimulator, region: str = "ny3", **options) -> BlynkClient:
    options.setdefault("sleep", lambda s: None)
    return BlynkClient(region, url_template=sim.url_template, **options)


def test_a_datastream_value_is_read_in_the_configured_region(sim):
    sim.add_token(BLYNK_DOC_TOKEN, "ny3")
    sim.set_value(BLYNK_DOC_TOKEN, "V6", PUBLISHED_AT)
    read = client(sim).get(BLYNK_DOC_TOKEN, "V6")
    assert (read.outcome, read.value, read.region, read.check) == (OK, PUBLISHED_AT, "ny3", "ok")
    assert read.has_data


def test_a_token_of_another_region_is_followed_once_and_its_region_reported(sim):
    sim.add_token(BLYNK_DOC_TOKEN, "fra1")
    sim.set_value(BLYNK_DOC_TOKEN, "V6", PUBLISHED_AT)
    read = client(sim, "ny3").get(BLYNK_DOC_TOKEN, "V6")
    assert (read.outcome, read.region, read.redirected_from) == (OK, "fra1", "ny3")
    assert read.check == "wrong-region:fra1"
    assert sim.count("ny3", "get", 308) == 1 and sim.count("fra1", "get", 200) == 1


def test_an_unknown_or_deleted_token_reads_as_invalid_and_is_not_retried(sim):
    sim.add_token(BLYNK_DOC_TOKEN, "ny3")
    sim.set_value(BLYNK_DOC_TOKEN, "V6", PUBLISHED_AT)
    sim.delete_token(BLYNK_DOC_TOKEN)
    read = client(sim).get(BLYNK_DOC_TOKEN, "V6")
    assert (read.outcome, read.has_data, read.check) == (INVALID_TOKEN, False, "invalid-token")
    assert sim.count("ny3", "get", 400) == 1


@pytest.mark.parametrize("answer", ["empty", "error"])
def test_a_datastream_without_a_value_reads_as_no_data_whichever_way_blynk_says_it(answer):
    with BlynkSimulator(no_data_answer=answer) as sim:
        sim.add_token(BLYNK_DOC_TOKEN, "sgp1")
        read = client(sim, "sgp1").get(BLYNK_DOC_TOKEN, "V6")
    assert (read.outcome, read.value) == (NO_DATA, None)


def test_a_wrong_pin_is_a_configuration_error(sim):
    sim.add_token(BLYNK_DOC_TOKEN, "ny3")
    with pytest.raises(BlynkBadRequest, match="datastream setting"):
        client(sim).get(BLYNK_DOC_TOKEN, "X6")


def test_server_errors_are_retried_with_backoff_then_answered(sim):
    sim.add_token(BLYNK_DOC_TOKEN, "ny3")
    sim.set_value(BLYNK_DOC_TOKEN, "V6", PUBLISHED_AT)
    sim.fail_next(2, 503)
    waits: list[float] = []
    read = client(sim, sleep=waits.append).get(BLYNK_DOC_TOKEN, "V6")
    assert read.outcome == OK
    assert len(waits) == 2 and all(0 <= w <= 1.0 for w in waits)  # full jitter under 0.5 s, 1 s


def test_the_rate_bound_spaces_requests(sim):
    sim.add_token(BLYNK_DOC_TOKEN, "ny3")
    waits: list[float] = []
    clock = iter([0.0, 0.0, 0.0])
    paced = client(sim, rate=4.0, sleep=waits.append, monotonic=lambda: next(clock))
    for _ in range(3):
        paced.get(BLYNK_DOC_TOKEN, "V6")
    assert waits == [0.25, 0.5]  # the second and third request wait for their slot


def test_a_timeout_and_a_refused_connection_say_so_without_the_url(sim, caplog):
    sim.add_token(BLYNK_DOC_TOKEN, "ny3")
    sim.delay = 0.5
    caplog.set_level(logging.DEBUG)  # as a runtime whose root logger is at DEBUG
    slow = client(sim, timeout=(0.5, 0.1), max_retries=1)
    with pytest.raises(BlynkUnavailable, match="timed out after 2 attempt") as timed_out:
        slow.get(BLYNK_DOC_TOKEN, "V6")
    sim.delay = 0
    closed = BlynkClient(
        "ny3", url_template="http://127.0.0.1:9/{region}", max_retries=0, sleep=lambda s: None
    )
    with pytest.raises(BlynkUnavailable, match="could not be reached") as refused:
        closed.get(BLYNK_DOC_TOKEN_2, "V6")
    for info in (timed_out, refused):
        shown = "".join(traceback.format_exception(info.value))
        assert BLYNK_DOC_TOKEN not in shown and BLYNK_DOC_TOKEN_2 not in shown
        assert "token=" not in shown and "127.0.0.1" not in shown
    assert BLYNK_DOC_TOKEN not in caplog.text and BLYNK_DOC_TOKEN_2 not in caplog.text


def test_no_token_reaches_any_log_even_with_every_logger_at_debug(sim, caplog):
    tokens = [t.token for t in random_tokens(4, seed=16)]
    sim.add_token(tokens[0], "ny3")
    sim.set_value(tokens[0], "V6", PUBLISHED_AT)
    sim.add_token(tokens[1], "lon1")  # 308 then no data
    sim.fail_next(1, 502)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)  # someone turns it on; a client turns it off
    reader = BlynkClient("ny3", url_template=sim.url_template, sleep=lambda s: None)
    outcomes = [reader.get(t, "V6").check for t in tokens]
    assert outcomes == ["ok", "wrong-region:lon1", "invalid-token", "invalid-token"]
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.WARNING
    assert not any(t in caplog.text for t in tokens)


def test_the_region_of_an_url_is_read_from_blynks_hosts_and_the_simulators_paths(sim):
    assert region_of_url("https://fra1.blynk.cloud/external/api/get?x") == "fra1"
    assert region_of_url(f"{sim.url}/blr1/external/api/get") == "blr1"
    assert region_of_url("https://{{BLYNK_REGION}}.blynk.cloud/external/api/batch/update") is None
    assert region_of_url("https://evil.example/ny3x") is None


def test_the_region_setting_accepts_blynks_regions_only():
    assert BlynkSettings.from_env({}).region == "ny3"
    assert BlynkSettings.from_env({"BLYNK_REGION": "blr1", "BLYNK_DATASTREAM": "V9"}).datastream == "V9"
    with pytest.raises(BlynkBadRequest, match="one of fra1"):
        BlynkSettings.from_env({"BLYNK_REGION": "eu1"})


# ---- the simulator answers as Blynk documents ----------------------------------------------------------


def test_the_simulator_answers_as_blynks_device_https_api(sim):
    sim.add_token(BLYNK_DOC_TOKEN, "ny3")
    base = f"{sim.url}/ny3/external/api"
    # update: 200 with an empty body; batch/update: several pins at once
    answer = requests.get(f"{base}/update?token={BLYNK_DOC_TOKEN}&V1=42", timeout=5)
    assert (answer.status_code, answer.text) == (200, "")
    answer = requests.get(f"{base}/batch/update?token={BLYNK_DOC_TOKEN}&V6={PUBLISHED_AT}&V14=7", timeout=5)
    assert (answer.status_code, answer.text) == (200, "")
    assert requests.get(f"{base}/get?token={BLYNK_DOC_TOKEN}&V6", timeout=5).text == PUBLISHED_AT
    assert requests.get(f"{base}/get?token={BLYNK_DOC_TOKEN}&V1&V14", timeout=5).json() == {
        "V1": "42",
        "V14": "7",
    }
    # a device that sends only through the HTTP API never shows as online
    assert requests.get(f"{base}/isHardwareConnected?token={BLYNK_DOC_TOKEN}", timeout=5).text == "false"
    # an unknown token: 400 and Blynk's exact body
    answer = requests.get(f"{base}/get?token={BLYNK_DOC_TOKEN_2}&V6", timeout=5)
    assert answer.status_code == 400 and answer.json() == {"error": {"message": "Invalid token."}}
    # a token of another region: 308 to the same call there
    answer = requests.get(
        f"{sim.url}/fra1/external/api/get?token={BLYNK_DOC_TOKEN}&V6", timeout=5, allow_redirects=False
    )
    assert answer.status_code == 308
    assert answer.headers["Location"] == f"{sim.url}/ny3/external/api/get?token={BLYNK_DOC_TOKEN}&V6"
