"""A Particle Cloud simulator: the part of the API Tokenflow uses, over real HTTP.

Shapes follow REFERENCE.md: product device listing with paging (``devices`` + ``meta``) and the
filters the official SDK sends, the product device lookup, device fields (quarantined and denied
included), Ledger instances under the three path prefixes (``/v1``, ``/v1/orgs/{org}``,
``/v1/products/{product}``) with PUT (Replace or Merge), GET, DELETE and list, bearer-token checks
(401), unknown product or device (404), a rate limiter answering 429 (with ``Retry-After`` unless
told otherwise), and fault injection (latency, error rate, timeouts and dropped connections, 401)
for tests and benchmarks.

The devices' side, as Device OS keeps it: every simulated device holds its OWN copy of each of its
Cloud-to-Device Ledger instances (its flash). A PUT reaches the copy of an online device after
``sync_delay`` seconds (0: at once), or at the device's next connect when it is offline; a DELETE never
reaches it (Particle documents no way for a deleted instance to reach the device). Each device also
has a boot number and, per Ledger, whether it has synced since that boot (``Ledger.lastSynced()``
reads the flash copy at boot, before any sync). ``ledger_data`` is what the cloud holds,
``device_ledger`` what the device sees.

Control from Python (``ParticleSimulator``) or over HTTP under ``/_sim/`` (no auth):
``GET /_sim/stats``, ``POST /_sim/faults``, ``POST /_sim/rate-limit``, ``GET|POST /_sim/devices``,
``POST /_sim/devices/{id}`` (quarantined, denied, name, groups), ``POST /_sim/devices/{id}/online``,
``POST /_sim/devices/{id}/reboot``, ``GET /_sim/device-ledgers`` (every device's own copy, in one
answer), ``POST /_sim/ledger-sync`` (the sync delay), ``GET /_sim/ledgers``, ``POST /_sim/reset-stats``.

    python -m tokenflow_local.particle_sim --port 4000 --devices 25
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LEDGER_PATH = re.compile(
    r"^(?P<prefix>/v1|/v1/orgs/(?P<org>[^/]+)|/v1/products/(?P<product>[^/]+))"
    r"/ledgers/(?P<ledger>[^/]+)/instances(?:/(?P<device>[^/]+))?$"
)
DEVICES_PATH = re.compile(r"^/v1/products/(?P<product>[^/]+)/devices$")
DEVICE_PATH = re.compile(r"^/v1/products/(?P<product>[^/]+)/devices/(?P<device>[^/]+)$")
DEFAULT_LEDGER = "blynk-tokens-c2d"
LEDGER_NAME = re.compile(r"^[a-z0-9-]{1,32}$")
DEFAULT_PER_PAGE = 25
MAX_LEDGER_BYTES = 16 * 1024
# Route templates: the keys of the request counters (never a device id or a token).
ROUTE_DEVICES = "/v1/products/{product}/devices"
ROUTE_DEVICE = "/v1/products/{product}/devices/{device_id}"
ROUTE_INSTANCE = "{prefix}/ledgers/{ledger}/instances/{device_id}"
ROUTE_INSTANCES = "{prefix}/ledgers/{ledger}/instances"
ROUTE_OTHER = "other"
INVALID_TOKEN = {"error": "invalid_token", "error_description": "The access token provided is invalid."}
# Answers captured from api.particle.io for a product device path that names no device of the product.
DEVICE_NOT_FOUND = {"ok": False, "error": "Device not found."}
# Platforms with a cellular modem (Device OS platform ids: boron 13, esomx/E404X 15, bsom 23, b5som 25,
# tracker 26, trackerm 28, msom 35); argon 12 and p2 32 are Wi-Fi. Fills the ``cellular`` field.
CELLULAR_PLATFORMS = frozenset({13, 15, 23, 25, 26, 28, 35})
# The list route's sortAttr values (particle-api-js and Particle's Java/Swift clients document
# deviceId, firmwareVersion and lastConnection; deviceName is accepted too) -> the device field.
SORT_FIELDS = {
    "deviceId": "id",
    "deviceName": "name",
    "firmwareVersion": "firmware_version",
    "lastConnection": "last_handshake_at",
}

# What ``handle`` returns to drop the connection without an answer (a lost response).
DROP = -1

Answer = tuple[int, dict[str, str], Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Faults:
    """What goes wrong, per request. A timeout sleeps ``timeout_seconds`` (past the client's read
    timeout) and then drops the connection without an answer; 0 drops it at once (a reset).
    ``timeout_applied``: the request takes effect before its answer is lost (a write that landed
    although the client never heard so)."""

    latency: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503, 429)
    timeout_rate: float = 0.0
    timeout_seconds: float = 11.0
    timeout_applied: float = 0.0  # the share of timeouts whose request takes effect (True: all)
    auth_failure: bool = False
    retry_after: int | None = None  # Retry-After of injected 429s (None: no header)
    # Injected errors echo the request body in error_description, as some real error answers do:
    # clients must not copy such text into their own messages.
    echo_request: bool = False
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class LedgerCopy:
    """A device's own copy of one Ledger instance, as its flash holds it."""

    data: dict[str, Any]
    synced_at: str  # when it last synced (wall time)
    cloud_updated_at: str  # the cloud instance's updated_at it came from


@dataclass
class DeviceSide:
    """What the device itself knows: online or not, which boot, its Ledger copies."""

    online: bool
    boot: int = 1
    copies: dict[tuple[str, str], LedgerCopy] = field(default_factory=dict)  # (prefix, ledger)
    synced_since_boot: set[tuple[str, str]] = field(default_factory=set)
    pending: dict[tuple[str, str], float] = field(default_factory=dict)  # sync due at (sim clock)
    syncs: int = 0


class ParticleSimulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        product: str = "tokenflow-demo",
        product_id: int = 1234,
        org: str = "tokenflow-org",
        access_token: str = "sim-access-token",  # noqa: S107 (the simulator's own token)
        max_per_page: int = 100,
        rate_limit: tuple[int, float] | None = None,
        rate_limit_mode: str = "sliding",
        rate_limit_retry_after: bool = True,
        sync_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.product = product
        self.product_id = product_id
        self.org = org
        self.access_token = access_token
        self.max_per_page = max_per_page
        self.lock = threading.RLock()
        self.fleet: dict[str, dict[str, Any]] = {}
        self._serial = 0
        self.ledgers: dict[tuple[str, str, str], dict[str, Any]] = {}  # (prefix, ledger, device)
        self.device_side: dict[str, DeviceSide] = {}  # what each device holds (its flash)
        # Seconds from a cloud change (or a connect) to the device's copy; Particle says an online
        # device usually has it "within 30 seconds" (docs: Ledger configuration).
        self.sync_delay = float(sync_delay)
        self.clock = clock
        # Syncs on their way: (due, sequence, device id, (prefix, ledger)); an entry whose device no
        # longer expects it (offline, rebooted) is skipped when it comes due.
        self._sync_queue: list[tuple[float, int, str, tuple[str, str]]] = []
        self._sync_seq = 0
        self.writes: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, route template)
        self.statuses: Counter[int] = Counter()
        self.faults = Faults()
        # The listings' meta name the page count ``total_pages``; some answers say ``total_page``.
        self.meta_total_key = "total_pages"
        self.connections = 0  # TCP connections accepted: shows whether clients reuse them
        self.rate_limit_mode = rate_limit_mode
        self.rate_limit_retry_after = rate_limit_retry_after
        self._rate_limit: tuple[int, float] | None = None
        self._recent: deque[float] = deque()
        self._window_start = 0.0
        self._window_count = 0
        self.rate_limit = rate_limit
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}"

    def start(self) -> ParticleSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="particle-sim",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ParticleSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- fleet and state ----------------------------------------------------------------------

    def add_device(
        self,
        *,
        quarantined: bool = False,
        denied: bool = False,
        platform_id: int = 32,
        online: bool = True,
        development: bool = False,
        name: str | None = None,
        serial_number: str | None = None,
        groups: list[str] | None = None,
    ) -> str:
        """Add one device; ids are 24 lowercase hex characters, the same for the same order of calls."""
        with self.lock:
            self._serial += 1
            n = self._serial
            device_id = f"e00fce68{self.product_id:06x}{n:010x}"
            now = _now()
            self.fleet[device_id] = {
                "id": device_id,
                "name": name or f"pump-{n:04d}",
                "serial_number": serial_number or f"P046AB{n:07d}",
                "platform_id": platform_id,
                "product_id": self.product_id,
                "online": online,
                "last_heard": now,
                "last_handshake_at": now,
                "cellular": platform_id in CELLULAR_PLATFORMS,
                "firmware_version": 3,
                "development": development,
                "quarantined": quarantined,
                "denied": denied,
                "groups": list(groups or []),
                "notes": None,
            }
            self.device_side[device_id] = DeviceSide(online=online)
            return device_id

    def add_devices(
        self, count: int, *, quarantined: int = 0, denied: int = 0, platform_id: int = 32
    ) -> list[str]:
        """``count`` devices; the first ``quarantined`` are quarantined, the next ``denied`` denied."""
        return [
            self.add_device(
                quarantined=n < quarantined,
                denied=quarantined <= n < quarantined + denied,
                platform_id=platform_id,
            )
            for n in range(count)
        ]

    def remove_device(self, device_id: str) -> None:
        with self.lock:
            self.fleet.pop(device_id, None)
            self.device_side.pop(device_id, None)

    def set_device(self, device_id: str, **changes: Any) -> dict[str, Any]:
        """Change a device's product fields (quarantined, denied, name, groups); its new view."""
        allowed = {"quarantined": bool, "denied": bool, "name": str, "groups": list}
        unknown = set(changes) - set(allowed)
        if unknown:
            raise ValueError(f"unknown device fields: {sorted(unknown)}")
        with self.lock:
            self._settle()
            device = self.fleet[device_id]  # KeyError: no such device
            was_reachable = self._reachable(device_id)
            for name, value in changes.items():
                device[name] = [str(g) for g in value] if name == "groups" else allowed[name](value)
            if self._reachable(device_id) and not was_reachable:  # e.g. out of quarantine: it syncs
                self._connect(device_id)
            return dict(device)

    def devices(self) -> list[dict[str, Any]]:
        with self.lock:
            self._settle()
            return [dict(d) for d in self.fleet.values()]

    def ledger_data(
        self, device_id: str, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER
    ) -> dict[str, Any] | None:
        """What the cloud holds for the device (the instance); None when there is none."""
        with self.lock:
            instance = self.ledgers.get((prefix, ledger, device_id))
            return dict(instance["data"]) if instance else None

    # ---- the devices' side (Device OS) --------------------------------------------------------

    def device_ledger(
        self, device_id: str, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER
    ) -> dict[str, Any] | None:
        """What the device itself sees: its last synced copy (None: it never received one)."""
        with self.lock:
            self._settle()
            side = self.device_side[device_id]
            copy = side.copies.get((prefix, ledger))
            return dict(copy.data) if copy else None

    def device_view(
        self, device_id: str, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER
    ) -> dict[str, Any]:
        """The device's state for one Ledger: online, boot, its copy, when it synced."""
        with self.lock:
            self._settle()
            return self._device_view(device_id, (prefix, ledger))

    def device_views(self, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER) -> list[dict[str, Any]]:
        with self.lock:
            self._settle()
            return [self._device_view(d, (prefix, ledger)) for d in self.fleet]

    def _device_view(self, device_id: str, key: tuple[str, str]) -> dict[str, Any]:
        device, side = self.fleet[device_id], self.device_side[device_id]
        copy = side.copies.get(key)
        return {
            "device_id": device_id,
            "online": side.online,
            "quarantined": bool(device.get("quarantined")),
            "denied": bool(device.get("denied")),
            "boot": side.boot,
            "prefix": key[0],
            "ledger": key[1],
            "data": dict(copy.data) if copy else None,
            "synced_at": copy.synced_at if copy else None,
            "synced_since_boot": key in side.synced_since_boot,
            "syncs": side.syncs,
        }

    def set_online(self, device_id: str, online: bool) -> None:
        """Connect a device to the cloud (it syncs its Ledgers) or take it offline."""
        with self.lock:
            self._settle()
            device, side = self.fleet[device_id], self.device_side[device_id]
            was = side.online
            side.online = device["online"] = bool(online)
            if side.online and not was:
                device["last_heard"] = device["last_handshake_at"] = _now()
                self._connect(device_id)
            elif not side.online:
                side.pending.clear()  # a sync under way is lost; the next connect syncs again

    def reboot(self, device_id: str, *, online: bool | None = None) -> int:
        """Restart a device: it keeps its flash copies but has not synced since this boot; it
        reconnects (and syncs) when it is, or is told to be, online. The new boot number."""
        with self.lock:
            self._settle()
            device, side = self.fleet[device_id], self.device_side[device_id]
            side.boot += 1
            side.synced_since_boot.clear()
            side.pending.clear()
            if online is not None:
                side.online = device["online"] = bool(online)
            if side.online:
                device["last_heard"] = device["last_handshake_at"] = _now()
                self._connect(device_id)
            return side.boot

    def set_sync_delay(self, seconds: float) -> None:
        with self.lock:
            self.sync_delay = max(0.0, float(seconds))

    def settle(self) -> None:
        """Apply every sync whose time has come (every reader does this first)."""
        with self.lock:
            self._settle()

    def _reachable(self, device_id: str) -> bool:
        """Online, and neither quarantined nor denied (such a device gets no product services:
        an assumption; Particle documents only that a quarantined device cannot publish)."""
        device, side = self.fleet.get(device_id), self.device_side.get(device_id)
        if device is None or side is None:
            return False
        return side.online and not device.get("quarantined") and not device.get("denied")

    def _connect(self, device_id: str) -> None:
        """A connect: every instance the cloud holds for the device syncs to it."""
        for prefix, ledger, device in list(self.ledgers):
            if device == device_id:
                self._schedule_sync(device_id, (prefix, ledger))

    def _schedule_sync(self, device_id: str, key: tuple[str, str]) -> None:
        if not self._reachable(device_id):
            return  # offline: it syncs at its next connect
        side = self.device_side[device_id]
        if key in side.pending:
            return  # a change while a sync is on its way rides along: it carries what the cloud holds
        due = self.clock() + self.sync_delay
        side.pending[key] = due
        self._sync_seq += 1
        heapq.heappush(self._sync_queue, (due, self._sync_seq, device_id, key))
        self._settle()

    def _settle(self) -> None:
        now = self.clock()
        while self._sync_queue and self._sync_queue[0][0] <= now:
            due, _, device_id, key = heapq.heappop(self._sync_queue)
            side = self.device_side.get(device_id)
            if side is None or side.pending.get(key) != due:
                continue  # went offline or rebooted meanwhile: the next connect syncs
            del side.pending[key]
            if not self._reachable(device_id):
                continue
            instance = self.ledgers.get((*key, device_id))
            if instance is None:
                continue  # deleted in the cloud: nothing reaches the device, which keeps its copy
            side.copies[key] = LedgerCopy(dict(instance["data"]), _now(), instance["updated_at"])
            side.synced_since_boot.add(key)
            side.syncs += 1

    def ledger_writes(self, device_id: str) -> int:
        """Ledger PUTs that took effect for this device (under any prefix)."""
        with self.lock:
            return self.writes[device_id]

    def set_faults(
        self,
        latency: float = 0.0,
        error_rate: float = 0.0,
        error_statuses: tuple[int, ...] | list[int] = (500, 502, 503, 429),
        timeout_rate: float = 0.0,
        timeout_seconds: float = 11.0,
        auth_failure: bool = False,
        seed: int | None = None,
        *,
        timeout_applied: float = 0.0,
        retry_after: int | None = None,
        echo_request: bool = False,
    ) -> None:
        """Replace every fault setting at once (no arguments: a healthy cloud)."""
        faults = Faults(
            latency=float(latency),
            error_rate=float(error_rate),
            error_statuses=tuple(int(s) for s in error_statuses),
            timeout_rate=float(timeout_rate),
            timeout_seconds=float(timeout_seconds),
            timeout_applied=float(timeout_applied),
            auth_failure=bool(auth_failure),
            retry_after=None if retry_after is None else int(retry_after),
            echo_request=bool(echo_request),
        )
        if seed is not None:
            faults.rng.seed(seed)
        with self.lock:
            self.faults = faults

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        """(requests, window seconds) accepted per window; None: unlimited."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: tuple[int, float] | None) -> None:
        with self.lock:
            self._rate_limit = (int(value[0]), float(value[1])) if value else None
            self._recent.clear()
            self._window_start, self._window_count = time.monotonic(), 0

    def set_rate_limit(
        self, requests: int | None, window_seconds: float = 1.0, *, mode: str | None = None
    ) -> None:
        if mode is not None:
            if mode not in ("sliding", "fixed"):
                raise ValueError("mode must be sliding or fixed")
            self.rate_limit_mode = mode
        self.rate_limit = (requests, window_seconds) if requests else None

    def request_count(self, method: str | None = None, route: str | None = None) -> int:
        with self.lock:
            return sum(
                n
                for (m, r), n in self.requests.items()
                if (method is None or m == method) and (route is None or r == route)
            )

    def reset_stats(self) -> None:
        with self.lock:
            self.requests.clear()
            self.statuses.clear()
            self.writes.clear()
            self.connections = 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": {f"{m} {r}": n for (m, r), n in sorted(self.requests.items())},
                "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
                "total": sum(self.requests.values()),
                "ledger_writes": sum(self.writes.values()),
                "devices": len(self.fleet),
                "ledger_instances": len(self.ledgers),
                "device_syncs": sum(s.syncs for s in self.device_side.values()),
                "connections": self.connections,
            }

    # ---- request handling ---------------------------------------------------------------------

    def _rate_limited(self) -> float | None:
        """None when the request fits the limit (and is counted); else seconds until there is room.

        Only accepted requests fill the window, so the accepted rate never exceeds the limit."""
        with self.lock:
            if not self._rate_limit:
                return None
            limit, window = self._rate_limit
            now = time.monotonic()
            if self.rate_limit_mode == "fixed":
                if now - self._window_start >= window:
                    self._window_start += window * ((now - self._window_start) // window)
                    self._window_count = 0
                if self._window_count >= limit:
                    return self._window_start + window - now
                self._window_count += 1
                return None
            while self._recent and self._recent[0] <= now - window:
                self._recent.popleft()
            if len(self._recent) >= limit:
                return self._recent[0] + window - now
            self._recent.append(now)
            return None

    @staticmethod
    def route_of(path: str) -> str:
        if DEVICES_PATH.match(path):
            return ROUTE_DEVICES
        if DEVICE_PATH.match(path):
            return ROUTE_DEVICE
        match = LEDGER_PATH.match(path)
        if match:
            return ROUTE_INSTANCE if match["device"] else ROUTE_INSTANCES
        return ROUTE_OTHER

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any) -> Answer:
        """(status, headers, JSON body) for one API request; status DROP: close without answering."""
        with self.lock:
            self.requests[(method, self.route_of(path))] += 1
            faults = self.faults
            self._settle()
        answer = self._handle(faults, method, path, query, headers, body)
        with self.lock:
            self.statuses[answer[0]] += 1
        return answer

    def _handle(
        self, faults: Faults, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any
    ) -> Answer:
        if faults.latency:
            time.sleep(faults.latency)
        wait = self._rate_limited()
        if wait is not None:
            extra = {"Retry-After": str(max(1, int(wait + 0.999)))} if self.rate_limit_retry_after else {}
            return 429, extra, {"error": "Too many requests", "error_description": "Rate limit exceeded."}
        if faults.timeout_rate and faults.rng.random() < faults.timeout_rate:
            if faults.timeout_applied and faults.rng.random() < float(faults.timeout_applied):
                self._serve(method, path, query, headers, body)
            time.sleep(faults.timeout_seconds)
            return DROP, {}, None
        if faults.error_rate and faults.rng.random() < faults.error_rate:
            status = faults.rng.choice(faults.error_statuses)
            extra = {"Retry-After": str(faults.retry_after)} if status == 429 and faults.retry_after else {}
            description = f"Simulated {status}."
            if faults.echo_request and body is not None:
                description += f" Request: {json.dumps(body)}"
            return status, extra, {"error": "Injected fault", "error_description": description}
        if faults.auth_failure:
            return 401, {}, dict(INVALID_TOKEN)
        return self._serve(method, path, query, headers, body)

    def _serve(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any) -> Answer:
        if headers.get("Authorization") != f"Bearer {self.access_token}":
            return 401, {}, dict(INVALID_TOKEN)
        try:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("per_page", [str(DEFAULT_PER_PAGE)])[0])
        except ValueError:
            return 400, {}, {"ok": False, "error": "page and per_page must be numbers"}
        page, per_page = max(1, page), min(self.max_per_page, max(1, per_page))
        match = DEVICES_PATH.match(path)
        if match:
            if method != "GET":
                return 405, {}, {"ok": False, "error": "Method not allowed"}
            return self._list_devices(unquote(match["product"]), query, page, per_page)
        match = DEVICE_PATH.match(path)
        if match:
            if method != "GET":
                return 405, {}, {"ok": False, "error": "Method not allowed"}
            return self._get_device(unquote(match["product"]), unquote(match["device"]))
        match = LEDGER_PATH.match(path)
        if match:
            return self._ledger(method, match, query, body, page, per_page)
        return 404, {}, {"ok": False, "error": "Not found"}

    def _known_product(self, product: str) -> bool:
        return product in (self.product, str(self.product_id))

    def _get_device(self, product: str, device_id: str) -> Answer:
        """Particle's "Get product device information": the device object at the top level."""
        if not self._known_product(product):
            return 404, {}, {"ok": False, "error": "Product not found"}
        with self.lock:
            device = self.fleet.get(device_id)
            if device is None:
                return 404, {}, dict(DEVICE_NOT_FOUND)
            return 200, {}, dict(device)

    def _list_devices(self, product: str, query: dict[str, list[str]], page: int, per_page: int) -> Answer:
        if not self._known_product(product):
            return 404, {}, {"ok": False, "error": "Product not found"}
        with self.lock:
            fleet = [dict(d) for d in self.fleet.values()]
        try:
            fleet = _filter_and_sort(fleet, query)
        except ValueError as exc:
            return 400, {}, {"ok": False, "error": str(exc)}
        chunk = fleet[(page - 1) * per_page : page * per_page]
        total_pages = max(1, -(-len(fleet) // per_page))
        return (
            200,
            {},
            {
                "devices": chunk,
                "customers": [],
                "meta": {"page": page, "per_page": per_page, self.meta_total_key: total_pages},
            },
        )

    def _ledger(
        self, method: str, match: re.Match, query: dict[str, list[str]], body: Any, page: int, per_page: int
    ) -> Answer:
        if match["org"] and unquote(match["org"]) != self.org:
            return 404, {}, {"ok": False, "error": "Organization not found"}
        if match["product"] and not self._known_product(unquote(match["product"])):
            return 404, {}, {"ok": False, "error": "Product not found"}
        prefix, ledger, device = match["prefix"], unquote(match["ledger"]), match["device"]
        if not LEDGER_NAME.match(ledger):
            return 400, {}, {"ok": False, "error": "Invalid ledger name"}
        with self.lock:
            if device is None:
                if method != "GET":
                    return 405, {}, {"ok": False, "error": "Method not allowed"}
                instances = [
                    self._instance_view(k, v)
                    for k, v in sorted(self.ledgers.items())
                    if k[:2] == (prefix, ledger)
                ]
                total = max(1, -(-len(instances) // per_page))
                chunk = instances[(page - 1) * per_page : page * per_page]
                meta = {"page": page, "per_page": per_page, self.meta_total_key: total}
                return 200, {}, {"instances": chunk, "meta": meta}
            if device not in self.fleet:
                return 404, {}, {"ok": False, "error": "Device not found"}
            key = (prefix, ledger, device)
            if method == "GET":
                if key not in self.ledgers:
                    return 404, {}, {"ok": False, "error": "Ledger instance not found"}
                return 200, {}, {"instance": self._instance_view(key, self.ledgers[key])}
            if method == "DELETE":
                # The cloud's instance only: a device keeps its flash copy (Device OS Ledger docs,
                # "Ledger synchronization": a Cloud-to-Device Ledger is stored in the device's flash;
                # no sync of a deletion is documented).
                if self.ledgers.pop(key, None) is None:
                    return 404, {}, {"ok": False, "error": "Ledger instance not found"}
                return 200, {}, {"ok": True}
            if method == "PUT":
                return self._put_instance(key, query, body)
        return 405, {}, {"ok": False, "error": "Method not allowed"}

    def _put_instance(self, key: tuple[str, str, str], query: dict[str, list[str]], body: Any) -> Answer:
        instance = body.get("instance") if isinstance(body, dict) else None
        data = instance.get("data") if isinstance(instance, dict) else None
        if not isinstance(data, dict):
            return 400, {}, {"ok": False, "error": "instance.data must be an object"}
        mode = query.get("set_mode", ["Replace"])[0]
        if mode not in ("Replace", "Merge"):
            return 400, {}, {"ok": False, "error": "set_mode must be Replace or Merge"}
        now = _now()
        current = self.ledgers.get(key)
        merged = {**(current["data"] if current and mode == "Merge" else {}), **data}
        if len(json.dumps(merged).encode()) > MAX_LEDGER_BYTES:
            return 400, {}, {"ok": False, "error": "Ledger data exceeds 16 KB"}
        self.ledgers[key] = {
            "data": merged,
            "created_at": current["created_at"] if current else now,
            "updated_at": now,
        }
        self.writes[key[2]] += 1
        self._schedule_sync(key[2], (key[0], key[1]))
        return 200, {}, {"instance": self._instance_view(key, self.ledgers[key])}

    @staticmethod
    def _instance_view(key: tuple[str, str, str], instance: dict[str, Any]) -> dict[str, Any]:
        data = instance["data"]
        return {
            "name": key[1],
            "scope": {"type": "Device", "value": key[2]},
            "data": dict(data),
            "size_bytes": len(json.dumps(data).encode()),
            "created_at": instance["created_at"],
            "updated_at": instance["updated_at"],
        }

    # ---- control API (no auth: the simulator's own knobs) --------------------------------------

    def control(self, method: str, path: str, body: Any, query: dict[str, list[str]] | None = None) -> Answer:
        body = body if isinstance(body, dict) else {}
        query = query or {}
        device_route = CONTROL_DEVICE_PATH.match(path)
        if device_route and method == "POST":
            return self._control_device(device_route["device"], device_route["action"], body)
        if path == "/_sim/device-ledgers" and method == "GET":
            prefix = query.get("prefix", ["/v1"])[0]
            ledger = query.get("ledger", [DEFAULT_LEDGER])[0]
            return 200, {}, {"devices": self.device_views(prefix, ledger)}
        if path == "/_sim/ledger-sync" and method == "POST":
            self.set_sync_delay(float(body.get("delay_seconds", 0.0)))
            return 200, {}, {"ok": True, "delay_seconds": self.sync_delay}
        if path == "/_sim/stats" and method == "GET":
            return 200, {}, self.stats()
        if path == "/_sim/reset-stats" and method == "POST":
            self.reset_stats()
            return 200, {}, {"ok": True}
        if path == "/_sim/faults" and method == "POST":
            known = {f.name for f in fields(Faults)} - {"rng"} | {"seed"}
            unknown = set(body) - known
            if unknown:
                return 400, {}, {"ok": False, "error": f"unknown fault settings: {sorted(unknown)}"}
            self.set_faults(**body)
            return 200, {}, {"ok": True}
        if path == "/_sim/rate-limit" and method == "POST":
            self.set_rate_limit(
                body.get("requests"), float(body.get("window_seconds", 1.0)), mode=body.get("mode")
            )
            return 200, {}, {"ok": True, "rate_limit": self.rate_limit, "mode": self.rate_limit_mode}
        if path == "/_sim/devices" and method == "POST":
            ids = self.add_devices(
                int(body.get("count", 1)),
                quarantined=int(body.get("quarantined", 0)),
                denied=int(body.get("denied", 0)),
                platform_id=int(body.get("platform_id", 32)),
            )
            return 200, {}, {"ids": ids}
        if path == "/_sim/devices" and method == "GET":
            return 200, {}, {"devices": self.devices()}
        if path == "/_sim/ledgers" and method == "GET":
            with self.lock:
                instances = [
                    {"prefix": k[0], "ledger": k[1], "device_id": k[2], "data": dict(v["data"])}
                    for k, v in self.ledgers.items()
                ]
            return 200, {}, {"instances": instances}
        return 404, {}, {"ok": False, "error": "unknown control route"}

    def _control_device(self, device_id: str, action: str | None, body: dict[str, Any]) -> Answer:
        with self.lock:
            if device_id not in self.fleet:
                return 404, {}, dict(DEVICE_NOT_FOUND)
        try:
            if action == "online":
                if not isinstance(body.get("online"), bool):
                    return 400, {}, {"ok": False, "error": "online must be true or false"}
                self.set_online(device_id, body["online"])
            elif action == "reboot":
                online = body.get("online")
                if online is not None and not isinstance(online, bool):
                    return 400, {}, {"ok": False, "error": "online must be true, false or absent"}
                self.reboot(device_id, online=online)
            else:
                self.set_device(device_id, **body)
        except (TypeError, ValueError) as exc:
            return 400, {}, {"ok": False, "error": str(exc)}
        return 200, {}, {"device": self.device_view(device_id)}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client's connection reuse is exercised

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats instead
                return

            def setup(self) -> None:
                super().setup()
                # Headers and body leave in one write, and without Nagle's delay: otherwise every
                # answer waits for the client's delayed ACK (about 40 ms on Linux).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with sim.lock:
                    sim.connections += 1

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    status, headers, answer = 400, {}, {"ok": False, "error": "body is not JSON"}
                else:
                    if parts.path.startswith("/_sim/"):
                        status, headers, answer = sim.control(
                            self.command, parts.path, body, parse_qs(parts.query)
                        )
                    else:
                        status, headers, answer = sim.handle(
                            self.command, parts.path, parse_qs(parts.query), self.headers, body
                        )
                if status == DROP:  # a lost answer: the client sees a timeout or a closed connection
                    self.close_connection = True
                    return
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self._headers_buffer.append(b"\r\n" + payload)
                    self.flush_headers()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = _answer

        return Handler


CONTROL_DEVICE_PATH = re.compile(r"^/_sim/devices/(?P<device>[0-9a-f]{24})(?:/(?P<action>online|reboot))?$")


def _filter_and_sort(devices: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The list route's filters as the official SDK sends them (particle-api-js ``listDevices``:
    ``deviceId`` and ``deviceName`` partial matches, ``groups`` a comma-separated list of full group
    names, ``serialNumber`` partial, ``sortAttr``/``sortDir``). Without ``sortAttr`` Particle sorts by
    last connection, newest first; the simulator keeps the order devices were added instead, so pages
    stay stable while devices connect. Unconfirmed: case rules of the partial matches (here: id and
    serial as given, name ignoring case) and the default ``sortDir`` (here ``asc``)."""

    def arg(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values and values[0] != "" else None

    if (wanted := arg("deviceId")) is not None:
        devices = [d for d in devices if wanted.lower() in d["id"]]
    if (wanted := arg("deviceName")) is not None:
        devices = [d for d in devices if wanted.lower() in str(d.get("name") or "").lower()]
    if (wanted := arg("serialNumber")) is not None:
        devices = [d for d in devices if wanted in str(d.get("serial_number") or "")]
    if (wanted := arg("groups")) is not None:
        names = {g.strip() for g in wanted.split(",") if g.strip()}
        devices = [d for d in devices if names & set(d.get("groups") or [])]
    sort_attr, sort_dir = arg("sortAttr"), arg("sortDir")
    if sort_dir is not None and sort_dir not in ("asc", "desc"):
        raise ValueError("sortDir must be asc or desc")
    if sort_attr is not None:
        if sort_attr not in SORT_FIELDS:
            raise ValueError(f"sortAttr must be one of {', '.join(SORT_FIELDS)}")
        key = SORT_FIELDS[sort_attr]
        devices = sorted(
            devices, key=lambda d: (d.get(key) is None, d.get(key) or 0), reverse=sort_dir == "desc"
        )
    return devices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Particle Cloud simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--devices", type=int, default=25)
    parser.add_argument("--quarantined", type=int, default=1)
    parser.add_argument("--denied", type=int, default=0)
    parser.add_argument("--product", default="tokenflow-demo")
    parser.add_argument("--org", default="tokenflow-org")
    parser.add_argument("--access-token", default="sim-access-token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")
    parser.add_argument("--rate", default="", help="rate limit as REQUESTS/SECONDS, e.g. 10000/300")
    parser.add_argument(
        "--sync-delay", type=float, default=0.0, help="seconds until a Ledger change reaches an online device"
    )
    args = parser.parse_args(argv)
    sim = ParticleSimulator(
        args.host,
        args.port,
        product=args.product,
        org=args.org,
        access_token=args.access_token,
        sync_delay=args.sync_delay,
    )
    sim.add_devices(args.devices, quarantined=args.quarantined, denied=args.denied)
    if args.latency:
        sim.set_faults(latency=args.latency)
    if args.rate:
        requests, seconds = args.rate.split("/")
        sim.set_rate_limit(int(requests), float(seconds))
    sim.start()
    print(f"Particle simulator on {sim.url} (product {sim.product}, {args.devices} devices)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
