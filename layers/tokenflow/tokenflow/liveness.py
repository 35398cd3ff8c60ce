"""Live after confirmed: does a confirmed device's data reach Blynk, where the customer looks?

A device is ``confirmed`` when it reports that it holds its token; it is *live* when Blynk holds a
recent value in the "last publish" datastream its integration writes (default V6, which the seed's
integration fills with ``{{PARTICLE_PUBLISHED_AT}}`` on every publish). Blynk never shows devices
that send through the HTTP API as online (REFERENCE.md), so that value is the evidence.

The verification pass (functions/verify, on the sweep's schedule) walks the confirmed devices from
the index of devices by state, a page at a time, resuming where its previous run stopped (the cursor is kept
in the store), within its own time budget and at most ``rate`` Blynk requests per second. It reads
Blynk for a device that is not live yet, or whose last value is older than ``recheck_after``; a
device seen recently costs no request. Each check is recorded on the device (``blynk_check``: ok,
no-data, invalid-token or wrong-region:<region>; ``blynk_last_seen``; ``live_at``). When a walk
completes, its counts become the ``latest`` liveness the summary shows, and the share of confirmed
devices not live after ``after_hours`` is published as the metric ``DevicesNotLivePercent``
(alarmed in template.yaml).

``blynk_last_seen`` is the datastream's value when it is a time (the publish time the integration
writes); any other value proves data arrived but not when, so the time of the check stands in.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tokenflow.blynk import INVALID_TOKEN, NO_DATA, OK, WRONG_REGION, BlynkError, BlynkRead
from tokenflow.observability import logger, metrics
from tokenflow.store import Store
from tokenflow.store.liveness import LivenessStore
from tokenflow.store.shapes import PlainItem

DEFAULT_AFTER_HOURS = 24
DEFAULT_RATE = 5.0
PAGE_SIZE = 25
# The causes a straggler is listed with, and what to do about each.
HINTS = {
    WRONG_REGION: (
        "the token belongs to Blynk region {region}: set BlynkRegion and the Blynk integration's URL "
        "(firmware/integrations/blynk_https_get.json) to {region}"
    ),
    INVALID_TOKEN: (
        "Blynk does not know this token (deleted in Blynk?): revoke it (tokenflow revoke) for a fresh one"
    ),
    NO_DATA: (
        "Blynk has no value in the datastream yet: check that the Blynk integration exists in Particle, "
        "its query maps the datastream, and the device publishes"
    ),
    "stale": "Blynk's last value is old: the device stopped publishing, or the integration stopped",
    "unchecked": "not checked in Blynk yet (the verification pass reaches it on its next runs)",
}
_DURATION_RE = re.compile(r"^(\d{1,5})([mhd])$")


class BlynkReader(Protocol):
    region: str

    def get(self, token: str, datastream: str = ...) -> BlynkRead: ...


def parse_duration(text: str) -> timedelta:
    """``90m``, ``24h``, ``7d`` -> a timedelta (ValueError otherwise)."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError("a duration is a number and m, h or d, e.g. 24h")
    number, unit = int(match.group(1)), match.group(2)
    return timedelta(minutes=number) if unit == "m" else timedelta(hours=number * (24 if unit == "d" else 1))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def last_check(item: Mapping[str, Any]) -> str | None:
    """The device's last Blynk check, if it was about the token the device holds now."""
    if item.get("token_id") and item.get("blynk_token") == item.get("token_id"):
        check: str | None = item.get("blynk_check")
        return check
    return None


def last_seen(item: Mapping[str, Any]) -> datetime | None:
    """When the device's data last reached Blynk (for the token it holds now), if ever."""
    return _parse_time(item.get("blynk_last_seen")) if last_check(item) is not None else None


def is_live(item: Mapping[str, Any], now: datetime, window: timedelta) -> bool:
    seen = last_seen(item)
    return seen is not None and seen >= now - window


def cause(item: Mapping[str, Any]) -> str:
    """Why a confirmed device is not live: wrong-region, invalid-token, no-data, stale or unchecked."""
    check = last_check(item)
    if check is None:
        return "unchecked"
    if check.startswith(WRONG_REGION):
        return WRONG_REGION
    if check == OK:
        return "stale"
    return check if check in (INVALID_TOKEN, NO_DATA) else "unchecked"


def hint(item: Mapping[str, Any]) -> str:
    why = cause(item)
    check = last_check(item) or ""
    region = check.split(":", 1)[1] if why == WRONG_REGION and ":" in check else "?"
    return HINTS[why].format(region=region)


def straggler(item: Mapping[str, Any], now: datetime, window: timedelta) -> bool:
    """Confirmed for longer than ``window`` and no Blynk value within it."""
    if item.get("state") != "confirmed":
        return False
    confirmed = _parse_time(item.get("confirmed_at"))
    if confirmed is not None and confirmed > now - window:
        return False  # young: it has had less than the window to show up
    return not is_live(item, now, window)


def liveness_view(item: Mapping[str, Any], now: datetime, window: timedelta | None = None) -> dict[str, Any]:
    """What the device view shows about Blynk (``hint`` only for a device not live)."""
    window = window or timedelta(hours=DEFAULT_AFTER_HOURS)
    check = last_check(item)
    live = item.get("state") == "confirmed" and is_live(item, now, window)
    return {
        "live_at": item.get("live_at") if check is not None else None,
        "blynk_last_seen": item.get("blynk_last_seen") if check is not None else None,
        "blynk_check": check,
        "blynk_checked_at": item.get("blynk_checked_at") if check is not None else None,
        "liveness_hint": None if live or item.get("state") != "confirmed" else hint(item),
    }


@dataclass
class Counts:
    """Counts of one walk over the confirmed devices."""

    confirmed: int = 0
    live: int = 0
    waiting: int = 0  # confirmed less than the window ago, not live yet
    not_live: int = 0
    causes: dict[str, int] = field(default_factory=dict)

    def add(self, item: Mapping[str, Any], now: datetime, window: timedelta) -> None:
        self.confirmed += 1
        if is_live(item, now, window):
            self.live += 1
        elif straggler(item, now, window):
            self.not_live += 1
            why = cause(item)
            self.causes[why] = self.causes.get(why, 0) + 1
        else:
            self.waiting += 1

    def to_item(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "live": self.live,
            "waiting": self.waiting,
            "not_live": self.not_live,
            "causes": dict(self.causes),
        }

    @classmethod
    def from_item(cls, data: Mapping[str, Any] | None) -> Counts:
        data = data or {}
        return cls(
            confirmed=int(data.get("confirmed", 0)),
            live=int(data.get("live", 0)),
            waiting=int(data.get("waiting", 0)),
            not_live=int(data.get("not_live", 0)),
            causes={str(k): int(v) for k, v in (data.get("causes") or {}).items()},
        )


@dataclass
class VerifyResult:
    pages: int = 0
    devices: int = 0
    checked: int = 0
    checks: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    walk_complete: bool = False
    stopped_by: str | None = None  # "time" or "checks" when the pass stopped before the walk's end


class Verifier:
    """One run of the verification pass (``run``); the walk spans runs."""

    def __init__(
        self,
        store: Store,
        blynk: BlynkReader,
        *,
        datastream: str = "V6",
        after_hours: int = DEFAULT_AFTER_HOURS,
        recheck_after: timedelta = timedelta(hours=1),
        max_checks: int = 500,
        page_size: int = PAGE_SIZE,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.liveness = LivenessStore(store.db)
        self.blynk = blynk
        self.datastream = datastream
        self.window = timedelta(hours=after_hours)
        self.after_hours = after_hours
        self.recheck_after = recheck_after
        self.max_checks = max_checks
        self.page_size = page_size
        self.now = now

    def run(self, remaining: Callable[[], float] = lambda: float("inf")) -> VerifyResult:
        """Walk on from the kept cursor until the walk ends, ``remaining()`` seconds run out (a
        check takes at most one client timeout, so the caller leaves that much in hand), or
        ``max_checks`` Blynk reads were made. Then keep the cursor and counts for the next run."""
        result = VerifyResult()
        saved = self.liveness.state()
        walk = dict(saved.get("walk") or {})
        cursor: dict[str, Any] | None = walk.get("cursor") or None
        counts = Counts.from_item(walk.get("counts"))
        started = walk.get("started_at") or _iso(self.now())
        # Blynk's answers over the whole walk, which may span runs.
        result.checks = {str(k): int(v) for k, v in (walk.get("checks") or {}).items()}
        while True:
            if remaining() <= 0 or result.checked >= self.max_checks:
                result.stopped_by = "time" if remaining() <= 0 else "checks"
                break
            ids, last = self.liveness.confirmed_page(self.page_size, cursor)
            result.pages += 1
            items = self.liveness.get_devices(ids) if ids else {}
            stopped_at: str | None = None
            for device_id in ids:
                item = items.get(device_id)
                if item is None or item.get("state") != "confirmed":
                    continue  # moved on between the index read and the item read
                if self._needs_check(item):
                    if remaining() <= 0 or result.checked >= self.max_checks:
                        stopped_at = device_id
                        break
                    item = self._check(item, result)
                result.devices += 1
                counts.add(item, self.now(), self.window)
                cursor = self.liveness.resume_after(device_id)
            if stopped_at is not None:
                result.stopped_by = "time" if remaining() <= 0 else "checks"
                break
            if last is None:
                result.walk_complete = True
                break
            cursor = dict(last)
        latest = None
        if result.walk_complete:
            latest = self._finish(counts, started, result)
            self.liveness.save_state({}, latest)
        else:
            self.liveness.save_state(
                {
                    "cursor": cursor,
                    "counts": counts.to_item(),
                    "started_at": started,
                    "checks": result.checks,
                },
                None,
            )
        metrics.add_metric(name="BlynkChecks", unit="Count", value=result.checked)
        logger.info("Verification pass finished", extra={"result": result.__dict__})
        return result

    def _needs_check(self, item: PlainItem) -> bool:
        seen = last_seen(item)
        return seen is None or seen < self.now() - self.recheck_after

    def _check(self, item: PlainItem, result: VerifyResult) -> PlainItem:
        device_id, tid = item["device_id"], item.get("token_id")
        if not tid:
            return item
        now = _iso(self.now())
        try:
            token = self.store.get_token_secret(tid)
            read = self.blynk.get(token, self.datastream)
        except BlynkError as exc:
            # The message names the region and the status only (tokenflow.blynk).
            result.errors += 1
            logger.warning("Blynk check failed", extra={"device_id": device_id, "error": str(exc)})
            return item
        seen = None
        if read.has_data:
            when = _parse_time(read.value)
            seen = _iso(when) if when is not None else now
        self.liveness.record_check(device_id, tid, read.check, now, seen)
        result.checked += 1
        result.checks[read.check] = result.checks.get(read.check, 0) + 1
        updated = dict(item)
        updated.update({"blynk_check": read.check, "blynk_checked_at": now, "blynk_token": tid})
        if seen is not None:
            updated["blynk_last_seen"] = seen
            updated.setdefault("live_at", now)
        return updated

    def _finish(self, counts: Counts, started: str, result: VerifyResult) -> dict[str, Any]:
        share = round(100 * counts.not_live / counts.confirmed, 2) if counts.confirmed else 0.0
        metrics.add_metric(name="DevicesNotLivePercent", unit="Percent", value=share)
        metrics.add_metric(name="DevicesLive", unit="Count", value=counts.live)
        return {
            **counts.to_item(),
            "after_hours": self.after_hours,
            "region": self.blynk.region,
            "datastream": self.datastream,
            "walk_started_at": started,
            "finished_at": _iso(self.now()),
            # Blynk's answers during the walk, by result (what tokenflow doctor reads).
            "checks": dict(result.checks),
        }


# ---- building it in a function ------------------------------------------------------------------

_built: weakref.WeakKeyDictionary[Any, Verifier] = weakref.WeakKeyDictionary()


def verifier() -> Verifier:
    """The container's Verifier, built once per wiring graph (so ``wiring.reset()`` and
    ``wiring.install()`` reach it too) from the environment template.yaml gives the verify function."""
    import os

    from tokenflow import wiring
    from tokenflow.blynk import BlynkClient, BlynkSettings

    graph = wiring.services()
    found = _built.get(graph)
    if found is None:
        blynk_settings = BlynkSettings.from_env()
        rate = float(os.environ.get("BLYNK_RATE", DEFAULT_RATE))
        found = Verifier(
            graph.store(),
            BlynkClient.from_settings(blynk_settings, rate=rate),
            datastream=blynk_settings.datastream,
            after_hours=int(os.environ.get("LIVENESS_AFTER_HOURS", DEFAULT_AFTER_HOURS)),
            max_checks=int(os.environ.get("VERIFY_MAX_CHECKS", 500)),
            now=lambda: datetime.fromisoformat(graph.clock().replace("Z", "+00:00")),
        )
        _built[graph] = found
    return found


def summary_block(latest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The summary's ``liveness`` block from the last complete walk (None before the first)."""
    if not latest:
        return None
    confirmed = int(latest.get("confirmed", 0))
    not_live = int(latest.get("not_live", 0))
    return {
        "confirmed": confirmed,
        "live": int(latest.get("live", 0)),
        "waiting": int(latest.get("waiting", 0)),
        "not_live": not_live,
        "not_live_percent": round(100 * not_live / confirmed, 2) if confirmed else 0.0,
        "causes": {str(k): int(v) for k, v in (latest.get("causes") or {}).items()},
        "after_hours": int(latest.get("after_hours", DEFAULT_AFTER_HOURS)),
        "region": latest.get("region"),
        "datastream": latest.get("datastream"),
        "checks": {str(k): int(v) for k, v in (latest.get("checks") or {}).items()},
        "as_of": latest.get("finished_at"),
    }
