"""The Particle webhook answers every body it cannot use with 400 and a reason, never with a 5xx.

The handler runs as API Gateway calls it (events/api/post-webhook-status.json, changed per case),
against in-process moto: the table from template.yaml and the shared secret in SSM. API Gateway's
HTTP API hands a binary body (``application/octet-stream`` among others) to Lambda base64-encoded
with ``isBase64Encoded: true``
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html),
so those cases are built that way.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TABLE
from tests.support.events import load_event
from tokenflow.device_status import (
    CLEAR_REASONS,
    StatusError,
    format_status_data,
    parse_status_data,
    parse_status_event,
)
from tokenflow.observability import logger
from tokenflow.tokens import fingerprint
from tokenflow_local import lambda_runtime
from tokenflow_local.sample_export import make_tokens
from tokenflow_local.stack import forget_clients

SECRET = "webhook-secret-for-tests"
DEVICE = "e00fce68000000000000abcd"
NOW = "2026-11-23T10:00:00.000Z"
TOKEN = make_tokens(1, seed=77)[0].token
MAX_BODY_BYTES = 16_384


@pytest.fixture
def webhook(dynamodb, monkeypatch):
    boto3.client("ssm").put_parameter(Name="/tf/webhook", Value=SECRET, Type="SecureString")
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("WEBHOOK_SECRET_PARAM", "/tf/webhook")
    monkeypatch.setenv("SWEEP_FUNCTION_NAME", "")
    monkeypatch.setenv("ASSIGN_QUEUE_URL", boto3.client("sqs").create_queue(QueueName="assign")["QueueUrl"])
    forget_clients()
    yield lambda_runtime.load_handler("webhook", fresh=True)
    forget_clients()


def event(body: str | bytes | None, *, base64_encoded: bool = False, content_type: str | None = None) -> dict:
    built = load_event("api/post-webhook-status.json")
    built["headers"]["x-tokenflow-secret"] = SECRET
    if content_type:
        built["headers"]["content-type"] = content_type
    if isinstance(body, bytes):
        body, base64_encoded = base64.b64encode(body).decode(), True
    built["body"] = body
    built["isBase64Encoded"] = base64_encoded
    return built


def call(module, built: dict) -> tuple[int, dict]:
    answer = module.lambda_handler(built, lambda_runtime.LambdaContext(function_name="webhook"))
    body = answer.get("body") or ""
    return answer["statusCode"], json.loads(body) if body else {}


def status_body(data: Any, **fields: Any) -> dict[str, Any]:
    return {"event": "tokenflow/status", "data": data, "device_id": DEVICE, "published_at": NOW, **fields}


def as_json(value: Any) -> str:
    return json.dumps(value)


UNUSABLE = {
    "non-UTF-8 octet-stream": (b"\xff\xfe\x00\x81binary\xc3\x28", "application/octet-stream"),
    "PNG bytes": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "application/octet-stream"),
    "UTF-16 JSON": (as_json(status_body("v=1;token=none")).encode("utf-16"), "application/json"),
    "base64 garbage": ("@@not base64!!", None),
    "oversized JSON": (as_json(status_body("v=1;token=none", pad="x" * MAX_BODY_BYTES)), None),
    "oversized bytes": (b"{" * (MAX_BODY_BYTES + 1), "application/octet-stream"),
    "oversized base64 before decoding": ("A" * (4 * MAX_BODY_BYTES), None),
    "empty": ("", None),
    "not JSON": ("v=1;token=none", "text/plain"),
    "JSON list": (as_json([status_body("v=1;token=none")]), None),
    "JSON number": ("42", None),
    "JSON string": (as_json("v=1;token=none"), None),
    "JSON null": ("null", None),
    "a number too long to read": ("1" * 5000, None),
    "nested deeper than the parser goes": ("[" * 10_000 + "]" * 10_000, None),
    "object in data": (as_json(status_body({"v": "1", "token": "none"})), None),
    "list in data": (as_json(status_body(["v=1", "token=none"])), None),
    "number in data": (as_json(status_body(1)), None),
    "null data": (as_json(status_body(None)), None),
    "object as device id": (as_json(status_body("v=1;token=none", device_id={"id": DEVICE})), None),
    "object as event": (as_json(status_body("v=1;token=none", event={"name": "tokenflow/status"})), None),
    "wrong data version": (as_json(status_body("v=2;token=none")), None),
    "data without token": (as_json(status_body("v=1;fw=1.0.0")), None),
    "token neither none nor a fingerprint": (as_json(status_body("v=1;token=ABCDEF123456")), None),
    "data longer than allowed": (as_json(status_body("v=1;token=none;" + "x=y;" * 300)), None),
}


@pytest.mark.parametrize("case", list(UNUSABLE), ids=list(UNUSABLE))
def test_an_unusable_body_gets_400_with_a_reason(webhook, case):
    body, content_type = UNUSABLE[case]
    base64_encoded = case.startswith(("base64", "oversized base64"))
    status, answer = call(webhook, event(body, base64_encoded=base64_encoded, content_type=content_type))
    assert status == 400, (case, answer)
    assert answer["statusCode"] == 400
    assert isinstance(answer["message"], str) and answer["message"]


def test_a_non_utf8_octet_stream_body_names_the_problem(webhook):
    status, answer = call(webhook, event(b"\xff\xfe\xfd", content_type="application/octet-stream"))
    assert (status, answer["message"]) == (400, "body is not UTF-8 text (byte 0)")


def test_an_oversized_body_says_how_large_a_body_may_be(webhook):
    status, answer = call(webhook, event("x" * (MAX_BODY_BYTES + 1)))
    assert (status, answer["message"]) == (400, f"body larger than {MAX_BODY_BYTES} bytes")


def test_an_unusable_body_is_refused_only_after_the_secret(webhook):
    built = event(b"\xff\xfe", content_type="application/octet-stream")
    built["headers"]["x-tokenflow-secret"] = "wrong"
    assert call(webhook, built)[0] == 401


def test_a_reason_never_quotes_an_auth_token(webhook, caplog):
    """Bodies that carry a token where the status belongs: the answer and the log show it masked."""
    caplog.set_level(logging.INFO)
    bodies = [
        status_body(f"v=1;token=none;{TOKEN}"),  # a field without '=' is quoted in the reason
        status_body(f"v=1;{TOKEN}_copy;token=none"),
        status_body("v=1;token=none", event=TOKEN),  # the event name is quoted in the reason
        status_body("v=1;token=none", event=f"sqr_{TOKEN}"),
    ]
    messages = []
    for body in bodies:
        status, answer = call(webhook, event(as_json(body)))
        assert status == 400
        messages.append(answer["message"])
    assert any(f"{TOKEN[:4]}…" in m for m in messages)  # the reason still points at the field
    logs = "\n".join(logger.registered_formatter.format(r) for r in caplog.records)
    assert "Unusable status event" in logs
    assert TOKEN not in "\n".join(messages) + logs


def test_a_status_report_with_a_clear_reason_is_accepted(webhook):
    data = format_status_data(None, "1.2.0", reason="revoked")
    status, answer = call(webhook, event(as_json(status_body(data))))
    assert status == 200, answer
    assert answer["device_id"] == DEVICE


# ---- the status data's reason ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("v=1;token=none;fw=1.0.0;synced=1;reason=revoked", "revoked"),
        ("v=1;token=none;fw=1.0.0;synced=1;reason=transferred", "transferred"),
        ("v=1;token=none;fw=1.0.0;synced=1", None),  # no reason: never delivered, or older firmware
        ("v=1;token=none;fw=1.0.0;synced=1;reason=stolen", None),  # a reason this version does not know
        ("v=1;token=none;fw=1.0.0;synced=1;reason=REVOKED", None),  # not the lowercase word
        ("v=1;token=none;fw=1.0.0;synced=1;reason=", None),
        ("v=1;token=none;reason=revoked%20now", None),
        (f"v=1;token=none;reason={'revoked' * 40}", None),
        ("v=1;token=invalid;reason=revoked", None),  # only a device without a token has a reason
        (f"v=1;token={fingerprint(TOKEN)};reason=transferred", None),
    ],
)
def test_the_clear_reason_is_read_and_an_unknown_one_is_none(data, reason):
    status = parse_status_event(status_body(data))
    assert status.reason == reason


def test_format_status_data_writes_the_reason_only_without_a_token():
    assert format_status_data(None, "1.0.0", reason="transferred") == (
        "v=1;token=none;fw=1.0.0;synced=1;reason=transferred"
    )
    assert format_status_data(None, "1.0.0") == "v=1;token=none;fw=1.0.0;synced=1"
    with_token = format_status_data(fingerprint(TOKEN), "1.0.0", reason="revoked")
    assert "reason" not in with_token
    assert "reason" not in format_status_data(None, "1.0.0", invalid=True, reason="revoked")
    with pytest.raises(ValueError, match="reason must be one of"):
        format_status_data(None, "1.0.0", reason="stolen")


@pytest.mark.parametrize("reason", CLEAR_REASONS)
def test_a_formatted_reason_reads_back(reason):
    data = format_status_data(None, "2.0.0", synced=False, reason=reason)
    assert parse_status_data(data)["reason"] == reason
    assert parse_status_event(status_body(data)).reason == reason


def test_odd_firmware_and_publish_times_are_dropped_not_refused():
    status = parse_status_event(status_body("v=1;token=none;fw=1.0 beta/7", published_at=["x"]))
    assert status.firmware is None and status.published_at is None
    status = parse_status_event(status_body("v=1;token=none;fw=\ud800", published_at="9" * 100))
    assert status.firmware is None and status.published_at is None
    assert parse_status_event(status_body("v=1;token=none;fw=2.3.4-rc.1+b7")).firmware == "2.3.4-rc.1+b7"


def test_a_status_data_error_quotes_the_field_redacted():
    with pytest.raises(StatusError) as caught:
        parse_status_data(f"v=1;token=none;{TOKEN}")
    assert TOKEN not in str(caught.value) and f"{TOKEN[:4]}…{TOKEN[-4:]}" in str(caught.value)


# ---- anything at all ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
DATA_FIELDS = st.sampled_from(
    [
        *("v=1", "v=2", "token=none", "token=invalid", f"token={fingerprint(TOKEN)}", "fw=1.0.0"),
        *("synced=1", "synced=0", "reason=revoked", "reason=transferred", "reason=x", "=", "==", "token", ""),
    ]
)
WELL_FORMED_DATA = st.tuples(
    st.sampled_from(["token=none", "token=invalid", f"token={fingerprint(TOKEN)}"]),
    st.lists(DATA_FIELDS | st.text(alphabet="abcz=019;.-_ ", max_size=12), max_size=4),
).map(lambda parts: ";".join(["v=1", parts[0], *parts[1]]))
STATUS_DATA = st.one_of(
    WELL_FORMED_DATA,
    st.lists(DATA_FIELDS, max_size=6).map(";".join),
    st.text(max_size=80),
    JSON_VALUES,
)
STATUS_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "event": st.one_of(st.just("tokenflow/status"), JSON_VALUES),
        "data": STATUS_DATA,
        "device_id": st.one_of(
            st.just(DEVICE), st.text(alphabet="0123456789abcdefE", max_size=26), JSON_VALUES
        ),
        "coreid": st.one_of(st.just(DEVICE), JSON_VALUES),
        "published_at": st.one_of(st.just(NOW), JSON_VALUES),
    },
)
# Bodies the status integration could send: every required field there, the rest varied.
NEAR_VALID = st.fixed_dictionaries(
    {"event": st.just("tokenflow/status"), "data": WELL_FORMED_DATA, "device_id": st.just(DEVICE)},
    optional={"published_at": st.one_of(st.just(NOW), JSON_VALUES), "extra": JSON_VALUES},
)
BODIES = st.one_of(
    NEAR_VALID.map(lambda v: event(as_json(v))),
    st.binary(max_size=300).map(lambda b: event(b, content_type="application/octet-stream")),
    st.text(max_size=300).map(lambda t: event(t)),
    JSON_VALUES.map(lambda v: event(as_json(v))),
    STATUS_LIKE.map(lambda v: event(as_json(v))),
    STATUS_LIKE.map(lambda v: event(as_json(v).encode("utf-8"), content_type="application/octet-stream")),
    st.text(max_size=200).map(lambda t: event(t, base64_encoded=True)),
)


@pytest.mark.slow
def test_any_body_at_all_gets_an_answer_below_500(webhook):
    answers: dict[int, int] = {}

    # A Hypothesis test inside a test with a function-scoped fixture: the handler and moto are set up
    # once, and every example is one more request to the same function, as in production.
    @settings(
        max_examples=250,
        deadline=None,
        database=None,  # nothing written into the checkout
        derandomize=True,  # the same examples on every run: CI cannot flip on luck
        suppress_health_check=list(HealthCheck),
    )
    @given(BODIES)
    def any_body(built: dict) -> None:
        status, answer = call(webhook, built)
        assert status in (200, 400), (status, answer, built["body"][:200])
        if status == 400:
            assert answer["message"]
        answers[status] = answers.get(status, 0) + 1

    any_body()
    assert answers.get(400, 0) > 0 and answers.get(200, 0) > 0, answers  # both sides were reached
