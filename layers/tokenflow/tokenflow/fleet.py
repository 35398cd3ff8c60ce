"""What operators see: the fleet's counts, devices, tokens and imports, as the API answers them.

Every view names a token by its id (the SHA-256 of the AuthToken), its fingerprint and its mask;
none carries the AuthToken itself. ``reveal_token`` is the one exception, behind its own route.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tokenflow import liveness
from tokenflow.store import DEVICE_STATES, Store, keys
from tokenflow.tokens import is_auth_token, is_qr_token, is_token_id, token_id

MAX_PAGE = 100
MAX_CURSOR_CHARS = 2048

DEVICE_VIEW_FIELDS = (
    "name",
    "serial_number",
    "platform_id",
    "first_seen_at",
    "assigned_at",
    "delivered_at",
    "confirmed_at",
    "failed_at",
    "retired_at",
    "clear_reason",
    "cleared_at",
    "updated_at",
    "last_error",
    "retryable",
    "transferred_from",
    "transferred_to",
    "mismatch_at",
    "redelivered_at",
)
TOKEN_VIEW_FIELDS = (
    "qr_token",
    "state",
    "device_id",
    "import_id",
    "import_row",
    "metadata",
    "created_at",
    "assigned_at",
    "delivered_at",
    "confirmed_at",
    "revoked_at",
    "released_at",
)


class NotFound(LookupError):
    """The thing asked for does not exist (the message says what)."""


class BadRequest(ValueError):
    """The request cannot be answered as asked (the message says why)."""


class LookupUnavailable(Exception):
    """Particle did not answer a lookup the request needs (the message says which)."""


class ReportReader(Protocol):
    def read_report(self, key: str) -> dict[str, Any] | None: ...


class SerialLookup(Protocol):
    def device_id_for_serial(self, serial_number: str) -> str | None: ...

    def deadline(self, at: float | None) -> AbstractContextManager[None]: ...


# A Particle serial number: letters and digits (e.g. P046AB0000001, E26AAA111111111); the bound keeps
# anything else out of the lookup's path.
SERIAL_RE = re.compile(r"[A-Za-z0-9]{6,32}")
# The API Gateway integration ends at 30 s: a lookup the cloud makes wait longer answers 503 instead.
SERIAL_LOOKUP_SECONDS = 10.0
# A device's own timestamps, as events of its timeline.
DEVICE_TIMELINE_FIELDS = (
    ("first_seen_at", "seen"),
    ("assigned_at", "assigned"),
    ("delivered_at", "delivered"),
    ("confirmed_at", "confirmed"),
    ("failed_at", "failed"),
    ("mismatch_at", "mismatch"),
    ("redelivered_at", "redelivered"),
    ("cleared_at", "cleared"),
    ("retired_at", "retired"),
    ("live_at", "live"),
)


def token_ref(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """How a device's token is shown: id, fingerprint and mask, never the token."""
    tid = item.get("token_id")
    if not tid:
        return None
    return {"token_id": tid, "fingerprint": item.get("token_fp"), "mask": item.get("token_mask")}


def device_view(
    item: Mapping[str, Any],
    token: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
    window: timedelta | None = None,
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "device_id": item["device_id"],
        "state": item.get("state"),
        "token": token_ref(item),
        "attempts": int(item.get("attempts", 0)),
        "redeliveries": int(item.get("redeliveries", 0)),
        "mismatches": int(item.get("mismatches", 0)),
        "reported_fingerprint": item.get("reported_fp"),
    }
    view.update({k: item.get(k) for k in DEVICE_VIEW_FIELDS})
    view.update(liveness.liveness_view(item, now or datetime.now(UTC), window))
    if item.get("previous_token_mask"):
        view["previous_token_mask"] = item["previous_token_mask"]
    if token is not None:
        view["qr_token"] = token.get("qr_token")
        view["metadata"] = token.get("metadata") or {}
    return view


def token_view(
    tid: str, item: Mapping[str, Any], history: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "token_id": tid,
        "fingerprint": item.get("token_fp"),
        "mask": item.get("token_mask"),
    }
    view.update({k: item.get(k) for k in TOKEN_VIEW_FIELDS})
    view["metadata"] = view["metadata"] or {}
    if history is not None:
        view["history"] = [
            {k: v for k, v in keys.without_key(event).items() if k != "kind"} for event in history
        ]
    return view


def encode_cursor(state: str, last_key: Mapping[str, Any]) -> str:
    raw = json.dumps({"s": state, "k": last_key}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, dict[str, Any] | None]:
    """A cursor from ``encode_cursor``, checked: a forged one cannot point outside its listing."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadRequest("cursor is too long")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        state, key = data["s"], data["k"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadRequest("cursor is not one this API handed out") from None
    # The store's key layout says what a key of that state's listing looks like.
    if state not in DEVICE_STATES or not keys.is_device_listing_key(state, key):
        raise BadRequest("cursor is not one this API handed out")
    return state, key or None  # an empty key: the start of that state


class Fleet:
    """Read side of the operator API."""

    def __init__(
        self,
        store: Store,
        *,
        low_stock_threshold: int,
        reports: ReportReader | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        serials: Callable[[], SerialLookup] | None = None,
    ) -> None:
        self.store = store
        self.low_stock_threshold = low_stock_threshold
        self.reports = reports
        self.now = now
        self.serials = serials  # the Particle client, made at its first use (only a search needs it)

    def summary(self) -> dict[str, Any]:
        """Counts per state, the low-stock flag and the latest imports: one DynamoDB read."""
        counts = self.store.summary()
        available = counts["tokens"]["available"]
        return {
            "tokens": counts["tokens"],
            "devices": counts["devices"],
            "low_stock": available < self.low_stock_threshold,
            "low_stock_threshold": self.low_stock_threshold,
            "recent_imports": counts["recent_imports"],
            "paused": counts.get("paused"),  # tokenflow.breaker; read with the counters
            "liveness": liveness.summary_block(counts.get("liveness")),
        }

    def activity(self, hours: int) -> dict[str, Any]:
        """Tokens assigned and confirmed in each of the last ``hours`` hours (UTC), oldest first."""
        return {"hours": self.store.activity(self.now(), hours)}

    # ---- devices -------------------------------------------------------------------------------

    def device_history(self, device_id: str) -> dict[str, Any]:
        """A device's timeline: its own timestamps and its token's history, oldest first."""
        item = self.store.get_device(device_id)
        if not item:
            raise NotFound(f"device {device_id} is unknown to Tokenflow")
        events: list[dict[str, Any]] = [
            {"at": item[field], "event": what, "source": "device", "device_id": device_id, "details": {}}
            for field, what in DEVICE_TIMELINE_FIELDS
            if item.get(field)
        ]
        if item.get("token_id"):
            for event in self.store.history(item["token_id"]):
                details = {
                    k: v
                    for k, v in keys.without_key(event).items()
                    if k not in ("kind", "event", "at", "device_id")
                }
                events.append(
                    {
                        "at": event["at"],
                        "event": event["event"],
                        "source": "token",
                        "device_id": event.get("device_id"),
                        "details": details,
                    }
                )
        events.sort(key=lambda e: (str(e["at"]), e["source"] == "token"))
        return {"device_id": device_id, "events": events}

    def device_by_serial(self, serial_number: str) -> dict[str, Any]:
        """Which device carries a serial number (Particle's lookup), and whether Tokenflow knows it."""
        if not SERIAL_RE.fullmatch(serial_number):
            raise BadRequest("a serial number is 6 to 32 letters and digits")
        if self.serials is None:
            raise LookupUnavailable(
                "no Particle product is configured, so serial numbers cannot be looked up"
            )
        from tokenflow.particle import ParticleError, ParticleNotFound

        client = self.serials()
        try:
            with client.deadline(time.monotonic() + SERIAL_LOOKUP_SECONDS):
                device_id = client.device_id_for_serial(serial_number)
        except ParticleNotFound:
            device_id = None
        except ParticleError as exc:
            raise LookupUnavailable(f"Particle did not answer the serial number lookup ({exc})") from None
        if device_id is None:
            raise NotFound(f"Particle knows no device with serial number {serial_number}")
        known = self.store.get_device(device_id) is not None
        return {"serial_number": serial_number, "device_id": device_id, "known": known}

    def device(self, device_id: str) -> dict[str, Any]:
        item = self.store.get_device(device_id)
        if not item:
            raise NotFound(f"device {device_id} is unknown to Tokenflow")
        token = self.store.get_token(item["token_id"]) if item.get("token_id") else None
        return device_view(item, token or {})

    def devices(
        self, state: str | None, cursor: str | None, limit: int, not_live_for: str | None = None
    ) -> dict[str, Any]:
        """One page of devices in ``state`` (every state, in order, when None), from the listing by state.

        The cursor carries the state it stopped in, so a listing of every state resumes where it was.
        ``not_live_for`` (``24h``, ``90m``, ``2d``; confirmed devices only) keeps the stragglers:
        confirmed for longer than that and no Blynk value within it, each with the hint of its cause.
        A page may then hold fewer devices than ``limit`` (the others of its slice were live): follow
        the cursor to the end.
        """
        window: timedelta | None = None
        if not_live_for is not None:
            try:
                window = liveness.parse_duration(not_live_for)
            except ValueError as exc:
                raise BadRequest(f"not_live_for: {exc}") from None
            if state not in (None, "confirmed"):
                raise BadRequest("not_live_for lists confirmed devices: use it with state=confirmed")
            state = "confirmed"
        limit = max(1, min(limit, MAX_PAGE))
        states = [state] if state else list(DEVICE_STATES)
        start_key: dict[str, Any] | None = None
        if cursor:
            at, start_key = decode_cursor(cursor)
            if at not in states:
                raise BadRequest("cursor belongs to another listing")
            states = states[states.index(at) :]
        ids: list[str] = []
        next_cursor = None
        for current in states:
            page, last = self.store.devices_in_state(current, limit - len(ids), start_key)
            start_key = None
            ids.extend(page)
            if last:
                next_cursor = encode_cursor(current, last)
                break
            if len(ids) >= limit:
                following = states[states.index(current) + 1 :]
                if following:  # resume at the start of the next state
                    next_cursor = encode_cursor(following[0], {})
                break
        items = self.store.get_devices(ids) if ids else {}
        # An item that changed state between the index read and the item read is shown as it is now.
        now = self.now()
        kept = [
            i for i in ids if i in items and (window is None or liveness.straggler(items[i], now, window))
        ]
        # Each device's QR token and export columns, as GET /devices/{id} shows them: one more
        # BatchGetItem per page (the tokens' plain fields, never the AuthToken or the QR image).
        held = [items[i]["token_id"] for i in kept if items[i].get("token_id")]
        tokens = self.store.get_tokens(held) if held else {}
        devices = [
            device_view(items[i], tokens.get(items[i].get("token_id") or ""), now=now, window=window)
            for i in kept
        ]
        return {"devices": devices, "cursor": next_cursor}

    def device_qr(self, device_id: str) -> bytes:
        item = self.store.get_device(device_id)
        if not item:
            raise NotFound(f"device {device_id} is unknown to Tokenflow")
        if not item.get("token_id"):
            raise NotFound(f"device {device_id} holds no token, so it has no QR label")
        token = self.store.get_token(item["token_id"], with_image=True)
        png: bytes | None = (token or {}).get("qr_png")
        if not png:
            raise NotFound(f"the export of device {device_id}'s token had no QR image")
        return png

    def reveal_token(self, device_id: str) -> str:
        item = self.store.get_device(device_id)
        if not item:
            raise NotFound(f"device {device_id} is unknown to Tokenflow")
        if not item.get("token_id"):
            raise NotFound(f"device {device_id} holds no token")
        return self.store.get_token_secret(item["token_id"])

    # ---- tokens --------------------------------------------------------------------------------

    def resolve_token(self, ref: str) -> str:
        """The token id for an AuthToken, a QR token or a token id."""
        if is_token_id(ref):
            return ref
        if is_qr_token(ref):
            tid = self.store.find_token_by_qr(ref)
            if not tid:
                raise NotFound("no stored token has this QR token")
            return tid
        if is_auth_token(ref):
            return token_id(ref)
        raise BadRequest("expected an AuthToken, a QR token (sqr_...) or a token id (64 hex characters)")

    def token(self, ref: str) -> dict[str, Any]:
        tid = self.resolve_token(ref)
        item = self.store.get_token(tid)
        if not item:
            raise NotFound("no such token")
        return token_view(tid, item, self.store.history(tid))

    # ---- imports -------------------------------------------------------------------------------

    def imports(self, limit: int) -> dict[str, Any]:
        items, _ = self.store.list_imports(max(1, min(limit, MAX_PAGE)))
        return {"imports": [import_view(i) for i in items]}

    def import_report(self, import_id: str) -> dict[str, Any]:
        if not is_token_id(import_id):
            raise BadRequest("an import id is the file's SHA-256 (64 lowercase hex characters)")
        item = self.store.get_import(import_id)
        if not item:
            raise NotFound(f"no import {import_id}")
        view = import_view(item)
        key = (item.get("summary") or {}).get("report_key")
        report = self.reports.read_report(key) if key and self.reports else None
        view["report"] = report or item.get("summary") or {}
        return view


def import_view(item: Mapping[str, Any]) -> dict[str, Any]:
    summary = item.get("summary") or {}
    return {
        "import_id": keys.import_id_of(item) or item.get("id"),
        "status": item.get("status"),
        "source_key": item.get("source_key"),
        "size_bytes": item.get("size_bytes"),
        "started_at": item.get("started_at"),
        "finished_at": item.get("finished_at"),
        "attempts": item.get("attempts"),
        "tokens_added": summary.get("tokens_added"),
        "tokens_already_known": summary.get("tokens_already_known"),
        "rows_rejected": summary.get("rows_rejected"),
        "reason": summary.get("reason"),
        "report_key": summary.get("report_key"),
    }
