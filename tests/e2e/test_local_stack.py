"""The whole story on the local stack, driven only through its public faces.

S3 through boto3 at the embedded AWS endpoint, the HTTP API through requests, the devices through the
Particle simulator's HTTP API. The steps build on each other (the module's STORY, see
tests/e2e/conftest.py: each test also passes alone, replaying the steps it needs):

1. an export of 20 tokens for 24 eligible devices: 20 get a Ledger and confirm it, 4 wait;
2. the same export dropped again changes nothing; a broken zip lands in rejected/ with a report;
3. a transfer (RMA) moves a token to a replacement device and clears the old one's Ledger; a revoke
   clears its holder's Ledger and sends it back to waiting;
4. a second export tops up every waiting device.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import requests

from tests.e2e.conftest import DEVICES, QUARANTINED, Story, device_ledgers, eventually, sim_api
from tokenflow.tokens import fingerprint, is_auth_token, token_id
from tokenflow_local.sample_export import make_export, make_tokens
from tokenflow_local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a local stack, started once per module

ELIGIBLE = DEVICES - QUARANTINED
FIRST, SECOND = 20, 10
TOKENS = {t.token for t in make_tokens(FIRST, seed=1)} | {t.token for t in make_tokens(SECOND, seed=2)}
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{32}")
STORY = Story()


@pytest.fixture
def s3(stack: LocalStack):
    return stack.client("s3")


# ---- public faces ---------------------------------------------------------------------------------


def api(stack: LocalStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    assert stack.api_url, "the local stack serves no HTTP API"
    response = requests.request(method, f"{stack.api_url}{path}", timeout=15, **kwargs)
    if "json" in response.headers.get("Content-Type", ""):
        # Invariant 5: no API answer carries an AuthToken (the reveal route is not used here).
        leaked = set(SECRET_RE.findall(response.text)) & TOKENS
        assert not leaked, f"{method} {path} revealed a token"
    return response


def summary(stack: LocalStack) -> dict[str, Any]:
    response = api(stack, "GET", "/summary")
    assert response.status_code == 200, response.text
    return response.json()


def counts(stack: LocalStack) -> tuple[dict[str, int], dict[str, int]]:
    data = summary(stack)
    return data["tokens"], data["devices"]


def device_copy(stack: LocalStack, device_id: str) -> dict[str, Any] | None:
    """The device's own Ledger copy, whole (the cleared state included)."""
    devices = sim_api(stack, "/device-ledgers")["devices"]
    return next(d["data"] for d in devices if d["device_id"] == device_id)


def drop(s3: Any, stack: LocalStack, key: str, body: bytes) -> None:
    s3.put_object(Bucket=stack.bucket, Key=key, Body=body)


def report_for(s3: Any, stack: LocalStack, source_key: str, prefix: str) -> dict[str, Any]:
    """The newest report under ``prefix`` whose source is ``source_key`` (AssertionError if none)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".report.json"):
                report = json.loads(s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read())
                if report.get("source_key") == source_key:
                    found.append((obj["LastModified"], obj["Key"], report))
    assert found, f"no report for {source_key} under {prefix}"
    return max(found, key=lambda f: (f[0], f[1]))[2]


def incoming_is_empty(s3: Any, stack: LocalStack) -> None:
    # Ingest writes the report, then deletes the original: allow it the moment between the two.
    def empty() -> None:
        assert s3.list_objects_v2(Bucket=stack.bucket, Prefix="incoming/").get("KeyCount", 0) == 0

    eventually(empty, 10)


def eligible_ids(stack: LocalStack) -> list[str]:
    devices = sim_api(stack, "/devices")["devices"]
    return [d["id"] for d in devices if not d["quarantined"] and not d["denied"]]


# ---- the story ------------------------------------------------------------------------------------


@STORY.step
def test_an_export_gives_devices_their_tokens_and_they_confirm_them(stack):
    s3 = stack.client("s3")
    drop(s3, stack, "incoming/first export.zip", make_export(FIRST, seed=1))

    def all_confirmed():
        tokens, devices = counts(stack)
        assert devices["confirmed"] == FIRST and devices["waiting"] == ELIGIBLE - FIRST, devices
        assert tokens["confirmed"] == FIRST and tokens["available"] == 0, tokens

    eventually(all_confirmed, 30)
    incoming_is_empty(s3, stack)
    report = report_for(s3, stack, "incoming/first export.zip", "processed/")
    assert report["status"] == "processed" and report["tokens_added"] == FIRST

    held = device_ledgers(stack)
    first_tokens = {t.token for t in make_tokens(FIRST, seed=1)}
    assert len(held) == FIRST and set(held.values()) == first_tokens  # each token in exactly one Ledger
    quarantined = next(d["id"] for d in sim_api(stack, "/devices")["devices"] if d["quarantined"])
    assert quarantined not in held
    for device_id, token in list(held.items())[:3]:
        answer = api(stack, "GET", f"/devices/{device_id}")
        assert answer.status_code == 200
        assert answer.json()["state"] == "confirmed"
        assert fingerprint(token) in answer.text  # the API names tokens by fingerprint only


@pytest.mark.story_after("test_an_export_gives_devices_their_tokens_and_they_confirm_them")
def test_the_api_serves_lookups_labels_and_its_description(stack):
    device_id = next(iter(device_ledgers(stack)))
    qr = api(stack, "GET", f"/devices/{device_id}/qr")
    assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")
    waiting = api(stack, "GET", "/devices", params={"state": "waiting"})
    assert waiting.status_code == 200 and len(waiting.json()["devices"]) == ELIGIBLE - FIRST
    imports = api(stack, "GET", "/imports")
    assert imports.status_code == 200 and "first export.zip" in imports.text
    assert api(stack, "GET", "/openapi.json").json()["paths"]
    assert api(stack, "GET", "/summary", headers={"X-Tokenflow-Secret": "x"}).status_code == 200


@pytest.mark.story_after("test_an_export_gives_devices_their_tokens_and_they_confirm_them", or_later=True)
def test_the_webhook_refuses_a_wrong_secret(stack):
    device_id = next(iter(device_ledgers(stack)))
    body = {"event": "tokenflow/status", "data": "v=1;token=none;fw=1;synced=1", "device_id": device_id}
    answer = api(stack, "POST", "/webhooks/particle", json=body, headers={"X-Tokenflow-Secret": "wrong"})
    assert answer.status_code in (401, 403)
    assert api(stack, "GET", f"/devices/{device_id}").json()["state"] == "confirmed"


@pytest.mark.story_after("test_an_export_gives_devices_their_tokens_and_they_confirm_them", or_later=True)
def test_the_same_export_dropped_twice_changes_nothing(stack, s3):
    before, writes = summary(stack), sim_api(stack, "/stats")["ledger_writes"]
    drop(s3, stack, "incoming/first export again.zip", make_export(FIRST, seed=1))
    report = eventually(lambda: report_for(s3, stack, "incoming/first export again.zip", "processed/"))
    assert report["status"] == "duplicate"
    time.sleep(1.5)  # a sweep runs in the meantime
    after = summary(stack)
    assert (after["tokens"], after["devices"]) == (before["tokens"], before["devices"])
    assert sim_api(stack, "/stats")["ledger_writes"] == writes


def test_a_broken_zip_lands_in_rejected_with_a_report(stack, s3):
    before = summary(stack)
    drop(s3, stack, "incoming/broken.zip", b"PK\x03\x04 this is not really a zip archive")
    report = eventually(lambda: report_for(s3, stack, "incoming/broken.zip", "rejected/"))
    assert report["status"] == "rejected" and report["reason"]
    assert report["tokens_added"] == 0
    incoming_is_empty(s3, stack)
    assert summary(stack)["tokens"] == before["tokens"]


@STORY.step
def test_a_transfer_moves_a_token_to_a_replacement_device(stack):
    held = device_ledgers(stack)
    old = next(iter(held))
    new = sim_api(stack, "/devices", "POST", json={"count": 1})["ids"][0]
    # No token is available: the sweep finds the replacement and records it as waiting.
    eventually(lambda: _state_is(stack, new, "waiting"))

    answer = api(stack, "POST", f"/devices/{old}/transfer", json={"to": new})
    assert answer.status_code in (200, 202), answer.text

    def moved():
        now_held = device_ledgers(stack)
        assert now_held.get(new) == held[old]
        # the old device's own copy holds the cleared state: it stopped using the token
        assert device_copy(stack, old) == {"blynk_token": "", "state": "transferred"}
        _state_is(stack, new, "confirmed")
        _state_is(stack, old, "retired")

    eventually(moved)


@STORY.step
def test_a_revoked_token_leaves_its_device_waiting_for_a_fresh_one(stack):
    held = device_ledgers(stack)
    device_id = next(d for d in held if d in eligible_ids(stack))
    revoked = held[device_id]
    answer = api(stack, "POST", f"/tokens/{token_id(revoked)}/revoke")
    assert answer.status_code == 200, answer.text
    assert answer.json()["device_state"] == "clearing"

    def cleared():  # no token is left in stock: the cleared state stays on the device
        assert device_copy(stack, device_id) == {"blynk_token": "", "state": "revoked"}
        _state_is(stack, device_id, "waiting")

    eventually(cleared)
    tokens, _ = counts(stack)
    assert tokens["revoked"] == 1
    STORY.notes.update(revoked_device=device_id, revoked_token=revoked)


@STORY.step
def test_a_second_export_tops_up_the_waiting_devices(stack):
    s3 = stack.client("s3")
    _, devices = counts(stack)
    waiting = devices["waiting"]
    assert waiting == ELIGIBLE - FIRST + 1  # + the device whose token was revoked
    drop(s3, stack, "incoming/second.zip", make_export(SECOND, seed=2))

    def topped_up():
        tokens, devices = counts(stack)
        assert devices["waiting"] == 0, devices
        assert devices["confirmed"] == ELIGIBLE, devices  # the 24 original ones minus the retired + new
        assert tokens["available"] == SECOND - waiting, tokens
        assert tokens["revoked"] == 1

    eventually(topped_up, 30)
    held = device_ledgers(stack)
    assert held[STORY.notes["revoked_device"]] != STORY.notes["revoked_token"]
    assert len(set(held.values())) == len(held)  # still one token per device
    assert all(is_auth_token(t) for t in held.values())


@STORY.step
def test_rma_in_the_natural_order_the_served_replacement_takes_the_old_token(stack):
    held = device_ledgers(stack)
    old = next(d for d in held if d in eligible_ids(stack) and d != STORY.notes.get("revoked_device"))
    moved_token = held[old]
    new = sim_api(stack, "/devices", "POST", json={"count": 1})["ids"][0]
    # The replacement joins the product and the automation serves it from stock, as it should.
    eventually(lambda: _state_is(stack, new, "confirmed"), 30)
    own = device_ledgers(stack)[new]

    answer = api(stack, "POST", f"/devices/{old}/transfer", json={"to": new})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["new_previous_state"] == "confirmed"
    assert (
        body["replaced_token"]["token_id"] == token_id(own) and body["replaced_token"]["state"] == "released"
    )

    def moved():
        assert device_ledgers(stack).get(new) == moved_token
        assert device_copy(stack, old) == {"blynk_token": "", "state": "transferred"}
        _state_is(stack, new, "confirmed")
        _state_is(stack, old, "retired")

    eventually(moved)
    assert counts(stack)[0]["released"] == 1

    # and back again: the retired device takes the token, the replacement's Ledger is cleared
    answer = api(stack, "POST", f"/devices/{new}/transfer", json={"to": old})
    assert answer.status_code == 202, answer.text

    def back():
        assert device_ledgers(stack).get(old) == moved_token
        assert device_copy(stack, new) == {"blynk_token": "", "state": "transferred"}
        _state_is(stack, old, "confirmed")
        _state_is(stack, new, "retired")

    eventually(back)


def _state_is(stack: LocalStack, device_id: str, state: str) -> None:
    answer = api(stack, "GET", f"/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == state, answer.json()
