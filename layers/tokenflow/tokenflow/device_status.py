"""The firmware's status event: what a device says about the token it holds.

The firmware publishes ``tokenflow/status`` after connecting and after each Ledger sync. Its data is
a short ``key=value`` list separated by ``;`` (cheap to build on a device, no JSON escaping):

    v=1;token=<fp>;fw=<firmware version>;synced=<0|1>[;reason=<why>]

``token`` is ``none`` (no token in the Ledger), ``invalid`` (the Ledger holds something that is not
an AuthToken) or the token's fingerprint: the first 12 hex characters of its SHA-256
(``tokenflow.tokens.fingerprint``), which reveals nothing usable about the token. Unknown keys are
ignored so that newer firmware can add some. ``synced=1`` means the Ledger has synced since the
device booted, so the report describes the cloud's current value; ``synced=0`` describes the flash
copy read at boot, which may be stale (the API waits for the report after the sync).

``reason`` comes only with ``token=none``, when the device holds no token because the cloud
cleared its Ledger: ``revoked`` or ``transferred``. Any other value (a newer firmware's, or noise)
reads as no reason, never as an error; so does a reason next to a token. ``fw`` is kept only in the
shape the firmware writes it (32 characters of ``A-Za-z0-9._+-``), and ``published_at`` only as a
short string, so nothing odd a caller sends travels further than this module.

Error messages that quote the body go through ``tokens.redact``: a confused caller may send a
Ledger's content, an AuthToken, where the status belongs.

The Particle webhook (firmware/integrations/tokenflow-status.json) wraps the event in a JSON body:
``{"event", "data", "device_id", "published_at"}``; ``coreid`` (Particle's default body) is accepted
in place of ``device_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tokenflow.particle import DEVICE_ID_RE
from tokenflow.tokens import redact

STATUS_EVENT = "tokenflow/status"
MAX_DATA_CHARS = 1024
FINGERPRINT_RE = re.compile(r"[0-9a-f]{12}")
TOKEN_NONE = "none"  # noqa: S105 (a status value, not a secret)
TOKEN_INVALID = "invalid"  # noqa: S105 (a status value, not a secret)
CLEAR_REASONS = ("revoked", "transferred")  # the firmware's clearReasonName() values
FIRMWARE_RE = re.compile(r"[A-Za-z0-9._+-]{1,32}")  # what the firmware's formatStatusData writes
MAX_PUBLISHED_AT_CHARS = 64


class StatusError(ValueError):
    """The webhook body or the event data is not a status event this version understands."""


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    holds: str  # "token", "none" or "invalid"
    fingerprint: str | None
    firmware: str | None
    synced: bool | None
    published_at: str | None
    reason: str | None = None  # why the device holds no token: "revoked" or "transferred"

    @property
    def has_token(self) -> bool:
        return self.holds == "token"


def parse_status_data(data: object) -> dict[str, str]:
    """The ``key=value;...`` data of a status event, checked."""
    if not isinstance(data, str):
        raise StatusError("status data must be a string")
    if not data:
        raise StatusError("status data is empty")
    if len(data) > MAX_DATA_CHARS:
        raise StatusError(f"status data longer than {MAX_DATA_CHARS} characters")
    fields: dict[str, str] = {}
    for part in data.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise StatusError(f"status data field without '=': {redact(part[:40])!r}")
        fields[key.strip()] = value.strip()
    if fields.get("v") != "1":
        raise StatusError("status data version must be v=1")
    token = fields.get("token")
    if token is None:
        raise StatusError("status data has no token field")
    if token not in (TOKEN_NONE, TOKEN_INVALID) and not FINGERPRINT_RE.fullmatch(token):
        raise StatusError("token must be none, invalid or 12 lowercase hex characters")
    return fields


def parse_status_event(body: Any) -> DeviceStatus:
    """A webhook body from the Particle status integration, as a DeviceStatus."""
    if not isinstance(body, dict):
        raise StatusError("webhook body must be a JSON object")
    event = body.get("event")
    if event is not None and event != STATUS_EVENT:
        raise StatusError(f"unexpected event {redact(str(event)[:64])!r}; expected {STATUS_EVENT}")
    device_id = body.get("device_id") or body.get("coreid")
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise StatusError("device_id must be 24 lowercase hex characters")
    fields = parse_status_data(body.get("data"))
    token = fields["token"]
    holds = token if token in (TOKEN_NONE, TOKEN_INVALID) else "token"
    synced = fields.get("synced")
    published_at = body.get("published_at")
    firmware = fields.get("fw") or ""
    reason = fields.get("reason")
    return DeviceStatus(
        device_id=device_id,
        holds=holds,
        fingerprint=token if holds == "token" else None,
        firmware=firmware if FIRMWARE_RE.fullmatch(firmware) else None,
        synced=None if synced is None else synced == "1",
        published_at=(
            published_at
            if isinstance(published_at, str) and 0 < len(published_at) <= MAX_PUBLISHED_AT_CHARS
            else None
        ),
        reason=reason if holds == TOKEN_NONE and reason in CLEAR_REASONS else None,
    )


def format_status_data(
    fingerprint: str | None,
    firmware: str,
    *,
    invalid: bool = False,
    synced: bool = True,
    reason: str | None = None,
) -> str:
    """What the firmware publishes; used by the simulated devices of the local stack.

    ``reason`` (``revoked`` or ``transferred``) is written only when the device holds no token, as
    the firmware's formatStatusData writes it.
    """
    if reason is not None and reason not in CLEAR_REASONS:
        raise ValueError(f"reason must be one of {', '.join(CLEAR_REASONS)}")
    token = TOKEN_INVALID if invalid else (fingerprint or TOKEN_NONE)
    data = f"v=1;token={token};fw={firmware};synced={int(synced)}"
    if reason is not None and token == TOKEN_NONE:
        data += f";reason={reason}"
    return data
