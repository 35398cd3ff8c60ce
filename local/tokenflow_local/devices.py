"""Simulated devices that behave like the Tokenflow firmware (firmware/src, firmware/lib/tokenflow_core).

Each device of the Particle simulator's fleet follows the firmware's rules with its device-scoped
Cloud-to-Device Ledger, and reads what the DEVICE holds (its own synced copy, as Device OS keeps it in
flash), never the cloud's current instance:

- it judges its copy as the firmware's ``judgeLedger`` does (firmware/lib/tokenflow_core/src/ledger.h,
  shared vectors in firmware/test/vectors/ledger_states.json): a valid AuthToken under ``state``
  ``active`` (or no state) is its token; the cleared state (``blynk_token`` empty, ``state``
  ``revoked``/``transferred``) means no token: it drops the token at once, stops sending data and
  reports ``token=none`` with ``reason=<state>``; a token under a cleared state, or anything that is not
  an AuthToken, is ``invalid``;
- a deleted instance never reaches the device (Particle documents no way for it to), so the device
  keeps the token of its last synced copy;
- after a boot it reads its flash copy but sends no data under that token until its first Ledger sync
  since the boot (or until ``first_sync_grace`` seconds after it connected, the firmware's
  ``firstSyncGraceMs``); the status report goes out at once, with ``synced=0``;
- it publishes ``tokenflow/status`` (``v=1;token=<fingerprint|none|invalid>;fw=..;synced=..[;reason=..]``)
  when it connects (and so after a boot), after every Ledger sync and whenever what it holds changes;
  the Particle integration (firmware/integrations/tokenflow-status.json) forwards it to
  ``POST /webhooks/particle`` with the shared-secret header, and the simulated fleet posts exactly that
  body;
- while it holds no valid token (none, cleared, or a malformed value) it repeats the report with
  exponential backoff and jitter (the firmware's 5 s, 10 s, 20 s ... up to 10 minutes; shorter here),
  so Tokenflow learns that it still waits; with a valid token it stays quiet until something changes;
- with a usable token it "sends data" once per tick: the count per token fingerprint is kept, so tests
  can prove that a revoked token is never used after the revoke reached the device;
- with a usable token it also publishes its readings as the firmware does (firmware/README.md, "From
  first boot to data in Blynk", step 4): the ``blynk_https_get`` event with
  ``{"t":"<token>","v14":"<uptime ms>","v15":..,"v16":..,"v17":..}``, at once when it gets (or
  changes) its token, then every ``data_interval`` seconds (the firmware's 5 minutes; shorter on the
  local stack). It goes to the Particle simulator's ``POST /_sim/events``, which forwards it through
  the Blynk integration (``particle_sim_integrations``).

The fleet reads every device's own copy from the simulator's control API in one request
(``GET /_sim/device-ledgers``), which is how each device learns of its syncs, without one request per
device. Running in the background (``start()``), it then sleeps in a long poll of the same route
(``?since=<version>&wait=..``) that the simulator answers the moment a device's copy, connection,
boot or product fields change, with only the devices that changed; it wakes on its own only when a
device's timer is due (a report's backoff, the next readings, the first-sync grace). An idle fleet
makes no request at all between those. ``step()`` is one full tick (every device), as before.

    fleet = DeviceFleet("http://127.0.0.1:4000", "http://127.0.0.1:3000/webhooks/particle", secret)
    fleet.start(); ...; fleet.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
from tokenflow.particle import CLEARED_STATES
from tokenflow.tokens import fingerprint, is_auth_token

LEDGER_TOKEN_KEY = "blynk_token"  # noqa: S105 (the Ledger key's name, TOKENFLOW_LEDGER_KEY in the firmware)
LEDGER_STATE_KEY = "state"
SECRET_HEADER = "X-Tokenflow-Secret"  # noqa: S105 (a header name)
DATA_EVENT = "blynk_https_get"  # TOKENFLOW_BLYNK_EVENT in the firmware
MAX_WAIT = 20.0  # seconds: the longest long poll of the simulator (its MAX_WAIT_SECONDS)


@dataclass(frozen=True)
class Verdict:
    """What the firmware makes of its Ledger copy (``LedgerVerdict``)."""

    holds: str  # "token", "none" or "invalid"
    fingerprint: str | None = None  # with "token"
    reason: str | None = None  # with "none": "revoked" or "transferred" when the cloud cleared it


def judge_ledger(data: dict[str, Any] | None) -> Verdict:
    """The firmware's ``judgeLedger`` rules, on the device's copy (None: it never received one).

    - no entry, null or "" -> no token, with the reason the ``state`` entry names (if it is one of
      the cleared states);
    - a value that is not a string -> invalid;
    - a non-empty string under a cleared state contradicts itself -> invalid (never sent to Blynk);
    - otherwise the string is a token if it is an AuthToken, else invalid."""
    if data is None:
        return Verdict(TOKEN_NONE)
    value = data.get(LEDGER_TOKEN_KEY)
    state = data.get(LEDGER_STATE_KEY)
    cleared = state if isinstance(state, str) and state in CLEARED_STATES else None
    if value is None or value == "":
        return Verdict(TOKEN_NONE, reason=cleared)
    if not isinstance(value, str) or cleared or not is_auth_token(value):
        return Verdict(TOKEN_INVALID)
    return Verdict("token", fingerprint=fingerprint(value))


def status_for(verdict: Verdict, firmware: str, synced: bool) -> str:
    """The status data the firmware publishes for what it holds (``reason`` only with token=none,
    as the firmware's formatStatusData writes it)."""
    return format_status_data(
        verdict.fingerprint,
        firmware,
        invalid=verdict.holds == TOKEN_INVALID,
        synced=synced,
        reason=verdict.reason if verdict.holds == TOKEN_NONE else None,
    )


@dataclass
class SimulatedDevice:
    device_id: str
    firmware: str
    boot: int = 0
    online: bool = False
    connected_at: float | None = None  # first connection since this boot (the grace time's start)
    synced_since_boot: bool = False
    synced_at: str | None = None  # the last sync this device reported
    holds: str | None = None  # fingerprint of the token in its RAM (a valid one only)
    usable: bool = False  # may send data under it: synced since boot, or the grace time is over
    reason: str | None = None  # why it holds none, when the cloud cleared it
    reported: str | None = None  # the status data Tokenflow last accepted
    pending: str | None = None  # the status data the device wants to report
    # Connects, boots, syncs and changes each ask for a report, even when the status reads the same:
    # ``triggers`` counts them, ``acked`` is the count the last accepted report answered.
    triggers: int = 0
    acked: int = 0
    sending: int = 0
    busy: bool = False  # a report is on its way
    next_report: float = 0.0
    retry: float = 0.0
    reports: int = 0
    failures: int = 0
    data_sent: Counter[str] = field(default_factory=Counter)  # fingerprint -> data publishes
    readings_under: str | None = None  # fingerprint of the token its last readings publish used
    readings_at: float = 0.0  # when it last published its readings
    readings: int = 0  # readings publishes made (``blynk_https_get``)

    @property
    def holds_token(self) -> bool:
        """Tokenflow has accepted a report of a valid token from this device."""
        if self.reported is None:
            return False
        return parse_status_data(self.reported)["token"] not in (TOKEN_NONE, TOKEN_INVALID)

    @property
    def uses(self) -> str | None:
        """The fingerprint of the token it sends data under now (None: it sends none)."""
        return self.holds if self.usable else None


def _asks(status: str) -> bool:
    """A device without a valid token keeps reporting (with backoff) until it gets one."""
    return parse_status_data(status)["token"] in (TOKEN_NONE, TOKEN_INVALID)


# The order in which the background fleet's workers take waiting publishes, when more are due than
# it has workers (real devices publish at once, each on its own connection; the local fleet has a
# few workers and the local webhook a few execution environments, so some publishes wait): a report
# of a token the device now holds first, then a report of something new (a connection, a sync, a
# changed status), then the repeated "still no token" reports of the firmware's backoff, then the
# readings. Every publish is still sent; this only decides which waits on a busy machine, so that a
# burst of repeated reports (1,000 devices that booted together retry together) does not hold back
# the reports that confirm a delivery. Within one kind, first due, first sent.
TOKEN_REPORT, NEWS, RETRY, READINGS = range(4)


class _Outbox:
    """A few worker threads sending the fleet's publishes, lowest priority number first."""

    def __init__(self, workers: int) -> None:
        self._queue: queue.PriorityQueue[tuple[float, int, Callable[..., Any] | None, tuple[Any, ...]]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._threads = [
            threading.Thread(target=self._work, name=f"device-outbox-{n}", daemon=True)
            for n in range(workers)
        ]
        self._started = False
        self._closed = False
        self._start_lock = threading.Lock()

    def submit(self, priority: int, send: Callable[..., Any], *args: Any) -> None:
        with self._start_lock:
            if self._closed:
                return
            if not self._started:
                self._started = True
                for thread in self._threads:
                    thread.start()
        self._queue.put((priority, next(self._order), send, args))

    def shutdown(self) -> None:
        """Drop what waits, let what is being sent finish, stop the workers."""
        with self._start_lock:
            self._closed = True
            if not self._started:
                return
        with self._queue.mutex:
            self._queue.queue.clear()
        for _ in self._threads:
            self._queue.put((float("inf"), next(self._order), None, ()))
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            _, _, send, args = self._queue.get()
            if send is None:
                return
            try:
                send(*args)
            except Exception:  # a publish notes its own failures; nothing may end a worker
                logging.getLogger(__name__).exception("A simulated device's publish failed")


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
        first_sync_grace: float = 60.0,
        data_interval: float = 300.0,
        workers: int = 8,
        independent: bool = True,
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
        # The firmware's firstSyncGraceMs (60 s by default; 0: data waits for a sync however long).
        self.first_sync_grace = first_sync_grace
        self.data_interval = data_interval  # the firmware's TOKENFLOW_PUBLISH_INTERVAL_MS
        # In the background, each device publishes on its own (True), or a tick's publishes are all
        # answered before the next tick (False: the earlier, slower pacing some tests keep).
        self.independent = independent
        self.started = clock()
        self.rng = rng or random.Random()
        self.clock = clock
        self.devices: dict[str, SimulatedDevice] = {}
        self.errors: list[str] = []
        self.session = requests.Session()  # the fleet's own reads of the simulator
        # Each worker thread publishes through a session of its own (requests does not promise
        # that one Session is safe to share between threads).
        self._sessions = threading.local()
        self._all_sessions: list[requests.Session] = []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="device")
        self._outbox = _Outbox(workers)  # the background fleet's publishes, in priority order
        self._lock = threading.Lock()
        self._views: dict[str, dict[str, Any]] = {}  # device id -> its latest view from the simulator
        self.version = 0  # the simulator's change version self._views is up to date with
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> DeviceFleet:
        self._thread = threading.Thread(target=self._run, name="devices", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread and self._thread.is_alive():
            # End the long poll the fleet may be sleeping in (else it would wait out its timeout).
            with contextlib.suppress(requests.RequestException):
                requests.post(f"{self.particle_url}/_sim/wake", timeout=5)
            self._thread.join(timeout=15)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._outbox.shutdown()
        self.session.close()
        with self._lock:
            sessions, self._all_sessions = self._all_sessions, []
        for session in sessions:
            session.close()

    def _run(self) -> None:
        synced = False  # whether self._views holds every device (a full read since the last failure)
        while not self._stop.is_set():
            try:
                if not synced:
                    self.step(wait=not self.independent)
                    synced = True
                else:
                    self._wait_and_tick()
            except requests.RequestException as exc:  # the simulator is stopping or busy: next tick
                self._note(f"tick: {type(exc).__name__}")
                synced = False
            except Exception as exc:  # never let one bad tick end the whole fleet: read all again
                logging.getLogger(__name__).exception("A tick of the simulated fleet failed")
                self._note(f"tick: {type(exc).__name__}")
                synced = False
            # At most one tick per interval: changes that land meanwhile are handled together.
            self._stop.wait(self.interval)

    def _wait_and_tick(self) -> int:
        """Sleep until a device changes in the simulator or a device's timer is due, then tick."""
        wait = self.next_due_in()
        answer = self._get(
            "/_sim/device-ledgers",
            params={
                "prefix": self.prefix,
                "ledger": self.ledger,
                "since": str(self.version),
                "wait": f"{wait:.3f}",
            },
            timeout=wait + 10,
        )
        with self._lock:
            self.version = int(answer.get("version", self.version))
            for view in answer["devices"]:
                self._views[view["device_id"]] = view
        return self._tick(wait=not self.independent)

    def next_due_in(self) -> float:
        """Seconds until the first device timer comes due: a report (its backoff), a readings publish,
        the end of a first-sync grace; MAX_WAIT when none is set (the long poll's longest)."""
        now = self.clock()
        due = now + MAX_WAIT
        with self._lock:
            for device in self.devices.values():
                if device.busy:  # its report is on its way: its next time is set when answered
                    due = min(due, now + self.interval)
                if not device.online:
                    continue
                if not device.busy and device.next_report != float("inf"):
                    status = device.pending or ""
                    if device.triggers != device.acked or status != device.reported or _asks(status):
                        due = min(due, device.next_report)
                if device.uses:
                    due = min(due, device.readings_at + self.data_interval)
                elif device.holds and self.first_sync_grace and device.connected_at is not None:
                    due = min(due, device.connected_at + self.first_sync_grace)
        return min(MAX_WAIT, max(0.0, due - now))

    # ---- what the fleet reports and holds ------------------------------------------------------------

    def reported(self) -> dict[str, str | None]:
        """device id -> the status data Tokenflow last accepted from it."""
        with self._lock:
            return {d.device_id: d.reported for d in self.devices.values()}

    def confirmed_count(self) -> int:
        with self._lock:
            return sum(1 for d in self.devices.values() if d.holds_token)

    def holding(self) -> dict[str, str | None]:
        """device id -> fingerprint of the token in its RAM (None: it holds none)."""
        with self._lock:
            return {d.device_id: d.holds for d in self.devices.values()}

    def using(self) -> dict[str, str | None]:
        """device id -> fingerprint of the token it sends data under now (None: it sends none)."""
        with self._lock:
            return {d.device_id: d.uses for d in self.devices.values()}

    def readings_published(self) -> int:
        """How many ``blynk_https_get`` events the fleet has published."""
        with self._lock:
            return sum(d.readings for d in self.devices.values())

    def data_sent(self) -> dict[str, dict[str, int]]:
        """device id -> {token fingerprint: data publishes made under it}."""
        with self._lock:
            return {d.device_id: dict(d.data_sent) for d in self.devices.values()}

    # ---- one tick ----------------------------------------------------------------------------------

    def step(self, *, wait: bool = True) -> int:
        """Read every device's own Ledger copy once, publish what is due; the number of reports sent
        (``wait``: return once they are answered)."""
        answer = self._get("/_sim/device-ledgers", params={"prefix": self.prefix, "ledger": self.ledger})
        with self._lock:
            self.version = int(answer.get("version", self.version))
            self._views = {view["device_id"]: view for view in answer["devices"]}
        return self._tick(wait=wait)

    def _tick(self, *, wait: bool = True) -> int:
        """Every device against its latest view: publish the reports and readings that are due.

        ``wait=False`` (the background fleet) hands them to the workers and returns: each device
        publishes on its own, as real devices do, so a device whose Ledger just synced reports it
        while others' reports are still on their way (a device stays ``busy`` until its report is
        answered, so it never has two in flight)."""
        now = self.clock()
        due: list[SimulatedDevice] = []
        readings: list[tuple[SimulatedDevice, str]] = []
        with self._lock:
            for view in list(self._views.values()):
                device = self.devices.get(view["device_id"])
                if device is None:
                    device = self.devices[view["device_id"]] = SimulatedDevice(
                        view["device_id"], self.firmware
                    )
                if self._observe(device, view, now):
                    due.append(device)
                    # Busy until the report's outcome sets the next time (no double publish).
                    device.busy = True
                    device.sending = device.triggers
                if device.uses and (
                    device.uses != device.readings_under or now - device.readings_at >= self.data_interval
                ):
                    device.readings_under, device.readings_at = device.uses, now
                    readings.append((device, view["data"][LEDGER_TOKEN_KEY]))
        if not wait:
            for device in due:
                self._outbox.submit(self._report_priority(device), self._publish, device)
            for device, token in readings:
                self._outbox.submit(READINGS, self._publish_readings, device, token)
            return len(due)
        list(self._pool.map(self._publish, due))
        list(self._pool.map(lambda pair: self._publish_readings(*pair), readings))
        return len(due)

    def _report_priority(self, device: SimulatedDevice) -> int:
        """Which of the waiting publishes a free worker sends first (callers hold ``_lock``)."""
        status = device.pending or ""
        if not _asks(status):
            return TOKEN_REPORT
        if device.triggers != device.acked or status != device.reported:
            return NEWS
        return RETRY

    def _publish_readings(self, device: SimulatedDevice, token: str) -> None:
        """The firmware's readings publish (json_writer: ``{"t":"<token>","v14":...}``), through the
        Particle simulator, which forwards it to Blynk by the integration."""
        uptime_ms = int((self.clock() - self.started) * 1000)
        data = json.dumps({"t": token, "v14": str(uptime_ms), "v15": "0", "v16": "0", "v17": "0"})
        body = {"device_id": device.device_id, "name": DATA_EVENT, "data": data}
        try:
            response = self._http().post(f"{self.particle_url}/_sim/events", json=body, timeout=20)
            ok = response.status_code < 300
            if not ok:
                self._note(f"{device.device_id}: publish answered {response.status_code}")
        except Exception as exc:  # any failure is a failed publish: the device tries again
            ok = False
            self._note(f"{device.device_id}: {type(exc).__name__}")
        with self._lock:
            if ok:
                device.readings += 1
            else:  # the firmware's TOKENFLOW_PUBLISH_RETRY_MS: again soon
                device.readings_under = None

    def _observe(self, device: SimulatedDevice, view: dict[str, Any], now: float) -> bool:
        """Bring one device up to date with what it holds; True when a status report is due."""
        trigger = False
        if view["boot"] != device.boot:  # first sight or a reboot: RAM starts empty, flash is read
            device.boot = view["boot"]
            device.online = False
            device.connected_at = None
            device.synced_at = view["synced_at"]  # the flash copy, not a sync of this boot
        verdict = judge_ledger(view["data"])
        # The token lives in RAM only while the copy holds it: a cleared or changed copy drops it at once.
        device.holds = verdict.fingerprint
        device.reason = verdict.reason
        device.synced_since_boot = bool(view["synced_since_boot"])
        reachable = bool(view["online"]) and not view["quarantined"] and not view["denied"]
        if not reachable:  # such a device does not reach the cloud: it publishes nothing
            device.online = False
            device.usable = False
            return False
        if not device.online:  # (re)connected: it reports whatever its Ledger holds
            device.online = True
            trigger = True
            if device.connected_at is None:
                device.connected_at = now
        if view["synced_at"] != device.synced_at:  # a sync landed: the firmware acknowledges it
            device.synced_at = view["synced_at"]
            trigger = True
        grace_over = bool(self.first_sync_grace) and now - device.connected_at >= self.first_sync_grace
        device.usable = device.holds is not None and (device.synced_since_boot or grace_over)
        if device.usable:  # one data publish per tick, under the token it holds
            device.data_sent[device.holds] += 1
        status = status_for(verdict, self.firmware, device.synced_since_boot)
        if status != device.pending:  # what it holds changed (or the first look): report now
            device.pending = status
            trigger = True
        if trigger:
            device.triggers += 1
            device.retry = 0.0
            if not device.busy:
                device.next_report = now
        if device.busy or device.next_report > now:
            return False
        return device.triggers != device.acked or status != device.reported or _asks(status)

    def _publish(self, device: SimulatedDevice) -> bool:
        status = device.pending or format_status_data(None, self.firmware, synced=False)
        body = {
            "event": STATUS_EVENT,
            "data": status,
            "device_id": device.device_id,
            "published_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        try:
            response = self._http().post(
                self.webhook_url, json=body, headers={SECRET_HEADER: self.secret}, timeout=20
            )
            ok = response.status_code < 300
            if not ok:
                self._note(f"{device.device_id}: webhook answered {response.status_code}")
        except Exception as exc:  # any failure is a failed publish (never a device left busy)
            ok = False
            self._note(f"{device.device_id}: {type(exc).__name__}")
        with self._lock:
            device.busy = False
            device.reports += 1
            if ok:
                device.reported = status
                device.acked = max(device.acked, device.sending)
            else:
                device.failures += 1
            if ok and device.triggers != device.acked:
                device.next_report = self.clock()  # something happened meanwhile: report that now
            elif ok and not _asks(status):
                device.next_report = float("inf")  # holds a valid token: quiet until something changes
            else:
                # No valid token yet, or the publish failed: again later, waiting longer each time.
                device.retry = min(self.max_retry, device.retry * 2 if device.retry else self.first_retry)
                device.next_report = self.clock() + device.retry * (1 + self.jitter * self.rng.random())
        return ok

    def _http(self) -> requests.Session:
        session: requests.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
            with self._lock:
                self._all_sessions.append(session)
        return session

    def _get(self, path: str, params: dict[str, str] | None = None, timeout: float = 10) -> dict[str, Any]:
        response = self.session.get(f"{self.particle_url}{path}", params=params, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def _note(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
            del self.errors[:-100]
