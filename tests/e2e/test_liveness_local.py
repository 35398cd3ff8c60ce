"""End to end on the local stack: devices go confirmed -> live in Blynk, and a wrong Blynk region
shows up as stragglers with the wrong-region hint.

The simulated devices publish their readings (``blynk_https_get``); the Particle simulator forwards
them through firmware/integrations/blynk_https_get.json (its URL set to the stack's Blynk region) to
the Blynk simulator, which knows the export's tokens in the region they were registered in; the verify
function, on its schedule tick, reads each confirmed device's V6 there. Every log line of both runs
(which include Blynk's 308 and 400 answers) is read for tokens.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import requests

from tests.e2e.conftest import QUARANTINED, eventually, local_stack
from tokenflow_local.sample_export import make_export, make_tokens
from tokenflow_local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXPORTED = 12
TOKENS = make_tokens(EXPORTED, seed=16)
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{32}")
STACK_OPTIONS: dict[str, Any] = {
    "devices": EXPORTED + 3 + QUARANTINED,  # 3 devices stay waiting: they never count in liveness
    "verify_interval": 0.5,
    "data_interval": 2.0,
}


def api(stack: LocalStack, path: str) -> dict[str, Any]:
    assert stack.api_url, "the local stack serves no HTTP API"
    response = requests.get(f"{stack.api_url}{path}", timeout=15)
    assert response.status_code == 200, response.text
    leaked = set(SECRET_RE.findall(response.text)) & {t.token for t in TOKENS}
    assert not leaked, f"GET {path} revealed a token"
    return response.json()


def import_export(stack: LocalStack) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket, Key="incoming/liveness.zip", Body=make_export(TOKENS))


def stragglers(stack: LocalStack) -> list[dict[str, Any]]:
    return api(stack, "/devices?state=confirmed&not_live_for=0m&limit=100")["devices"]


def all_confirmed(stack: LocalStack) -> None:
    assert api(stack, "/summary")["devices"].get("confirmed", 0) == EXPORTED


def assert_no_token_logged(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Every function's log lines of the run (stdout, stderr and the logging records) name no token."""
    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    assert "Verification pass finished" in logged  # the capture did see the functions' logs
    assert not set(SECRET_RE.findall(logged)) & {t.token for t in TOKENS}, "a log line holds a token"


def test_an_exported_fleet_goes_from_confirmed_to_live_and_a_token_deleted_in_blynk_is_named(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    deleted = TOKENS[0].token
    with local_stack(**STACK_OPTIONS) as stack:
        stack.register_blynk_tokens(t.token for t in TOKENS)
        assert stack.blynk is not None
        stack.blynk.delete_token(deleted)  # as deleting it in Blynk.Console: "Invalid token." from now on
        import_export(stack)
        eventually(lambda: all_confirmed(stack), timeout=20)

        def all_live() -> dict[str, Any]:
            block = api(stack, "/summary")["liveness"]
            assert block is not None and block["confirmed"] == EXPORTED, block
            assert block["live"] == EXPORTED - 1 and block["checks"].get("invalid-token"), block
            return block

        block = eventually(all_live, timeout=20)
        assert block["region"] == "ny3" and block["datastream"] == "V6"
        # Each confirmed device's own view: live since the check, its last publish seen, no hint;
        # the one whose token was deleted says so. (``not_live_for`` takes whole minutes: a device
        # confirmed seconds ago is never a straggler, so the views are read whole here.)
        confirmed = api(stack, "/devices?state=confirmed&limit=100")["devices"]
        assert len(confirmed) == EXPORTED
        live = [d for d in confirmed if d["blynk_check"] == "ok"]
        invalid = [d for d in confirmed if d["blynk_check"] == "invalid-token"]
        assert len(live) == EXPORTED - 1 and len(invalid) == 1, confirmed
        for device in live:
            assert device["live_at"] and device["blynk_last_seen"] and device["liveness_hint"] is None, device
        assert invalid[0]["live_at"] is None and "deleted in Blynk" in invalid[0]["liveness_hint"]
        assert stack.blynk.count("ny3", "get", 400) >= 1 and stack.blynk.value(deleted, "V6") is None
        for token in TOKENS[1:]:
            # The integration wrote the publish time into V6 and the uptime into V14.
            assert stack.blynk.value(token.token, "V6") and stack.blynk.value(token.token, "V14")
        assert stack.blynk.count("ny3", "batch/update", 200) >= EXPORTED - 1
        assert not stack.errors, stack.errors
    assert_no_token_logged(capfd, caplog)


def test_a_stack_set_to_the_wrong_blynk_region_lists_stragglers_with_the_region_hint(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with local_stack(**STACK_OPTIONS, blynk_region="fra1") as stack:
        # The tokens live in ny3; the stack (BlynkRegion and the integration's URL) says fra1.
        stack.register_blynk_tokens((t.token for t in TOKENS), region="ny3")
        import_export(stack)
        eventually(lambda: all_confirmed(stack), timeout=20)

        def all_straggle() -> list[dict[str, Any]]:
            found = stragglers(stack)
            assert len(found) == EXPORTED, found
            # Until the pass reaches it a device reads "not checked yet"; then the cause shows.
            assert all("region ny3" in (d["liveness_hint"] or "") for d in found), found
            return found

        found = eventually(all_straggle, timeout=20)
        for device in found:
            assert device["live_at"] is None and device["blynk_check"] == "wrong-region:ny3", device
        assert stack.blynk is not None
        # The devices' data never landed: the integration's requests went to fra1 and got 308.
        assert stack.blynk.count("fra1", "batch/update", 308) >= EXPORTED
        assert stack.blynk.count("ny3", "batch/update", 200) == 0
        assert all(stack.blynk.value(t.token, "V6") is None for t in TOKENS)
        assert not stack.errors, stack.errors
    assert_no_token_logged(capfd, caplog)
