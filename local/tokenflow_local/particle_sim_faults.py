"""The Particle simulator's gate in front of the API routes: faults, the rate limiter, the counters.

Every API request passes ``handle``: it is counted under its route template (never a device id or a
token), waits the injected latency, meets the rate limiter (429, with ``Retry-After`` unless told
otherwise; a sliding or a fixed window), then the injected faults (an error status, a timeout or a
dropped connection, a 401) for tests and benchmarks, and only then reaches the routes
(``particle_sim_cloud``); its answer's status is counted too.

This room owns ``Faults`` and ``set_faults``, the rate limit (``rate_limit``, ``set_rate_limit``), and
the request statistics (``request_count``, ``stats``, ``reset_stats``, ``connections``).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from tokenflow_local.particle_sim_cloud import INVALID_TOKEN, CloudAPI
from tokenflow_local.particle_sim_state import DROP, Answer


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


class RequestGate(CloudAPI):
    """Latency, rate limit and injected faults before the routes; what was asked and answered."""

    def __init__(
        self,
        *,
        rate_limit: tuple[int, float] | None,
        rate_limit_mode: str,
        rate_limit_retry_after: bool,
        **state: Any,
    ) -> None:
        super().__init__(**state)
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, route template)
        self.statuses: Counter[int] = Counter()
        self.faults = Faults()
        self.connections = 0  # TCP connections accepted: shows whether clients reuse them
        self.rate_limit_mode = rate_limit_mode
        self.rate_limit_retry_after = rate_limit_retry_after
        self._rate_limit: tuple[int, float] | None = None
        self._recent: deque[float] = deque()
        self._window_start = 0.0
        self._window_count = 0
        self.rate_limit = rate_limit

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
