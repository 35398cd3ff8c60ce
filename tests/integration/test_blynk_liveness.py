"""Live after confirmed: the verification function reads each confirmed device's datastream in the Blynk
simulator, records the result on the device, and the summary, the device listing and the CLI show
confirmed vs live with a hint per cause. No AuthToken reaches a log on the way (captured below)."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import TABLE
from tests.support import seed
from tests.support.events import invoke, load_event
from tests.support.factories import device_id, random_tokens
from tokenflow import liveness, rules
from tokenflow.blynk import BlynkClient
from tokenflow.liveness import Verifier
from tokenflow.store import Store
from tokenflow.store.liveness import LivenessStore
from tokenflow.tokens import token_id
from tokenflow_cli import output
from tokenflow_local import lambda_runtime
from tokenflow_local.blynk_sim import BlynkSimulator
from tokenflow_local.stack import forget_clients


def iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


NOW = datetime.now(UTC)
LONG_AGO = iso(NOW - timedelta(days=2))
RECENTLY = iso(NOW - timedelta(hours=1))


@pytest.fixture
def blynk():
    with BlynkSimulator() as simulator:
        yield simulator


@pytest.fixture
def fleet(dynamodb, monkeypatch, blynk):
    """Six confirmed devices, one per case (device n holds tokens[n - 1]):

    1 live (a recent publish time in V6)    2 its token is fra1's (the stack says ny3)
    3 its token was deleted in Blynk        4 no value in V6
    5 a last value three days old           6 confirmed an hour ago, no value yet (waiting)
    """
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("BLYNK_URL_TEMPLATE", blynk.url_template)
    monkeypatch.setenv("BLYNK_REGION", "ny3")
    monkeypatch.setenv("BLYNK_RATE", "50")
    forget_clients()
    store = Store(TABLE, dynamodb)
    tokens = [t.token for t in random_tokens(6, seed=61)]
    store.add_tokens([t for t in random_tokens(6, seed=61)], import_id="i", now=LONG_AGO)
    for n, token in enumerate(tokens, start=1):
        confirmed_at = RECENTLY if n == 6 else LONG_AGO
        seed.claim(store, device_id(n), token_id(token), token, confirmed_at)
        seed.deliver(store, device_id(n), token_id(token), confirmed_at)
        store.apply(rules.confirm(store.get_device(device_id(n)), confirmed_at), confirmed_at)
    for n, token in enumerate(tokens, start=1):
        blynk.add_token(token, "fra1" if n == 2 else "ny3")
    blynk.set_value(tokens[0], "V6", iso(NOW - timedelta(minutes=5)))
    blynk.delete_token(tokens[2])
    blynk.set_value(tokens[4], "V6", iso(NOW - timedelta(days=3)))
    yield store, tokens
    forget_clients()


def run_verify(capsys) -> tuple[dict, str]:
    """The verify function's handler on its sample event; its result and everything it logged."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)  # as a runtime at DEBUG: nothing may leak even then
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        result = invoke("verify", load_event("verify/scheduled.json"))
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    captured = capsys.readouterr()
    return result, captured.out + captured.err + stream.getvalue()


def api_get(path: str, **query: str) -> dict:
    event = load_event("api/get-devices-waiting.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["queryStringParameters"] = query or None
    event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    module = lambda_runtime.load_handler("api", fresh=True)
    answer = module.lambda_handler(event, lambda_runtime.LambdaContext(function_name="api"))
    assert answer["statusCode"] == 200, answer
    return json.loads(answer["body"])


def test_the_verify_pass_marks_live_and_not_live_devices_with_their_cause(fleet, capsys):
    store, tokens = fleet
    result, logs = run_verify(capsys)

    assert result["walk_complete"] and result["devices"] == 6 and result["errors"] == 0
    assert result["checks"] == {"ok": 2, "wrong-region:fra1": 1, "invalid-token": 1, "no-data": 2}
    device = {n: store.get_device(device_id(n)) for n in range(1, 7)}
    assert device[1]["blynk_check"] == "ok" and device[1]["live_at"] and device[1]["blynk_last_seen"]
    assert device[2]["blynk_check"] == "wrong-region:fra1" and "live_at" not in device[2]
    assert device[3]["blynk_check"] == "invalid-token" and "live_at" not in device[3]
    assert device[4]["blynk_check"] == "no-data" and "live_at" not in device[4]
    # a value proves data once arrived (live_at) but an old one is no evidence of now
    assert device[5]["blynk_check"] == "ok" and device[5]["live_at"]
    assert device[5]["blynk_last_seen"] == iso(datetime.fromisoformat(device[5]["blynk_last_seen"]))
    assert device[6]["blynk_check"] == "no-data"
    assert all(d["state"] == "confirmed" for d in device.values())  # checks never change a state

    leaked = [t for t in tokens if t in logs]
    assert not leaked, "an AuthToken reached the verify function's logs"
    assert "Verification pass finished" in logs  # the logs were captured


def test_the_summary_and_the_cli_show_confirmed_vs_live(fleet, capsys):
    run_verify(capsys)
    summary = api_get("/summary")
    block = summary["liveness"]
    assert (block["confirmed"], block["live"], block["waiting"], block["not_live"]) == (6, 1, 1, 4)
    assert block["causes"] == {"wrong-region": 1, "invalid-token": 1, "no-data": 1, "stale": 1}
    assert block["not_live_percent"] == pytest.approx(66.67)
    assert (block["region"], block["datastream"], block["after_hours"]) == ("ny3", "V6", 24)

    text = output.summary(summary)
    assert "LIVE IN BLYNK  1 of 6 confirmed (region ny3" in text
    assert "not live    4  (66.67% after 24h)" in text and "wrong-region    1" in text


def test_not_live_for_lists_the_stragglers_with_a_hint_per_cause(fleet, capsys):
    run_verify(capsys)
    page = api_get("/devices", state="confirmed", not_live_for="24h")
    hints = {d["device_id"]: d["liveness_hint"] for d in page["devices"]}
    assert set(hints) == {device_id(n) for n in (2, 3, 4, 5)}  # not 1 (live) nor 6 (young)
    assert "Blynk region fra1" in hints[device_id(2)] and "BlynkRegion" in hints[device_id(2)]
    assert "deleted in Blynk" in hints[device_id(3)]
    assert "no value in the datastream" in hints[device_id(4)]
    assert "last value is old" in hints[device_id(5)]
    # a longer window: the device whose value is three days old is still inside a 4-day one
    page = api_get("/devices", state="confirmed", not_live_for="4d")
    assert device_id(5) not in {d["device_id"] for d in page["devices"]}


def test_not_live_for_is_refused_for_another_state(fleet):
    event = load_event("api/get-devices-waiting.json")
    event["queryStringParameters"] = {"state": "waiting", "not_live_for": "24h"}
    module = lambda_runtime.load_handler("api", fresh=True)
    answer = module.lambda_handler(event, lambda_runtime.LambdaContext(function_name="api"))
    assert answer["statusCode"] == 400 and "state=confirmed" in answer["body"]


def test_a_walk_spans_runs_when_the_check_budget_runs_out_and_resumes_where_it_stopped(fleet, blynk):
    store, _ = fleet
    reader = BlynkClient("ny3", url_template=blynk.url_template)
    verifier = Verifier(store, reader, max_checks=2, page_size=4)
    states = LivenessStore(store.db)
    first = verifier.run()
    assert (first.checked, first.walk_complete, first.stopped_by) == (2, False, "checks")
    assert states.latest() is None  # no complete walk yet: the summary shows none
    assert [store.get_device(device_id(n)).get("blynk_check") for n in (1, 2, 3)] == [
        "ok",
        "wrong-region:fra1",
        None,
    ]
    second, third = verifier.run(), verifier.run()
    assert (second.checked, third.checked) == (2, 2) and third.walk_complete
    latest = states.latest()
    assert latest["confirmed"] == 6 and latest["live"] == 1  # counted once each across the runs
    # the next walk asks Blynk only for devices not seen recently: device 1 costs no request
    before = blynk.count("ny3", "get", 200)
    verifier.max_checks = 10
    fourth = verifier.run(remaining=lambda: 1.0)
    assert fourth.walk_complete and fourth.checked == 5
    assert blynk.count("ny3", "get", 200) == before + 3  # devices 4, 5, 6 (2: 308 + fra1, 3: 400)


def test_a_pass_out_of_time_checks_nothing_and_keeps_its_place(fleet, blynk):
    store, _ = fleet
    verifier = Verifier(store, BlynkClient("ny3", url_template=blynk.url_template))
    result = verifier.run(remaining=lambda: 0.0)
    assert (result.checked, result.stopped_by, result.walk_complete) == (0, "time", False)
    assert sum(blynk.requests.values()) == 0


def test_a_check_of_a_token_the_device_no_longer_holds_is_not_shown(fleet):
    item = {
        "state": "confirmed",
        "token_id": "b" * 64,
        "blynk_token": "a" * 64,
        "blynk_check": "ok",
        "blynk_last_seen": iso(NOW),
        "confirmed_at": LONG_AGO,
    }
    view = liveness.liveness_view(item, NOW)
    assert view["blynk_check"] is None and view["blynk_last_seen"] is None
    assert "not checked in Blynk yet" in view["liveness_hint"]


# ---- tokenflow doctor's Blynk line ------------------------------------------------------------------


def doctor_for(tmp_path, url: str | None = None):
    """The doctor of a stack deployed with BlynkRegion=ny3, reading the summary through the real API
    handler; ``url`` is the Blynk integration's URL (None: the repository's own JSON)."""
    import boto3

    from tokenflow_cli import doctor

    integration = doctor.BLYNK_INTEGRATION
    if url is not None:
        hook = json.loads(doctor.BLYNK_INTEGRATION.read_text())
        hook["url"] = url
        integration = tmp_path / "blynk_https_get.json"
        integration.write_text(json.dumps(hook))
    checker = doctor.Doctor(
        boto3.session.Session(), None, "tokenflow", blynk_integration=integration, api=api_get
    )
    checker.parameters = {**doctor.PARAMETER_DEFAULTS, "BlynkRegion": "ny3"}  # as check_stack reads them
    return checker


def test_doctor_blynk_line_is_green_when_the_region_answers_and_the_integration_names_it(
    fleet, blynk, capsys, tmp_path
):
    _, tokens = fleet
    blynk.add_token(tokens[1], "ny3")  # every token is ny3's now
    run_verify(capsys)
    check = doctor_for(tmp_path, "https://ny3.blynk.cloud/external/api/batch/update").check_blynk()
    assert check.status == "ok", check
    assert "ny3 answered for 5 token(s) (ok 2, no data 3), 1 device(s) live" in check.detail
    # the repository's JSON holds the placeholder: said, not failed
    check = doctor_for(tmp_path).check_blynk()
    assert check.status == "ok" and "{{BLYNK_REGION}} placeholder (use ny3)" in check.detail
    assert not any(t in check.line() for t in tokens)


def test_doctor_blynk_line_is_red_for_a_token_of_another_region_or_an_integration_elsewhere(
    fleet, capsys, tmp_path
):
    run_verify(capsys)
    check = doctor_for(tmp_path, "https://ny3.blynk.cloud/external/api/batch/update").check_blynk()
    assert check.status == "FAIL" and "Blynk ny3 answered 308: 1 token(s) belong to fra1" in check.detail
    assert "BlynkRegion=fra1" in check.fix
    check = doctor_for(tmp_path, "https://lon1.blynk.cloud/external/api/batch/update").check_blynk()
    assert check.status == "FAIL" and "sends to lon1, not ny3" in check.detail


def test_doctor_blynk_line_warns_before_any_device_was_checked(fleet, tmp_path):
    check = doctor_for(tmp_path, "https://ny3.blynk.cloud/external/api/batch/update").check_blynk()
    assert check.status == "warn" and "no confirmed device checked in Blynk yet" in check.detail
