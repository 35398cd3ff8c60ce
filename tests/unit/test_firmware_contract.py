"""The contract between the firmware and the cloud side, checked from the cloud side.

The firmware's host tests (``make -C firmware test``) read the same ``tests/vectors/fingerprint.json``;
here the vectors are checked against ``tokenflow.tokens`` and ``tokenflow.device_status``, and the two
Particle integration templates in ``firmware/integrations/`` are rendered the way Particle renders them
and fed to the parser the API uses.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.factories import BLYNK_DOC_TOKEN, BLYNK_DOC_TOKEN_2
from tokenflow.device_status import (
    STATUS_EVENT,
    StatusError,
    format_status_data,
    parse_status_data,
    parse_status_event,
)
from tokenflow.settings import Settings
from tokenflow.tokens import fingerprint, is_auth_token, token_id

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "fingerprint.json").read_text(encoding="utf-8"))
FIRMWARE = ROOT / "firmware"
INTEGRATIONS = FIRMWARE / "integrations"
BLYNK_DOC_TOKENS = (BLYNK_DOC_TOKEN, BLYNK_DOC_TOKEN_2)
DEVICE_ID = "e00fce68a1b2c3d4e5f60718"


def load_integration(name: str) -> dict[str, Any]:
    return json.loads((INTEGRATIONS / name).read_text(encoding="utf-8"))


def render(template: Any, values: dict[str, str]) -> Any:
    """Render a webhook ``json`` template as Particle does: mustache over the template's JSON text.

    ``{{{NAME}}}`` inserts the value as it is; ``{{NAME}}`` HTML-escapes it first (mustache's rule).
    A variable Particle does not know renders as the empty string.
    """
    text = json.dumps(template)

    def triple(match: re.Match[str]) -> str:
        return values.get(match.group(1), "")

    def double(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")

    text = re.sub(r"\{\{\{\s*([A-Za-z0-9_]+)\s*\}\}\}", triple, text)
    text = re.sub(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", double, text)
    return json.loads(text)


def config_value(name: str) -> str:
    """A string #define from the firmware's configuration header."""
    header = (FIRMWARE / "src" / "tokenflow_config.h").read_text(encoding="utf-8")
    match = re.search(rf'^#define\s+{name}\s+"([^"]*)"', header, re.MULTILINE)
    assert match, f"{name} is not defined in tokenflow_config.h"
    return match.group(1)


# --- shared vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["fingerprint"], ids=lambda v: v["token"])
def test_fingerprint_vectors_match_tokens_module(vector: dict[str, str]) -> None:
    token = vector["token"]
    assert is_auth_token(token)
    assert token_id(token) == vector["sha256"] == hashlib.sha256(token.encode("ascii")).hexdigest()
    assert fingerprint(token) == vector["fingerprint"] == vector["sha256"][:12]


def test_fingerprint_vectors_cover_the_token_alphabet() -> None:
    tokens = [v["token"] for v in VECTORS["fingerprint"]]
    assert set(BLYNK_DOC_TOKENS) <= set(tokens)
    assert any("-" in t for t in tokens)
    assert any("_" in t for t in tokens)
    assert len(set(tokens)) == len(tokens)


@pytest.mark.parametrize("vector", VECTORS["token_validity"], ids=lambda v: repr(v["value"]))
def test_token_validity_vectors(vector: dict[str, Any]) -> None:
    assert is_auth_token(vector["value"]) is vector["valid"]


def test_token_validity_vectors_hold_both_answers() -> None:
    answers = [v["valid"] for v in VECTORS["token_validity"]]
    assert True in answers and False in answers


@pytest.mark.parametrize("vector", VECTORS["status_data"], ids=lambda v: v["data"])
def test_status_data_vectors(vector: dict[str, Any]) -> None:
    token, fw, synced = vector["token"], vector["fw"], vector["synced"]
    if token == "invalid":
        formatted = format_status_data(None, fw, invalid=True, synced=synced)
    elif token == "none":
        formatted = format_status_data(None, fw, synced=synced)
    else:
        formatted = format_status_data(token, fw, synced=synced)
    assert formatted == vector["data"]
    fields = parse_status_data(vector["data"])
    assert fields == {"v": "1", "token": token, "fw": fw, "synced": "1" if synced else "0"}


def test_status_data_vectors_cover_every_state() -> None:
    states = {v["token"] if v["token"] in ("none", "invalid") else "token" for v in VECTORS["status_data"]}
    assert states == {"none", "invalid", "token"}
    assert {v["synced"] for v in VECTORS["status_data"]} == {True, False}


# --- the status integration -----------------------------------------------------------------------


def test_status_integration_shape() -> None:
    hook = load_integration("tokenflow-status.json")
    assert hook["event"] == STATUS_EVENT == config_value("TOKENFLOW_STATUS_EVENT")
    assert hook["requestType"] == "POST"
    assert hook["noDefaults"] is True
    assert hook["url"].startswith("https://") and hook["url"].endswith("/webhooks/particle")
    assert list(hook["headers"]) == ["X-Tokenflow-Secret"]
    assert hook["json"] == {
        "event": "{{{PARTICLE_EVENT_NAME}}}",
        "data": "{{{PARTICLE_EVENT_VALUE}}}",
        "device_id": "{{{PARTICLE_DEVICE_ID}}}",
        "published_at": "{{{PARTICLE_PUBLISHED_AT}}}",
    }


@pytest.mark.parametrize("vector", VECTORS["status_data"], ids=lambda v: v["data"])
def test_rendered_status_body_is_accepted(vector: dict[str, Any]) -> None:
    hook = load_integration("tokenflow-status.json")
    body = render(
        hook["json"],
        {
            "PARTICLE_EVENT_NAME": STATUS_EVENT,
            "PARTICLE_EVENT_VALUE": vector["data"],
            "PARTICLE_DEVICE_ID": DEVICE_ID,
            "PARTICLE_PUBLISHED_AT": "2026-01-02T03:04:05.678Z",
        },
    )
    status = parse_status_event(body)
    assert status.device_id == DEVICE_ID
    assert status.firmware == vector["fw"]
    assert status.synced is vector["synced"]
    assert status.published_at == "2026-01-02T03:04:05.678Z"
    if vector["token"] in ("none", "invalid"):
        assert status.holds == vector["token"]
        assert status.fingerprint is None
    else:
        assert status.has_token and status.fingerprint == vector["token"]


def test_rendered_status_body_without_device_id_is_refused() -> None:
    # The renderer is not a pass-through: a variable left out makes a body the API must refuse.
    hook = load_integration("tokenflow-status.json")
    values = {"PARTICLE_EVENT_NAME": STATUS_EVENT, "PARTICLE_EVENT_VALUE": "v=1;token=none"}
    body = render(hook["json"], values)
    with pytest.raises(StatusError):
        parse_status_event(body)


# --- the Blynk integration ------------------------------------------------------------------------


def test_blynk_integration_shape() -> None:
    hook = load_integration("blynk_https_get.json")
    assert hook["event"] == config_value("TOKENFLOW_BLYNK_EVENT") == "blynk_https_get"
    assert hook["requestType"] == "GET"
    assert hook["noDefaults"] is True
    assert hook["url"] == "https://{{BLYNK_REGION}}.blynk.cloud/external/api/batch/update"
    assert "responseTopic" in hook
    query = hook["query"]
    assert query["token"] == "{{t}}"
    for pin in ("V14", "V15", "V16", "V17"):
        assert query[pin] == "{{" + pin.lower() + "}}"


def test_blynk_integration_variables_are_sent_by_the_firmware() -> None:
    """Every payload variable the webhook reads is a key the firmware writes into its JSON payload."""
    hook = load_integration("blynk_https_get.json")
    wanted = {
        name
        for value in hook["query"].values()
        for name in re.findall(r"\{\{\{?\s*([A-Za-z0-9_]+)\s*\}?\}\}", value)
        if not name.startswith("PARTICLE_")
    }
    sources = "".join(
        path.read_text(encoding="utf-8")
        for path in [*FIRMWARE.glob("src/*.cpp"), *FIRMWARE.glob("lib/tokenflow_core/src/*.cpp")]
    )
    written = set(re.findall(r'\.add(?:String|Unsigned|Signed|Fixed)\(\s*"([^"]+)"', sources))
    assert wanted == {"t", "v14", "v15", "v16", "v17"}
    assert wanted <= written


def test_blynk_payload_renders_into_the_request() -> None:
    hook = load_integration("blynk_https_get.json")
    payload = {"t": BLYNK_DOC_TOKENS[0], "v14": "123456", "v15": "3.141590", "v16": "1", "v17": "1"}
    query = render(hook["query"], {**payload, "PARTICLE_PUBLISHED_AT": "2026-01-02T03:04:05.678Z"})
    assert query["token"] == BLYNK_DOC_TOKENS[0]
    assert query["V15"] == "3.141590"
    assert query["V6"] == "2026-01-02T03:04:05.678Z"


# --- firmware settings that must match the stack ---------------------------------------------------


def test_firmware_ledger_name_matches_the_stack_default() -> None:
    assert config_value("TOKENFLOW_LEDGER_NAME") == Settings.particle_ledger
    assert config_value("TOKENFLOW_LEDGER_KEY") == "blynk_token"


# --- the Ledger's delivery and cleared states (firmware/test/vectors/ledger_states.json) ----------------

LEDGER_STATES = json.loads(
    (FIRMWARE / "test" / "vectors" / "ledger_states.json").read_text(encoding="utf-8")
)["ledger_states"]
CLEAR_REASONS = ("revoked", "transferred")


def _vector_for(ledger: dict[str, Any]) -> dict[str, Any]:
    matches = [v for v in LEDGER_STATES if v["ledger"] == ledger]
    assert len(matches) == 1, f"no single firmware vector for the Ledger content {ledger!r}"
    return matches[0]


@pytest.mark.parametrize("reason", CLEAR_REASONS)
def test_cleared_state_the_cloud_writes_makes_the_firmware_report_none_with_the_reason(reason: str) -> None:
    # The cloud's cleared state, exactly as the contract fixes it.
    vector = _vector_for({"blynk_token": "", "state": reason})
    assert vector["sends_data"] is False
    fields = parse_status_data(vector["status"])
    assert fields["token"] == "none"
    assert fields["reason"] == reason
    assert fields["synced"] == "1"


@pytest.mark.parametrize("token", BLYNK_DOC_TOKENS)
def test_delivery_the_cloud_writes_makes_the_firmware_report_the_fingerprint(token: str) -> None:
    matches = [v for v in LEDGER_STATES if v["ledger"].get("blynk_token") == token and v["sends_data"]]
    assert matches, "the vectors must hold a delivery of each documented token"
    for vector in matches:
        assert vector["ledger"].get("state", "active") == "active"
        fields = parse_status_data(vector["status"])
        assert fields["token"] == fingerprint(token)
        assert "reason" not in fields


@pytest.mark.parametrize("vector", LEDGER_STATES, ids=lambda v: v["name"])
def test_every_ledger_state_report_is_accepted_by_the_webhook(vector: dict[str, Any]) -> None:
    hook = load_integration("tokenflow-status.json")
    body = render(
        hook["json"],
        {
            "PARTICLE_EVENT_NAME": STATUS_EVENT,
            "PARTICLE_EVENT_VALUE": vector["status"],
            "PARTICLE_DEVICE_ID": DEVICE_ID,
            "PARTICLE_PUBLISHED_AT": "2026-01-02T03:04:05.678Z",
        },
    )
    status = parse_status_event(body)
    fields = parse_status_data(vector["status"])
    # The firmware sends data exactly when it reports holding a token.
    assert status.has_token is vector["sends_data"]
    assert status.holds == ("token" if vector["sends_data"] else fields["token"])
    # A reason only ever comes with token=none, and only one of the contract's values.
    if "reason" in fields:
        assert fields["reason"] in CLEAR_REASONS and status.holds == "none"
    # The v=1 status data of before, plus at most the optional reason key.
    assert set(fields) <= {"v", "token", "fw", "synced", "reason"}
    assert vector["status"].startswith(f"v=1;token={fields['token']};fw=1.0.0;synced=1")


def test_ledger_state_vectors_cover_the_contract() -> None:
    names = {v["name"] for v in LEDGER_STATES}
    assert len(names) == len(LEDGER_STATES)
    reasons = {parse_status_data(v["status"]).get("reason") for v in LEDGER_STATES}
    assert reasons == {None, *CLEAR_REASONS}
    tokens = {parse_status_data(v["status"])["token"] for v in LEDGER_STATES}
    assert {"none", "invalid"} <= tokens and tokens - {"none", "invalid"}
    # A token under a cleared state is never used: the two words contradict each other.
    for v in LEDGER_STATES:
        ledger = v["ledger"]
        if ledger.get("state") in CLEAR_REASONS and ledger.get("blynk_token"):
            assert v["sends_data"] is False
            assert parse_status_data(v["status"])["token"] == "invalid"


def test_firmware_reads_the_ledger_keys_the_cloud_writes() -> None:
    assert config_value("TOKENFLOW_LEDGER_KEY") == "blynk_token"
    assert config_value("TOKENFLOW_LEDGER_STATE_KEY") == "state"
    # The names the firmware matches are the contract's, spelled the same in its source.
    source = (FIRMWARE / "lib" / "tokenflow_core" / "src" / "ledger.cpp").read_text(encoding="utf-8")
    for reason in CLEAR_REASONS:
        assert f'"{reason}"' in source
