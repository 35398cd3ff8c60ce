"""The Particle simulator's HTTP side: one request handler class over a simulator.

This room owns the wire: HTTP/1.1 with keep-alive (so a client's connection reuse is exercised and
counted in ``connections``), TCP_NODELAY, reading the JSON body (400 when it is not JSON), sending
``/_sim/...`` to the control API and everything else to ``handle``, writing the answer in one write,
and closing the connection without an answer when ``handle`` says ``DROP`` (a lost response).
``ParticleSimulator`` (``particle_sim``) serves it on a ``ThreadingHTTPServer``.
"""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tokenflow_local.particle_sim_control import ControlAPI
from tokenflow_local.particle_sim_state import DROP


def handler_class(sim: ControlAPI) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``sim``."""

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
