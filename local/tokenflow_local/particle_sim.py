"""A Particle Cloud simulator: the part of the API Tokenflow uses, over real HTTP.

Shapes follow REFERENCE.md: product device listing with paging (``devices`` + ``meta``), device
fields (quarantined and denied included), Ledger instances under the three path prefixes (``/v1``,
``/v1/orgs/{org}``, ``/v1/products/{product}``) with PUT (Replace or Merge), GET, DELETE and list,
bearer-token checks (401), unknown product or device (404), a rate limiter answering 429 (with
``Retry-After`` unless told otherwise), and fault injection (latency, error rate, timeouts and
dropped connections, 401) for tests and benchmarks.

Control from Python (``ParticleSimulator``) or over HTTP under ``/_sim/`` (no auth):
``GET /_sim/stats``, ``POST /_sim/faults``, ``POST /_sim/rate-limit``, ``GET|POST /_sim/devices``,
``GET /_sim/ledgers``, ``POST /_sim/reset-stats``.

    python -m tokenflow_local.particle_sim --port 4000 --devices 25
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import threading
import time
from collections import Counter, deque
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
LEDGER_NAME = re.compile(r"^[a-z0-9-]{1,32}$")
DEFAULT_PER_PAGE = 25
MAX_LEDGER_BYTES = 16 * 1024
# Route templates: the keys of the request counters (never a device id or a token).
ROUTE_DEVICES = "/v1/products/{product}/devices"
ROUTE_INSTANCE = "{prefix}/ledgers/{ledger}/instances/{device_id}"
ROUTE_INSTANCES = "{prefix}/ledgers/{ledger}/instances"
ROUTE_OTHER = "other"
INVALID_TOKEN = {"error": "invalid_token", "error_description": "The access token provided is invalid."}

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
    ) -> str:
        """Add one device; ids are 24 lowercase hex characters, the same for the same order of calls."""
        with self.lock:
            self._serial += 1
            n = self._serial
            device_id = f"e00fce68{self.product_id:06x}{n:010x}"
            self.fleet[device_id] = {
                "id": device_id,
                "name": name or f"pump-{n:04d}",
                "serial_number": serial_number or f"P046AB{n:07d}",
                "platform_id": platform_id,
                "product_id": self.product_id,
                "online": online,
                "last_heard": _now(),
                "firmware_version": 3,
                "development": development,
                "quarantined": quarantined,
                "denied": denied,
                "groups": [],
            }
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

    def devices(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(d) for d in self.fleet.values()]

    def ledger_data(
        self, device_id: str, prefix: str = "/v1", ledger: str = "blynk-tokens-c2d"
    ) -> dict[str, Any] | None:
        with self.lock:
            instance = self.ledgers.get((prefix, ledger, device_id))
            return dict(instance["data"]) if instance else None

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
        match = LEDGER_PATH.match(path)
        if match:
            return ROUTE_INSTANCE if match["device"] else ROUTE_INSTANCES
        return ROUTE_OTHER

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any) -> Answer:
        """(status, headers, JSON body) for one API request; status DROP: close without answering."""
        with self.lock:
            self.requests[(method, self.route_of(path))] += 1
            faults = self.faults
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
            return self._list_devices(unquote(match["product"]), page, per_page)
        match = LEDGER_PATH.match(path)
        if match:
            return self._ledger(method, match, query, body, page, per_page)
        return 404, {}, {"ok": False, "error": "Not found"}

    def _known_product(self, product: str) -> bool:
        return product in (self.product, str(self.product_id))

    def _list_devices(self, product: str, page: int, per_page: int) -> Answer:
        if not self._known_product(product):
            return 404, {}, {"ok": False, "error": "Product not found"}
        with self.lock:
            fleet = list(self.fleet.values())
            chunk = [dict(d) for d in fleet[(page - 1) * per_page : page * per_page]]
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

    def control(self, method: str, path: str, body: Any) -> Answer:
        body = body if isinstance(body, dict) else {}
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
                        status, headers, answer = sim.control(self.command, parts.path, body)
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
    args = parser.parse_args(argv)
    sim = ParticleSimulator(
        args.host, args.port, product=args.product, org=args.org, access_token=args.access_token
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
