"""The operator HTTP API (API Gateway HTTP API, IAM-authorized): routes -> tokenflow.fleet / lifecycle.

Requests and answers are validated against tokenflow.api_models; the OpenAPI description is served
at /openapi.json and a Swagger UI at /swagger. Only ``GET /devices/{id}/token`` answers with an
AuthToken, so IAM can deny that one route to most operators.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.models import Tag
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenflow import api_models as m
from tokenflow import wiring
from tokenflow.fleet import BadRequest, LookupUnavailable, NotFound
from tokenflow.lifecycle import Conflict, Unavailable
from tokenflow.model import DEVICE_STATES
from tokenflow.observability import logger, metrics, tracer

# The groups /swagger shows, in this order (Swagger UI keeps the order of the top-level tags): what
# an operator reads first (the summary, then devices, tokens and imports), then what changes things.
TAGS = [
    Tag(name="summary", description="The fleet at a glance: counts, stock, pause, activity per hour"),
    Tag(name="devices", description="Devices: by state, by id or serial number, timeline, QR label, reveal"),
    Tag(name="tokens", description="Which device holds a token"),
    Tag(name="imports", description="Blynk exports and their reports"),
    Tag(name="lifecycle", description="Acting: assign now, transfer (RMA), revoke"),
]
OPENAPI = {"title": "Tokenflow operator API", "version": "1", "tags": TAGS}

app = APIGatewayHttpResolver(enable_validation=True)
app.enable_swagger(path="/swagger", **OPENAPI)

DevicePath = Annotated[str, Path(pattern=m.DEVICE_ID_PATTERN, description="Particle device id")]
StateQuery = Annotated[
    str | None, Query(pattern=f"^({'|'.join(DEVICE_STATES)})$", description="Only devices in this state")
]


def _caller() -> str | None:
    """The IAM identity that signed the request (None behind the local gateway)."""
    iam = (
        app.current_event.request_context.authorizer.iam
        if app.current_event.request_context.authorizer
        else None
    )
    return iam.user_arn if iam else None


def _error(status: int, message: str) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"statusCode": status, "message": message},
    )


@app.exception_handler(NotFound)
def _not_found(exc: NotFound) -> Response:
    return _error(404, str(exc))


@app.exception_handler(BadRequest)
def _bad_request(exc: BadRequest) -> Response:
    return _error(400, str(exc))


@app.exception_handler(Conflict)
def _conflict(exc: Conflict) -> Response:
    return _error(409, str(exc))


@app.exception_handler(Unavailable)
def _unavailable(exc: Unavailable) -> Response:
    return _error(503, str(exc))


@app.exception_handler(LookupUnavailable)
def _lookup_unavailable(exc: LookupUnavailable) -> Response:
    return _error(503, str(exc))


# ---- reading -------------------------------------------------------------------------------------


@app.get("/summary", tags=["summary"], summary="Counts per token and device state, low stock, latest imports")
def get_summary() -> m.Summary:
    return wiring.fleet().summary()


@app.get("/activity", tags=["summary"], summary="Tokens assigned and confirmed per hour, oldest first")
def get_activity(
    hours: Annotated[int, Query(ge=1, le=168, description="How many hours back")] = 24,
) -> m.Activity:
    return wiring.fleet().activity(hours)


@app.get("/imports", tags=["imports"], summary="The latest imports, newest first")
def get_imports(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> m.ImportList:
    return wiring.fleet().imports(limit)


@app.get("/imports/<import_id>", tags=["imports"], summary="One import and its full report")
def get_import(import_id: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]) -> m.Import:
    return wiring.fleet().import_report(import_id)


@app.get("/devices", tags=["devices"], summary="Devices by state, a page at a time")
def get_devices(
    state: StateQuery = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    not_live_for: Annotated[
        str | None,
        Query(
            pattern=r"^\d{1,5}[mhd]$",
            description="Confirmed devices with no Blynk value for this long (e.g. 24h), with hints",
        ),
    ] = None,
) -> m.DevicePage:
    return wiring.fleet().devices(state, cursor, limit, not_live_for)


@app.get(
    "/devices/<device_id>",
    tags=["devices"],
    summary="One device: state, token (masked), QR token, timestamps",
)
def get_device(device_id: DevicePath) -> m.Device:
    return wiring.fleet().device(device_id)


@app.get("/devices/<device_id>/history", tags=["devices"], summary="The device's timeline, oldest first")
def get_device_history(device_id: DevicePath) -> m.DeviceHistory:
    return wiring.fleet().device_history(device_id)


@app.get(
    "/serial_numbers/<serial_number>",
    tags=["devices"],
    summary="Which device carries a serial number (Particle's lookup, 50 an hour)",
)
def get_serial_number(
    serial_number: Annotated[str, Path(pattern=r"^[A-Za-z0-9]{6,32}$", description="Particle serial number")],
) -> m.SerialNumberLookup:
    return wiring.fleet().device_by_serial(serial_number)


@app.get(
    "/devices/<device_id>/qr",
    tags=["devices"],
    summary="The device's QR label as image/png",
    responses={200: {"description": "PNG image", "content": {"image/png": {}}}},
)
def get_device_qr(device_id: DevicePath):  # binary: no response model
    png = wiring.fleet().device_qr(device_id)
    return Response(
        status_code=200,
        content_type="image/png",
        body=png,
        headers={"Cache-Control": "private, max-age=60"},
    )


@app.get("/devices/<device_id>/token", tags=["devices"], summary="Reveal the device's AuthToken (audited)")
def get_device_token(device_id: DevicePath) -> Response[m.RevealedToken]:
    token = wiring.fleet().reveal_token(device_id)
    logger.info("AuthToken revealed", extra={"device_id": device_id, "caller": _caller()})
    metrics.add_metric(name="TokensRevealed", unit="Count", value=1)
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body={"device_id": device_id, "token": token},
        headers={"Cache-Control": "no-store"},
    )


@app.get(
    "/tokens/<token_ref>",
    tags=["tokens"],
    summary="Which device holds a token (AuthToken, QR token or token id)",
)
def get_token(token_ref: Annotated[str, Path(min_length=32, max_length=64)]) -> m.Token:
    return wiring.fleet().token(token_ref)


@app.get("/openapi.json", include_in_schema=False)
def get_openapi():
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=app.get_openapi_json_schema(**OPENAPI),
    )


# ---- acting --------------------------------------------------------------------------------------


@app.post("/devices/<device_id>/assign", tags=["lifecycle"], summary="Queue the device for its token now")
def post_assign(device_id: DevicePath) -> Response[m.AssignAnswer]:
    answer = wiring.lifecycle().assign_now(device_id)
    logger.info("Assign requested", extra={"device_id": device_id, "caller": _caller()})
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=answer)


@app.post(
    "/devices/<device_id>/transfer",
    tags=["lifecycle"],
    summary="RMA: move the device's token to a replacement",
)
def post_transfer(device_id: DevicePath, request: m.TransferRequest) -> Response[m.TransferAnswer]:
    answer = wiring.lifecycle().transfer(device_id, request.to)
    logger.info("Transfer requested", extra={"from": device_id, "to": request.to, "caller": _caller()})
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=answer)


@app.post(
    "/tokens/<token_ref>/revoke", tags=["lifecycle"], summary="The token was deleted in Blynk: revoke it"
)
def post_revoke(token_ref: Annotated[str, Path(min_length=32, max_length=64)]) -> m.RevokeAnswer:
    tid = wiring.fleet().resolve_token(token_ref)
    answer = wiring.lifecycle().revoke(tid)
    logger.info("Revoke requested", extra={"token_id": tid[:12], "caller": _caller()})
    return answer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)  # the reveal route answers with a token
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
