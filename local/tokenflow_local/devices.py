"""Simulated devices that behave like the Tokenflow firmware (firmware/src, firmware/lib/tokenflow_core).

Each device of the Particle simulator's fleet that can reach the cloud (not quarantined, not denied,
online) does what the firmware does with its device-scoped Cloud-to-Device Ledger:

- reads the Ledger's ``blynk_token`` and checks that it looks like an AuthToken;
- publishes the ``tokenflow/status`` event (``v=1;token=<fingerprint|none|invalid>;fw=..;synced=..``)
  when it connects and whenever its Ledger changes; the Particle integration
  (firmware/integrations/tokenflow-status.json) forwards it to ``POST /webhooks/particle`` with the
  shared-secret header, and the simulated fleet posts exactly that body;
- while it holds no valid token (none, or a malformed value), repeats the report with exponential
  backoff and jitter (the firmware's 5 s, 10 s, 20 s ... up to 10 minutes; shorter here), so
  Tokenflow learns that it still waits; with a valid token it stays quiet until the Ledger changes.

The Particle cloud pushes Ledger changes to devices; here the fleet reads every Ledger instance from
the simulator's control API in one request per tick (``GET /_sim/ledgers``), which is how each device
learns of its own, without one request per device per tick.

    fleet = DeviceFleet("http://127.0.0.1:4000", "http://127.0.0.1:3000/webhooks/particle", secret)
    fleet.start(); ...; fleet.stop()
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from tokenflow.device_status import (
    STATUS_EVENT,
    TOKEN_INVALID,
    TOKEN_NONE,
    format_status_data,
    parse_status_data,
)
from tokenflow.tokens import fingerprint, is_auth_token

LEDGER_TOKEN_KEY = "blynk_token"  # noqa: S105 (the Ledger key's name, TOKENFLOW_LEDGER_KEY in the firmware)
SECRET_HEADER = "X-Tokenflow-Secret"  # noqa: S105 (a header name)


@dataclass
class SimulatedDevice:
    device_id: str
    firmware: str
    reported: str | None = None  # the status data Tokenflow last accepted
    pending: str | None = None  # the status data the device wants to report
    next_report: float = 0.0
    retry: float = 0.0
    reports: int = 0
    failures: int = 0

    @property
    def holds_token(self) -> bool:
        """Tokenflow has accepted a report of a valid token from this device."""
        if self.reported is None:
            return False
        return parse_status_data(self.reported)["token"] not in (TOKEN_NONE, TOKEN_INVALID)


def _asks(status: str) -> bool:
    """A device without a valid token keeps reporting (with backoff) until it gets one."""
    return parse_status_data(status)["token"] in (TOKEN_NONE, TOKEN_INVALID)


def status_for(ledger: dict[str, Any] | None, firmware: str) -> str:
    """What a device publishes for a given Ledger instance data (None: no instance yet)."""
    value = (ledger or {}).get(LEDGER_TOKEN_KEY)
    if value is None or value == "":
        return format_status_data(None, firmware, synced=ledger is not None)
    if not isinstance(value, str) or not is_auth_token(value):
        return format_status_data(None, firmware, invalid=True)
    return format_status_data(fingerprint(value), firmware)


class DeviceFleet:
    def __init__(
        self,
        particle_url: str,
        webhook_url: str,
        secret: str,
        *,
        ledger: str = "blynk-tokens-c2d",
        prefix: str = "/v1",
        interval: float = 0.5,
        first_retry: float = 2.0,
        max_retry: float = 30.0,
        jitter: float = 0.2,
        firmware: str = "1.0.0",
        workers: int = 4,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.particle_url = particle_url.rstrip("/")
        self.webhook_url = webhook_url
        self.secret = secret
        self.ledger = ledger
        self.prefix = prefix
        self.interval = interval
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.jitter = jitter
        self.firmware = firmware
        self.rng = rng or random.Random()
        self.clock = clock
        self.devices: dict[str, SimulatedDevice] = {}
        self.errors: list[str] = []
        self.session = requests.Session()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="device")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> DeviceFleet:
        self._thread = threading.Thread(target=self._run, name="devices", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.session.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except requests.RequestException as exc:  # the simulator is stopping or busy: next tick
                self._note(f"tick: {type(exc).__name__}")
            self._stop.wait(self.interval)

    # ---- what the fleet reports --------------------------------------------------------------------

    def reported(self) -> dict[str, str | None]:
        """device id -> the status data Tokenflow last accepted from it."""
        with self._lock:
            return {d.device_id: d.reported for d in self.devices.values()}

    def confirmed_count(self) -> int:
        with self._lock:
            return sum(1 for d in self.devices.values() if d.holds_token)

    # ---- one tick ----------------------------------------------------------------------------------

    def step(self) -> int:
        """Read the fleet and the Ledgers once, publish what is due; the number of reports sent."""
        fleet = self._get("/_sim/devices")["devices"]
        ledgers = {
            i["device_id"]: i["data"]
            for i in self._get("/_sim/ledgers")["instances"]
            if i["prefix"] == self.prefix and i["ledger"] == self.ledger
        }
        now = self.clock()
        due: list[SimulatedDevice] = []
        with self._lock:
            for info in fleet:
                if info.get("quarantined") or info.get("denied") or not info.get("online", True):
                    continue  # such a device does not reach the cloud: it publishes nothing
                device = self.devices.get(info["id"])
                if device is None:  # just connected: it reports whatever its Ledger holds
                    device = self.devices[info["id"]] = SimulatedDevice(info["id"], self.firmware)
                status = status_for(ledgers.get(device.device_id), self.firmware)
                if status != device.pending:  # a Ledger change (or the first look): report now
                    device.pending = status
                    device.next_report = now
                    device.retry = 0.0
                if device.next_report <= now and (status != device.reported or _asks(status)):
                    due.append(device)
                    # Busy until the report's outcome sets the next time (no double publish).
                    device.next_report = float("inf")
        list(self._pool.map(self._publish, due))
        return len(due)

    def _publish(self, device: SimulatedDevice) -> bool:
        status = device.pending or format_status_data(None, self.firmware, synced=False)
        body = {
            "event": STATUS_EVENT,
            "data": status,
            "device_id": device.device_id,
            "published_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        try:
            response = self.session.post(
                self.webhook_url, json=body, headers={SECRET_HEADER: self.secret}, timeout=20
            )
            ok = response.status_code < 300
            if not ok:
                self._note(f"{device.device_id}: webhook answered {response.status_code}")
        except requests.RequestException as exc:
            ok = False
            self._note(f"{device.device_id}: {type(exc).__name__}")
        with self._lock:
            device.reports += 1
            if ok:
                device.reported = status
            else:
                device.failures += 1
            if ok and not _asks(status):
                device.next_report = float("inf")  # holds a valid token: quiet until the Ledger changes
            else:
                # No valid token yet, or the publish failed: again later, waiting longer each time.
                device.retry = min(self.max_retry, device.retry * 2 if device.retry else self.first_retry)
                device.next_report = self.clock() + device.retry * (1 + self.jitter * self.rng.random())
        return ok

    def _get(self, path: str) -> dict[str, Any]:
        response = self.session.get(f"{self.particle_url}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def _note(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
            del self.errors[:-100]
