"""What the local stack does to the process it runs in: the ports it listens on, the environment the
functions read, the clients and secrets they cache, and waiting for the whole to settle.

Every function of the stack runs in this one process, so the stack sets ``os.environ`` as Lambda
would set each function's environment, and gives it back as it was on ``stop()``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any


class PortInUse(RuntimeError):
    """A server of the stack could not listen on its port."""


def port_error(what: str, host: str, port: int, exc: OSError, option: str = "") -> PortInUse:
    """The one-line error a taken port becomes: what could not listen, where, and what to do."""
    hint = f" or choose another one with {option}" if option else ""
    return PortInUse(
        f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}. Stop whatever uses port {port}{hint}."
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_ports(host: str, ports: dict[str, int], servers: dict[str, tuple[str, str]]) -> None:
    """Fail before starting anything when a fixed port is taken (a clear message, no half stack).

    ``ports`` maps a server's key to its port (0: any free port, not checked); ``servers`` maps the
    same key to (what the server is, the command-line option that moves it).
    """
    for key, port in ports.items():
        if not port:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                what, option = servers[key]
                raise port_error(what, host, port, exc, option) from exc


class ProcessEnvironment:
    """``os.environ`` as the functions should see it, and back as it was.

    ``apply`` may be called more than once; ``restore`` puts back every variable the first ``apply``
    found (unset ones are unset again).
    """

    # Credentials a developer's shell may carry that would override the stack's own.
    DROPPED = ("AWS_SESSION_TOKEN", "AWS_PROFILE")

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def apply(self, env: dict[str, str]) -> None:
        for name in [*env, *self.DROPPED]:
            self._saved.setdefault(name, os.environ.get(name))
        for name in self.DROPPED:
            os.environ.pop(name, None)
        os.environ.update(env)
        forget_clients()

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        forget_clients()


def forget_clients() -> None:
    """Drop every cached client, secret, setting and service, so the functions see the current
    endpoints, values and environment (``tokenflow.wiring.reset``)."""
    from tokenflow import wiring

    wiring.reset()


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; its value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or 'the stack'}")
        time.sleep(interval)
