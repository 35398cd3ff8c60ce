"""POST /webhooks/particle: the Particle status integration's target (no IAM; a shared secret).

The secret header is checked first, in constant time, against the SSM SecureString; a missing or
wrong one gets 401 before the body is even read. Then the firmware's status event
(tokenflow.device_status) goes to tokenflow.lifecycle, which confirms, queues or redelivers.
A separate function from the operator API, so this public route carries only what it needs.

A body this route cannot use (base64 that does not decode, bytes that are not UTF-8, more than
MAX_BODY_BYTES, not JSON, JSON of another shape) is answered 400 with the reason, never 500: a
Particle integration retries failed deliveries, and a 5xx would also page whoever watches the API.
Reasons never quote more of the body than tokens.redact lets through.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenflow import wiring
from tokenflow.device_status import StatusError, parse_status_event
from tokenflow.observability import logger, metrics, tracer
from tokenflow.settings import secret
from tokenflow.tokens import redact

SECRET_HEADER = "x-tokenflow-secret"  # noqa: S105 (a header name)
MAX_BODY_BYTES = 16_384
# Base64 of MAX_BODY_BYTES, rounded up: a longer encoded body is too large before it is decoded.
MAX_ENCODED_CHARS = 4 * ((MAX_BODY_BYTES + 2) // 3)

app = APIGatewayHttpResolver()


def _answer(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _authorized() -> bool:
    provided = app.current_event.headers.get(SECRET_HEADER) or ""
    expected = secret(wiring.settings().webhook_secret_param)
    return hmac.compare_digest(provided.encode(), expected.encode())


@app.post("/webhooks/particle")
def post_status() -> Response:
    if not _authorized():
        metrics.add_metric(name="WebhookRejected", unit="Count", value=1)
        logger.warning("Webhook call without the right secret", extra={"source_ip": _source_ip()})
        return _answer(401, {"statusCode": 401, "message": "missing or wrong X-Tokenflow-Secret header"})
    try:
        status = parse_status_event(_json_body())
    except StatusError as exc:
        message = redact(str(exc))
        metrics.add_metric(name="WebhookUnusable", unit="Count", value=1)
        logger.warning("Unusable status event", extra={"error": message})
        return _answer(400, {"statusCode": 400, "message": message})
    outcome = wiring.lifecycle().report_status(status)
    logger.info(
        "Status report",
        extra={"device_id": status.device_id, "holds": status.holds, "action": outcome.action},
    )
    metrics.add_metric(name="StatusReports", unit="Count", value=1)
    return _answer(200, {"device_id": outcome.device_id, "action": outcome.action, "state": outcome.state})


def _json_body() -> Any:
    """The request body as JSON, or StatusError saying why it is not (never another exception)."""
    event = app.current_event
    body = event.get("body")
    if body is None or body == "":
        raise StatusError("body is empty: expected the status integration's JSON")
    if not isinstance(body, str):
        raise StatusError("body is not text")
    if event.is_base64_encoded:
        if len(body) > MAX_ENCODED_CHARS:
            raise StatusError(f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise StatusError("body is marked base64 but does not decode") from None
    else:
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates cannot come from UTF-8 bytes
            raise StatusError("body is not UTF-8 text") from None
    if len(raw) > MAX_BODY_BYTES:
        raise StatusError(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StatusError(f"body is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise StatusError("body is not JSON") from None


def _source_ip() -> str | None:
    http = app.current_event.request_context.http
    return http.source_ip if http else None


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
