"""The HTTP API's request and response shapes (the OpenAPI description is generated from them).

Answers are validated against these models before they leave, and only the fields declared here go
out: a field added to a stored item never reaches a client by accident. No model but
``RevealedToken`` has a field that can hold an AuthToken.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

DEVICE_ID_PATTERN = r"^[0-9a-f]{24}$"
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN, description="Particle device id (24 hex)")]


class TokenRef(BaseModel):
    token_id: str = Field(description="SHA-256 of the AuthToken: how the API names a token")
    fingerprint: str | None = Field(None, description="First 12 hex characters of the SHA-256")
    mask: str | None = Field(None, description="First and last four characters, e.g. xw7I…FAVl")


class ImportBrief(BaseModel):
    id: str
    status: str | None = None
    source_key: str | None = None
    tokens_added: int | None = None
    finished_at: str | None = None


class Liveness(BaseModel):
    """Confirmed vs live in Blynk, as the last complete verification walk found it."""

    confirmed: int = Field(description="Confirmed devices the walk went through")
    live: int = Field(description="With a Blynk value within after_hours")
    waiting: int = Field(description="Confirmed less than after_hours ago, no Blynk value yet")
    not_live: int = Field(description="Confirmed for longer than after_hours, no Blynk value within it")
    not_live_percent: float
    causes: dict[str, int] = Field(
        description="Not live, by cause: wrong-region, invalid-token, no-data, stale, unchecked"
    )
    after_hours: int
    region: str | None = Field(None, description="The Blynk region the checks asked")
    datastream: str | None = None
    checks: dict[str, int] = Field(
        default_factory=dict,
        description="Blynk's answers during the walk: ok, no-data, invalid-token, wrong-region:<r>",
    )
    as_of: str | None = Field(None, description="When the walk finished")


class Pause(BaseModel):
    """Assignment is paused stack-wide: Particle said the configuration is wrong."""

    reason: str = Field(description="What Particle refused, e.g. the access token (401)")
    since: str = Field(description="When the pause began")


class Summary(BaseModel):
    tokens: dict[str, int] = Field(description="Tokens per state")
    devices: dict[str, int] = Field(description="Devices per state")
    low_stock: bool = Field(description="Fewer available tokens than the low-stock threshold")
    low_stock_threshold: int
    recent_imports: list[ImportBrief]
    paused: Pause | None = Field(None, description="Set while assignment is paused (null: running)")
    liveness: Liveness | None = Field(
        None, description="Confirmed vs live in Blynk (null before the first walk)"
    )


class Device(BaseModel):
    device_id: str
    state: str | None
    token: TokenRef | None = None
    qr_token: str | None = Field(None, description="The QR token printed on the device's label")
    metadata: dict[str, str] | None = Field(None, description="The export's other columns for the token")
    name: str | None = None
    serial_number: str | None = None
    platform_id: int | None = None
    attempts: int = Field(0, description="Failed Ledger writes so far")
    last_error: str | None = None
    retryable: bool | None = None
    redeliveries: int = 0
    reported_fingerprint: str | None = Field(
        None, description="What the device last reported, if it differed"
    )
    previous_token_mask: str | None = None
    transferred_from: str | None = None
    transferred_to: str | None = None
    first_seen_at: str | None = None
    assigned_at: str | None = None
    delivered_at: str | None = None
    confirmed_at: str | None = None
    failed_at: str | None = None
    retired_at: str | None = None
    clear_reason: str | None = Field(
        None, description="Why the device's Ledger is (or was) cleared: revoked or transferred"
    )
    cleared_at: str | None = Field(None, description="When the cleared state was written to its Ledger")
    mismatches: int = Field(0, description="Status reports that named another token than the one given")
    mismatch_at: str | None = None
    redelivered_at: str | None = None
    updated_at: str | None = None
    live_at: str | None = Field(None, description="When a Blynk value was first read for its token")
    blynk_last_seen: str | None = Field(None, description="The time of the last value Blynk holds")
    blynk_check: str | None = Field(
        None, description="The last Blynk check: ok, no-data, invalid-token or wrong-region:<region>"
    )
    blynk_checked_at: str | None = None
    liveness_hint: str | None = Field(
        None, description="For a confirmed device not live: the likely cause and fix"
    )


class DevicePage(BaseModel):
    devices: list[Device]
    cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last")


class DeviceEvent(BaseModel):
    at: str
    event: str = Field(
        description="What happened: seen, assigned, delivered, confirmed, ... or a token event"
    )
    source: str = Field(description="device (its own timestamps) or token (its token's history)")
    device_id: str | None = Field(None, description="The device the event concerns, when it names one")
    details: dict[str, Any] = Field(default_factory=dict, description="The event's other fields")


class DeviceHistory(BaseModel):
    device_id: str
    events: list[DeviceEvent] = Field(description="Oldest first")


class SerialNumberLookup(BaseModel):
    serial_number: str
    device_id: str = Field(description="The device Particle knows under this serial number")
    known: bool = Field(description="Whether Tokenflow has a record of the device")


class ActivityHour(BaseModel):
    hour: str = Field(description="The hour (UTC), YYYY-MM-DDTHH")
    assigned: int = Field(description="Tokens that became assigned in that hour")
    confirmed: int = Field(description="Tokens their device confirmed in that hour")


class Activity(BaseModel):
    hours: list[ActivityHour] = Field(description="Oldest first, the current hour last")


class TokenEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    event: str
    at: str


class Token(BaseModel):
    token_id: str
    fingerprint: str | None = None
    mask: str | None = None
    qr_token: str | None = None
    state: str | None = None
    device_id: str | None = None
    import_id: str | None = None
    import_row: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None
    assigned_at: str | None = None
    delivered_at: str | None = None
    confirmed_at: str | None = None
    revoked_at: str | None = None
    released_at: str | None = None
    history: list[TokenEvent] = Field(default_factory=list)


class Import(BaseModel):
    import_id: str
    status: str | None = None
    source_key: str | None = None
    size_bytes: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int | None = None
    tokens_added: int | None = None
    tokens_already_known: int | None = None
    rows_rejected: int | None = None
    reason: str | None = None
    report_key: str | None = None
    report: dict[str, Any] | None = Field(None, description="The full report (rejected rows masked)")


class ImportList(BaseModel):
    imports: list[Import]


class RevealedToken(BaseModel):
    device_id: str
    token: str = Field(description="The AuthToken itself")


class AssignAnswer(BaseModel):
    device_id: str
    state: str | None
    queued: bool
    sweep_requested: bool


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: DeviceId


class ReplacedToken(TokenRef):
    state: str = Field(description="available (it never reached a Ledger) or released (never reused)")


class TransferAnswer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    token: TokenRef
    old_state: str = Field(description="clearing: its Ledger gets the cleared state, then it is retired")
    new_state: str = Field(description="pending: its Ledger gets the token")
    new_previous_state: str | None = Field(None, description="The replacement's state before the transfer")
    replaced_token: ReplacedToken | None = Field(
        None, description="The replacement's own token, which left it"
    )


class RevokeAnswer(BaseModel):
    token: TokenRef
    state: str
    already_revoked: bool
    device_id: str | None
    device_state: str | None = Field(
        None, description="clearing: the holder's Ledger gets the cleared state, then a fresh token"
    )
    device_requeued: bool


class WebhookAnswer(BaseModel):
    device_id: str
    action: str
    state: str | None
