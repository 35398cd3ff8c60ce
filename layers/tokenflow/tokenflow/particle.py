"""The Particle Cloud API, as far as Tokenflow uses it: product devices and device Ledger instances.

One ``requests.Session`` per client (connection reuse, a pool sized for worker threads), timeouts on
every call, retries with exponential backoff and full jitter on 429, 408, 5xx, timeouts and
connection errors (``Retry-After`` honoured when present), and none on 400/401/403/404: those answers
will not change by asking again. Errors are typed, and their messages never carry the access token
or a Blynk token (only Particle's own ``error``/``error_description``, truncated).

The Ledger API path prefix is a setting (REFERENCE.md): ``/v1`` for a sandbox-owned product,
``/v1/orgs/{org}`` for an org-owned one, ``/v1/products/{product}`` for the form some scripts use.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from tokenflow.settings import Settings, secret

DEVICE_ID_RE = re.compile(r"^[0-9a-f]{24}$")
LEDGER_TOKEN_KEY = "blynk_token"  # noqa: S105 (the Ledger key's name)
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_MESSAGE_CHARS = 200


class ParticleError(Exception):
    """Particle answered with an error (or not at all). ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ParticleBadRequest(ParticleError):
    """400: the request is wrong; asking again will not help."""


class ParticleAuthError(ParticleError):
    """401: the access token is invalid or expired; every call will fail until it is replaced."""


class ParticleForbidden(ParticleError):
    """403: the token lacks a scope for this call."""


class ParticleNotFound(ParticleError):
    """404: no such product, device or Ledger instance."""


class ParticleUnavailable(ParticleError):
    """429, 408, 5xx, timeout or connection error, after the retries: try again later."""


_ERRORS_BY_STATUS: dict[int, type[ParticleError]] = {
    400: ParticleBadRequest,
    401: ParticleAuthError,
    403: ParticleForbidden,
    404: ParticleNotFound,
}


@dataclass(frozen=True)
class Device:
    id: str
    name: str | None = None
    serial_number: str | None = None
    platform_id: int | None = None
    product_id: int | None = None
    online: bool = False
    quarantined: bool = False
    denied: bool = False
    development: bool = False
    firmware_version: int | None = None
    last_heard: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Device:
        return cls(
            id=str(data["id"]),
            name=data.get("name"),
            serial_number=data.get("serial_number"),
            platform_id=data.get("platform_id"),
            product_id=data.get("product_id"),
            online=bool(data.get("online")),
            quarantined=bool(data.get("quarantined")),
            denied=bool(data.get("denied")),
            development=bool(data.get("development")),
            firmware_version=data.get("firmware_version"),
            last_heard=data.get("last_heard"),
        )


@dataclass(frozen=True)
class DevicePage:
    devices: list[Device]
    page: int
    total_pages: int


class ParticleClient:
    def __init__(
        self,
        base_url: str,
        access_token: str | Callable[[], str],
        product: str,
        ledger: str = "blynk-tokens-c2d",
        scope: str = "sandbox",
        org: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_retries: int = 4,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        pool_size: int = 16,
    ) -> None:
        if scope not in ("sandbox", "org", "product"):
            raise ValueError(f"unknown Ledger scope {scope!r}")
        if scope == "org" and not org:
            raise ValueError("the org Ledger scope needs an org")
        self.base_url = base_url.rstrip("/")
        self._token = access_token
        self.product = product
        self.ledger = ledger
        self.ledger_prefix = {
            "sandbox": "/v1",
            "org": f"/v1/orgs/{quote(org or '', safe='')}",
            "product": f"/v1/products/{quote(product, safe='')}",
        }[scope]
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._lock = threading.Lock()
        self.requests_sent = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ParticleClient:
        param = settings.particle_token_param
        return cls(
            settings.particle_api_url,
            lambda: secret(param),  # cached by Powertools Parameters; read at the first call
            settings.particle_product,
            settings.particle_ledger,
            settings.particle_ledger_scope,
            settings.particle_org or None,
        )

    # ---- devices ------------------------------------------------------------------------------

    def iter_device_pages(self, per_page: int = 100) -> Iterator[DevicePage]:
        """Every page of the product's devices (the reference script read only the first)."""
        page = 1
        path = f"/v1/products/{quote(self.product, safe='')}/devices"
        while True:
            body = self._request("GET", path, params={"page": page, "per_page": per_page})
            devices = [Device.from_api(d) for d in body.get("devices", [])]
            meta = body.get("meta") or {}
            total = int(meta.get("total_pages", meta.get("total_page", page)) or page)
            yield DevicePage(devices, page, total)
            if not devices or page >= total:
                return
            page += 1

    # ---- Ledger -------------------------------------------------------------------------------

    def _instance_path(self, device_id: str) -> str:
        if not DEVICE_ID_RE.match(device_id):
            raise ParticleBadRequest("device id must be 24 lowercase hex characters")
        return f"{self.ledger_prefix}/ledgers/{quote(self.ledger, safe='')}/instances/{device_id}"

    def set_ledger_token(self, device_id: str, token: str) -> None:
        """Write the token into the device's Ledger instance, leaving its other keys as they are."""
        self._request(
            "PUT",
            self._instance_path(device_id),
            params={"set_mode": "Merge"},
            json={"instance": {"data": {LEDGER_TOKEN_KEY: token}}},
        )

    def get_ledger_instance(self, device_id: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", self._instance_path(device_id)).get("instance")
        except ParticleNotFound:
            return None

    def delete_ledger_instance(self, device_id: str) -> bool:
        """Remove the device's instance (an RMA'd device loses its token); False if there was none."""
        try:
            self._request("DELETE", self._instance_path(device_id))
        except ParticleNotFound:
            return False
        return True

    def list_ledger_instances(self, per_page: int = 100) -> Iterator[dict[str, Any]]:
        path = f"{self.ledger_prefix}/ledgers/{quote(self.ledger, safe='')}/instances"
        page = 1
        while True:
            body = self._request("GET", path, params={"page": page, "per_page": per_page})
            instances = body.get("instances", [])
            yield from instances
            meta = body.get("meta") or {}
            total = int(meta.get("total_pages", meta.get("total_page", page)) or page)
            if not instances or page >= total:
                return
            page += 1

    # ---- transport ----------------------------------------------------------------------------

    def _access_token(self) -> str:
        return self._token() if callable(self._token) else self._token

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._access_token()}", "Accept": "application/json"}
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.requests_sent += 1
            wait: float | None = None
            try:
                response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                failure: ParticleError = ParticleUnavailable(f"{method} {_route(path)}: {type(exc).__name__}")
            else:
                if response.status_code < 400:
                    return response.json() if response.content else {}
                failure = _error_for(method, path, response)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise failure
                wait = _retry_after(response)
            if attempt == self.max_retries:
                raise failure
            backoff = min(self.backoff_cap, self.backoff_base * 2**attempt) * self.rng.random()
            self.sleep(min(self.backoff_cap, wait) if wait is not None else backoff)
        raise AssertionError("unreachable")


def _route(path: str) -> str:
    """The path with device ids elided, for messages and logs."""
    return DEVICE_ID_RE.sub("…", "/".join("{id}" if DEVICE_ID_RE.match(p) else p for p in path.split("/")))


def _error_for(method: str, path: str, response: requests.Response) -> ParticleError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("error_description") or body.get("error") or "")[:MAX_MESSAGE_CHARS]
    cls = _ERRORS_BY_STATUS.get(
        status, ParticleUnavailable if status in RETRYABLE_STATUSES else ParticleError
    )
    return cls(f"{method} {_route(path)} answered {status}{': ' + detail if detail else ''}", status)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
