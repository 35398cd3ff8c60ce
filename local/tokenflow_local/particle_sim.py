"""A Particle Cloud simulator: the part of the API Tokenflow uses, over real HTTP.

Shapes follow REFERENCE.md: product device listing with paging (``devices`` + ``meta``), device
fields (quarantined and denied included), Ledger instances under the three path prefixes (``/v1``,
``/v1/orgs/{org}``, ``/v1/products/{product}``) with PUT (Replace or Merge), GET, DELETE and list,
bearer-token checks (401), unknown product or device (404), a rate limiter answering 429 with
``Retry-After``, and fault injection (latency, error rate, timeouts, 401) for tests.

Control from Python (``ParticleSimulator``) or over HTTP under ``/_sim/`` (no auth):
``GET /_sim/stats``, ``POST /_sim/faults``, ``POST /_sim/devices``, ``GET /_sim/ledgers``.

    python -m tokenflow_local.particle_sim --port 4000 --devices 25
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LEDGER_PATH = re.compile(
    r"^(?P<prefix>/v1|/v1/orgs/(?P<org>[^/]+)|/v1/products/(?P<product>[^/]+))"
    r"/ledgers/(?P<ledger>[a-z0-9-]{1,32})/instances(?:/(?P<device>[^/]+))?$"
)
DEVICES_PATH = re.compile(r"^/v1/products/(?P<product>[^/]+)/devices$")
DEFAULT_PER_PAGE = 25


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Faults:
    latency: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503, 429)
    timeout_rate: float = 0.0
    timeout_seconds: float = 15.0
    auth_failure: bool = False
    retry_after: int | None = None
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
    ) -> None:
        self.product = product
        self.product_id = product_id
        self.org = org
        self.access_token = access_token
        self.max_per_page = max_per_page
        self.lock = threading.RLock()
        self.fleet: dict[str, dict[str, Any]] = {}
        self.ledgers: dict[tuple[str, str, str], dict[str, Any]] = {}  # (prefix, ledger, device)
        self.writes: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.faults = Faults()
        self.rate_limit: tuple[int, float] | None = None
        self._recent: deque[float] = deque()
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
        self._thread = threading.Thread(target=self._server.serve_forever, name="particle-sim", daemon=True)
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

    def add_device(self, *, quarantined: bool = False, denied: bool = False, platform_id: int = 32) -> str:
        with self.lock:
            n = len(self.fleet) + 1
            device_id = f"e00fce68{self.product_id:06x}{n:010x}"
            self.fleet[device_id] = {
                "id": device_id,
                "name": f"pump-{n:04d}",
                "serial_number": f"P046AB{n:07d}",
                "platform_id": platform_id,
                "product_id": self.product_id,
                "online": True,
                "last_heard": _now(),
                "firmware_version": 3,
                "development": False,
                "quarantined": quarantined,
                "denied": denied,
                "groups": [],
            }
            return device_id

    def add_devices(
        self, count: int, *, quarantined: int = 0, denied: int = 0, platform_id: int = 32
    ) -> list[str]:
        ids = []
        for n in range(count):
            ids.append(
                self.add_device(
                    quarantined=n < quarantined,
                    denied=quarantined <= n < quarantined + denied,
                    platform_id=platform_id,
                )
            )
        return ids

    def remove_device(self, device_id: str) -> None:
        with self.lock:
            self.fleet.pop(device_id, None)

    def devices(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(d) for d in self.fleet.values()]

    def ledger_data(
        self, device_id: str, prefix: str = "/v1", ledger: str = "blynk-tokens-c2d"
    ) -> dict | None:
        with self.lock:
            instance = self.ledgers.get((prefix, ledger, device_id))
            return dict(instance["data"]) if instance else None

    def ledger_writes(self, device_id: str) -> int:
        with self.lock:
            return self.writes[device_id]

    def set_faults(self, **settings: Any) -> None:
        with self.lock:
            seed = settings.pop("seed", None)
            self.faults = Faults(**settings)
            if seed is not None:
                self.faults.rng.seed(seed)

    def set_rate_limit(self, requests: int, window_seconds: float) -> None:
        with self.lock:
            self.rate_limit = (requests, window_seconds)
            self._recent.clear()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "total": sum(self.requests.values()),
                "ledger_writes": sum(self.writes.values()),
                "devices": len(self.fleet),
                "ledger_instances": len(self.ledgers),
            }

    # ---- request handling ---------------------------------------------------------------------

    def _rate_limited(self) -> float | None:
        """Seconds until the window has room, when the limit is reached (a sliding window)."""
        with self.lock:
            if not self.rate_limit:
                return None
            limit, window = self.rate_limit
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - window:
                self._recent.popleft()
            if len(self._recent) >= limit:
                return self._recent[0] + window - now
            self._recent.append(now)
            return None

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any
    ) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) for one API request."""
        faults = self.faults
        if faults.latency:
            time.sleep(faults.latency)
        if faults.timeout_rate and faults.rng.random() < faults.timeout_rate:
            time.sleep(faults.timeout_seconds)
            return 504, {}, {"error": "timeout"}
        wait = self._rate_limited()
        if wait is not None:
            return 429, {"Retry-After": str(max(1, round(wait)))}, {"error": "Too many requests"}
        if faults.error_rate and faults.rng.random() < faults.error_rate:
            status = faults.rng.choice(faults.error_statuses)
            extra = {"Retry-After": str(faults.retry_after)} if status == 429 and faults.retry_after else {}
            return status, extra, {"error": "injected fault"}
        if faults.auth_failure or headers.get("Authorization") != f"Bearer {self.access_token}":
            return (
                401,
                {},
                {"error": "invalid_token", "error_description": "The access token provided is invalid."},
            )
        match = DEVICES_PATH.match(path)
        if match and method == "GET":
            self.requests["GET devices"] += 1
            return self._list_devices(match["product"], query)
        match = LEDGER_PATH.match(path)
        if match:
            self.requests[f"{method} ledger"] += 1
            return self._ledger(method, match, query, body)
        return 404, {}, {"ok": False, "error": "Not found"}

    def _known_product(self, product: str) -> bool:
        return product in (self.product, str(self.product_id))

    def _list_devices(self, product: str, query: dict[str, list[str]]) -> tuple[int, dict, dict]:
        if not self._known_product(product):
            return 404, {}, {"ok": False, "error": "Product not found"}
        page = max(1, int(query.get("page", ["1"])[0]))
        per_page = min(self.max_per_page, max(1, int(query.get("per_page", [str(DEFAULT_PER_PAGE)])[0])))
        with self.lock:
            fleet = list(self.fleet.values())
        total_pages = max(1, -(-len(fleet) // per_page))
        chunk = fleet[(page - 1) * per_page : page * per_page]
        return (
            200,
            {},
            {
                "devices": [dict(d) for d in chunk],
                "customers": [],
                "meta": {"page": page, "per_page": per_page, "total_pages": total_pages},
            },
        )

    def _ledger(
        self, method: str, match: re.Match, query: dict[str, list[str]], body: Any
    ) -> tuple[int, dict, dict]:
        if match["org"] and match["org"] != self.org:
            return 404, {}, {"ok": False, "error": "Organization not found"}
        if match["product"] and not self._known_product(match["product"]):
            return 404, {}, {"ok": False, "error": "Product not found"}
        prefix, ledger, device = match["prefix"], match["ledger"], match["device"]
        with self.lock:
            if device is None:
                if method != "GET":
                    return 405, {}, {"error": "Method not allowed"}
                instances = [
                    self._instance_view(k, v)
                    for k, v in sorted(self.ledgers.items())
                    if k[:2] == (prefix, ledger)
                ]
                page = max(1, int(query.get("page", ["1"])[0]))
                per_page = max(1, int(query.get("per_page", ["25"])[0]))
                total = max(1, -(-len(instances) // per_page))
                chunk = instances[(page - 1) * per_page : page * per_page]
                return (
                    200,
                    {},
                    {"instances": chunk, "meta": {"page": page, "per_page": per_page, "total_pages": total}},
                )
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
                data = (body or {}).get("instance", {}).get("data") if isinstance(body, dict) else None
                if not isinstance(data, dict):
                    return 400, {}, {"ok": False, "error": "instance.data must be an object"}
                mode = query.get("set_mode", ["Replace"])[0]
                if mode not in ("Replace", "Merge"):
                    return 400, {}, {"ok": False, "error": "set_mode must be Replace or Merge"}
                now = _now()
                current = self.ledgers.get(key)
                merged = {**(current["data"] if current and mode == "Merge" else {}), **data}
                self.ledgers[key] = {
                    "data": merged,
                    "created_at": current["created_at"] if current else now,
                    "updated_at": now,
                }
                self.writes[device] += 1
                return 200, {}, {"instance": self._instance_view(key, self.ledgers[key])}
        return 405, {}, {"error": "Method not allowed"}

    @staticmethod
    def _instance_view(key: tuple[str, str, str], instance: dict[str, Any]) -> dict[str, Any]:
        data = instance["data"]
        return {
            "name": key[1],
            "scope": {"type": "Device", "value": key[2]},
            "data": dict(data),
            "size_bytes": len(json.dumps(data)),
            "created_at": instance["created_at"],
            "updated_at": instance["updated_at"],
        }

    def control(self, method: str, path: str, body: Any) -> tuple[int, dict, dict]:
        if path == "/_sim/stats" and method == "GET":
            return 200, {}, self.stats()
        if path == "/_sim/faults" and method == "POST":
            self.set_faults(
                **{k: v for k, v in (body or {}).items() if k in Faults.__dataclass_fields__ or k == "seed"}
            )
            return 200, {}, {"ok": True}
        if path == "/_sim/devices" and method == "POST":
            body = body or {}
            ids = self.add_devices(
                int(body.get("count", 1)),
                quarantined=int(body.get("quarantined", 0)),
                denied=int(body.get("denied", 0)),
            )
            return 200, {}, {"ids": ids}
        if path == "/_sim/devices" and method == "GET":
            return 200, {}, {"devices": self.devices()}
        if path == "/_sim/ledgers" and method == "GET":
            with self.lock:
                return (
                    200,
                    {},
                    {
                        "instances": [
                            {"prefix": k[0], "ledger": k[1], "device_id": k[2], "data": v["data"]}
                            for k, v in self.ledgers.items()
                        ]
                    },
                )
        return 404, {}, {"error": "unknown control route"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats instead
                return

            def _serve(self) -> None:
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
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass

            do_GET = do_PUT = do_POST = do_DELETE = _serve

        return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the Particle Cloud simulator.")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--devices", type=int, default=25)
    parser.add_argument("--quarantined", type=int, default=1)
    args = parser.parse_args()
    sim = ParticleSimulator(port=args.port)
    sim.add_devices(args.devices, quarantined=args.quarantined)
    print(f"Particle simulator on {sim.url} (token {sim.access_token}, product {sim.product})")
    sim.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
