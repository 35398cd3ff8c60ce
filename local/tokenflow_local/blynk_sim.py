"""A small Blynk simulator: the device HTTPS API of every Blynk region, on one local port.

A region is the first path segment (``http://127.0.0.1:PORT/ny3/external/api/get?token=..&V6``), so
``BlynkClient(url_template=sim.url_template)`` talks to it as to ``https://{region}.blynk.cloud``.
Each token belongs to one region and keeps its datastream values. The answers are Blynk's documented
ones (REFERENCE.md, "Blynk static tokens"; https://docs.blynk.io/en/blynk.cloud/device-https-api):

- ``update?token=T&V1=x`` and ``batch/update?token=T&V1=x&V2=y``: 200, empty body, values stored;
- ``get?token=T&V6``: 200 with the value as plain text (several pins: a JSON object by pin);
  a datastream without a value answers 200 with an empty body (``no_data_answer="empty"``) or 400
  with a message (``"error"``): Blynk documents neither, so the client takes both;
- ``isHardwareConnected?token=T``: 200 ``false`` (a device that only sends through the HTTP API
  never shows as online);
- a token unknown to the simulator, or deleted: 400 ``{"error":{"message":"Invalid token."}}``;
- a token of another region: 308 with ``Location`` naming the same call in the token's region.

Faults for tests: ``fail_next(n, status)`` answers the next n requests with that status, ``delay``
holds every answer that many seconds (a client timeout). ``requests`` counts the calls (never the
tokens: the simulator keeps no request line).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

REGIONS = ("fra1", "lon1", "ny3", "sgp1", "blr1")
CALLS = ("get", "update", "batch/update", "isHardwareConnected")
API_PREFIX = "/external/api/"


class BlynkSimulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, no_data_answer: str = "empty") -> None:
        self.lock = threading.Lock()
        self.tokens: dict[str, str] = {}  # token -> its region
        self.values: dict[str, dict[str, str]] = {}  # token -> pin (upper case) -> value
        self.requests: dict[str, int] = {}  # "<region> <call> <status>" -> count
        self.no_data_answer = no_data_answer
        self.delay = 0.0
        self._failures: list[int] = []
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- set-up ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url_template(self) -> str:
        """What ``BLYNK_URL_TEMPLATE`` is set to for this simulator."""
        return self.url + "/{region}"

    def add_token(self, token: str, region: str = "ny3") -> None:
        if region not in REGIONS:
            raise ValueError(f"unknown region {region}")
        with self.lock:
            self.tokens[token] = region
            self.values.setdefault(token, {})

    def delete_token(self, token: str) -> None:
        """As deleting a static token in Blynk.Console: the AuthToken is invalid from now on."""
        with self.lock:
            self.tokens.pop(token, None)
            self.values.pop(token, None)

    def set_value(self, token: str, pin: str, value: str) -> None:
        with self.lock:
            self.values.setdefault(token, {})[pin.upper()] = value

    def value(self, token: str, pin: str) -> str | None:
        with self.lock:
            return self.values.get(token, {}).get(pin.upper())

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self._failures.extend([status] * count)

    def count(self, region: str, call: str, status: int) -> int:
        with self.lock:
            return self.requests.get(f"{region} {call} {status}", 0)

    # ---- the API -----------------------------------------------------------------------------

    def handle(self, path: str, query: str) -> tuple[int, dict[str, str], bytes]:
        region, _, rest = path.lstrip("/").partition("/")
        call = ("/" + rest).removeprefix(API_PREFIX) if ("/" + rest).startswith(API_PREFIX) else None
        if region not in REGIONS or call not in CALLS:
            return 404, {}, b""
        with self.lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return self._count(region, call, failure, {}, b"")
        pairs = parse_qsl(query, keep_blank_values=True)
        token = next((v for k, v in pairs if k == "token"), "")
        pins = [(k, v) for k, v in pairs if k != "token"]
        with self.lock:
            home = self.tokens.get(token)
        if home is None:
            return self._count(region, call, 400, {}, _error("Invalid token."))
        if home != region:
            location = f"{self.url}/{home}{API_PREFIX}{call}?{query}"
            return self._count(region, call, 308, {"Location": location}, b"")
        if call in ("update", "batch/update"):
            if not pins or any(not _is_pin(k) for k, _ in pins):
                return self._count(region, call, 400, {}, _error("Wrong pin format."))
            with self.lock:
                stored = self.values.setdefault(token, {})
                for pin, value in pins:
                    stored[pin.upper()] = value
            return self._count(region, call, 200, {}, b"")
        if call == "isHardwareConnected":
            return self._count(region, call, 200, {}, b"false")
        names = [k for k, _ in pins]
        if not names or any(not _is_pin(k) for k in names):
            return self._count(region, call, 400, {}, _error("Wrong pin format."))
        with self.lock:
            stored = dict(self.values.get(token, {}))
        if len(names) == 1:
            value = stored.get(names[0].upper())
            if value is None:
                if self.no_data_answer == "error":
                    return self._count(region, call, 400, {}, _error(f"No value for {names[0]}."))
                return self._count(region, call, 200, {}, b"")
            return self._count(region, call, 200, {}, value.encode())
        body = {n: stored[n.upper()] for n in names if n.upper() in stored}
        return self._count(region, call, 200, {}, json.dumps(body).encode())

    def _count(
        self, region: str, call: str, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            key = f"{region} {call} {status}"
            self.requests[key] = self.requests.get(key, 0) + 1
        return status, headers, body

    # ---- serving -----------------------------------------------------------------------------

    def start(self) -> BlynkSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="blynk-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> BlynkSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_pin(name: str) -> bool:
    return len(name) > 1 and name[0] in "Vv" and name[1:].isdigit()


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message}}).encode()


def _handler(sim: BlynkSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # the request line holds the token
            return

        def do_GET(self) -> None:
            if sim.delay:
                time.sleep(sim.delay)
            parts = urlsplit(self.path)
            status, headers, body = sim.handle(parts.path, parts.query)
            try:
                self.send_response(status)
                content_type = "application/json" if body.startswith(b"{") else "text/plain"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                self.close_connection = True

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Blynk device HTTPS API simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4100)
    args = parser.parse_args(argv)
    sim = BlynkSimulator(args.host, args.port).start()
    print(f"Blynk simulator on {sim.url_template}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
