"""The Particle Cloud API, as far as Tokenflow uses it: product devices and device Ledger instances.

One ``requests.Session`` per client (connection reuse, a pool sized for worker threads), timeouts on
every call, retries with exponential backoff and full jitter on 429, 408, 5xx, timeouts and
connection errors (``Retry-After`` honoured when present), and none on 400/401/403/404: those answers
will not change by asking again. Errors are typed, and their messages never carry the access token
or a Blynk token (only Particle's own ``error``/``error_description``, truncated).

Threads sharing a client also share its pacing: a 429's ``Retry-After`` pauses every one of them
(one answer, not one 429 per thread), and an optional ``rate_limit`` keeps the client under a known
request budget by itself (Particle allows 10,000 requests per 5 minutes per public IP).
The module is over the usual size because the pacing, the retries and the deadline share one
request loop: split, each part would have to know the others' state.

The Ledger API path prefix is a setting (REFERENCE.md): ``/v1`` for a sandbox-owned product,
``/v1/orgs/{org}`` for an org-owned one; the only forms Particle's SDK builds (particle-api-js
``_namespacedPath``).

What a device's Ledger instance holds (the contract with the firmware, firmware/src):

    {"blynk_token": "<AuthToken>", "state": "active"}       the device's token
    {"blynk_token": "", "state": "revoked"|"transferred"}   the explicit cleared state: no token

A Cloud-to-Device Ledger lives in the device's flash and changes reach it by sync; Particle documents
no way for a deleted instance to reach the device's copy (REFERENCE.md, "Facts checked"). So a revoke
or a move overwrites the instance with the cleared state (``clear_ledger_token``) instead of deleting
it: that write syncs like any other and the firmware stops using the token.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tokenflow.settings import Settings, secret
from tokenflow.tokens import AUTH_TOKEN_RE

if TYPE_CHECKING:
    # requests is imported by the code that sends (60 to 75 ms of a cold start, bench/README.md):
    # the api and webhook import this module for its types and errors and may never call Particle.
    import requests

DEVICE_ID_RE = re.compile(r"[0-9a-f]{24}")  # use fullmatch: "$" would let a trailing newline in
LEDGER_TOKEN_KEY = "blynk_token"  # noqa: S105 (the Ledger key's name)
LEDGER_STATE_KEY = "state"
LEDGER_ACTIVE = "active"
LEDGER_REVOKED = "revoked"
LEDGER_TRANSFERRED = "transferred"
CLEARED_STATES = frozenset({LEDGER_REVOKED, LEDGER_TRANSFERRED})  # why a device holds no token
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


class ParticleBusy(ParticleUnavailable):
    """The wait before the next attempt (a backoff, a ``Retry-After``, the shared pause or the rate
    limit's turn) would outlive the caller's deadline (``ParticleClient.deadline``): nothing was
    slept; ``retry_after`` is the wait in seconds, for the caller to come back after it."""

    def __init__(self, message: str, status: int | None = None, *, retry_after: float) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


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
    groups: tuple[str, ...] = ()

    def record_fields(self) -> dict[str, Any]:
        """What an assign request carries of the device for its first record (name, serial, platform)."""
        fields = {"name": self.name, "serial_number": self.serial_number, "platform_id": self.platform_id}
        return {k: v for k, v in fields.items() if v is not None}

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Device:
        groups = data.get("groups")
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
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        )


@dataclass(frozen=True)
class DevicePage:
    devices: list[Device]
    page: int
    total_pages: int


class ParticleClient:
    """Product devices and device Ledger instances; safe to share between worker threads."""

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
        retry_after_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        pool_size: int = 16,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        if scope not in ("sandbox", "org"):
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
        }[scope]
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self.sleep = sleep
        self.rng = rng or random.Random()
        import requests
        from requests.adapters import HTTPAdapter

        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._lock = threading.Lock()
        self.requests_sent = 0
        # Pacing shared by every thread using this client: ``rate_limit`` = (requests, seconds) it
        # keeps to by itself (a sliding window, as the cloud counts), and a pause that a 429's
        # Retry-After imposes on all threads at once, so they do not each run into the limit.
        self.rate_limit = rate_limit
        self._sent_at: deque[list[float]] = deque(maxlen=rate_limit[0] if rate_limit else 1)
        self._paused_until = 0.0
        # When the cloud's last Retry-After ends, uncapped: a caller with a deadline before it gives
        # up at once (ParticleBusy) rather than sleep the capped pause only to meet another 429.
        self._busy_until = 0.0
        # Per thread: each worker thread serves its own invocation, with its own time left.
        self._budget = threading.local()

    @contextmanager
    def deadline(self, at: float | None) -> Iterator[None]:
        """Within this block (this thread only), never wait past ``at`` (``time.monotonic()``
        seconds): a retry whose wait would end later raises ``ParticleBusy`` instead of sleeping.
        None: no deadline. A Lambda invocation that overruns its Timeout is stopped and its batch
        lost, so the caller passes its remaining time less a margin for one request."""
        previous = getattr(self._budget, "at", None)
        self._budget.at = at
        try:
            yield
        finally:
            self._budget.at = previous

    def _check_wait(self, wait: float, what: str, status: int | None = None) -> None:
        """Raise ParticleBusy when waiting ``wait`` seconds from now would pass this thread's deadline."""
        at: float | None = getattr(self._budget, "at", None)
        if at is not None and time.monotonic() + wait > at:
            raise ParticleBusy(f"{what}: retry later, after {wait:.0f} s", status, retry_after=wait)

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
            # Its share of Particle's limit (Settings.particle_request_budget); when a wait for the
            # next turn would pass the caller's deadline, _pace raises ParticleBusy instead.
            rate_limit=settings.particle_request_budget,
        )

    # ---- devices ------------------------------------------------------------------------------

    def iter_device_pages(self, per_page: int = 100, start: int = 1) -> Iterator[DevicePage]:
        """Every page of the product's devices from page ``start`` (the reference script read only
        the first; the sweep resumes a pass at its cursor)."""
        page = max(1, start)
        path = f"/v1/products/{quote(self.product, safe='')}/devices"
        while True:
            body = self._request("GET", path, params={"page": page, "per_page": per_page})
            devices = [Device.from_api(d) for d in body.get("devices") or []]
            total = _total_pages(body)
            yield DevicePage(devices, page, total if total is not None else page)
            if not devices or (total is not None and page >= total):
                return
            page += 1

    def get_product_device(self, device_id: str) -> Device | None:
        """The product's device with this id; None when the product has no such device (404).

        ``GET /v1/products/{product}/devices/{id}`` is Particle's "Get product device information"
        (the official JS SDK's ``getDevice({deviceId, product})`` calls it). Its answer is the device
        object itself at the top level, with the fields of "Get device information" (``id``, ``name``,
        ``online``, ``platform_id``, ``product_id``, ...; the SDK's ``DeviceInfo`` type in
        particle-api-js src/types/responses.ts adds ``quarantined``, ``denied``, ``groups``). An id the
        product does not hold answers 404 (answers captured from api.particle.io for product device paths
        read ``{"ok": false, "error": "Device not found."}``); an unknown product answers 404 too, so
        a wrong product setting looks like "no such device"."""
        _check_device_id(device_id)
        path = f"/v1/products/{quote(self.product, safe='')}/devices/{device_id}"
        try:
            body = self._request("GET", path)
        except ParticleNotFound:
            return None
        if not isinstance(body.get("id"), str):
            raise ParticleError(f"GET {_route(path)} answered without a device id", 200)
        return Device.from_api(body)

    def device_id_for_serial(self, serial_number: str) -> str | None:
        """The device id printed under this serial number; None when Particle knows no such serial.

        ``GET /v1/serial_numbers/{serial_number}`` is Particle's "Look up device identification
        from a serial number" (Cloud API reference; particle-api-js ``lookupSerialNumber``). It
        answers the device id and, for cellular devices, the SIM's ICCID: published examples read
        ``device_id`` (a jq script over the answer) or ``deviceID`` (an API summary), so both are
        accepted. It is rate limited for security, 50 requests an hour (Particle's "Serial number
        management" note and the Swift client's documentation of the call): an operator's search,
        never a sweep. It also finds devices not (yet) in the product.
        """
        path = f"/v1/serial_numbers/{quote(serial_number, safe='')}"
        try:
            body = self._request("GET", path)
        except ParticleNotFound:
            return None
        device_id = body.get("device_id") or body.get("deviceID")
        if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
            return None
        return device_id

    def token_expires_at(self) -> str | None:
        """When the access token expires (ISO 8601), or None when it does not.

        ``GET /v1/access_tokens/current`` is what Particle's CLI calls to validate a token; its answer
        carries ``expires_at`` (particle-api-js ``CurrentTokenInfo``: ``expires_at``, ``client_id``,
        ``scopes``, ``orgs``). A product API user's token never expires (null); a
        ``particle token create`` token does after 90 days (docs: access tokens)."""
        body = self._request("GET", "/v1/access_tokens/current")
        expires = body.get("expires_at")
        return expires if isinstance(expires, str) and expires else None

    # ---- Ledger -------------------------------------------------------------------------------

    def _instance_path(self, device_id: str) -> str:
        _check_device_id(device_id)
        return f"{self.ledger_prefix}/ledgers/{quote(self.ledger, safe='')}/instances/{device_id}"

    def set_ledger_token(self, device_id: str, token: str) -> None:
        """Write the token into the device's Ledger instance (state ``active``), leaving its other
        keys as they are."""
        self._put_ledger_data(device_id, {LEDGER_TOKEN_KEY: token, LEDGER_STATE_KEY: LEDGER_ACTIVE})

    def clear_ledger_token(self, device_id: str, reason: str) -> None:
        """Write the explicit cleared state ``{"blynk_token": "", "state": reason}`` into the device's
        Ledger instance; ``reason`` is ``revoked`` or ``transferred``.

        This is how a revoke or a move reaches the device: the write syncs to the device's flash copy
        like any change, where a deleted instance would leave the old token on the device."""
        if reason not in CLEARED_STATES:
            raise ValueError(f"reason must be one of {sorted(CLEARED_STATES)}")
        self._put_ledger_data(device_id, {LEDGER_TOKEN_KEY: "", LEDGER_STATE_KEY: reason})

    def _put_ledger_data(self, device_id: str, data: dict[str, str]) -> None:
        # Merge: keys other than ours (another tool's, or a newer firmware's) are left as they are.
        self._request(
            "PUT",
            self._instance_path(device_id),
            params={"set_mode": "Merge"},
            json={"instance": {"data": data}},
        )

    def get_ledger_instance(self, device_id: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", self._instance_path(device_id)).get("instance")
        except ParticleNotFound:
            return None

    def delete_ledger_instance(self, device_id: str) -> bool:
        """Remove the device's instance in the cloud; False if there was none.

        The device keeps its last synced copy (and so its token): to take a token away from a
        device, use ``clear_ledger_token``."""
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
            instances = body.get("instances") or []
            yield from instances
            total = _total_pages(body)
            if not instances or (total is not None and page >= total):
                return
            page += 1

    # ---- transport ----------------------------------------------------------------------------

    def _access_token(self) -> str:
        return self._token() if callable(self._token) else self._token

    def _pace(self) -> None:
        """Wait for this request's turn: after any pause a 429 imposed, and inside ``rate_limit``.

        Each request books its send time under the lock and then sleeps outside it, so threads
        queue up in order without holding the lock while they wait."""
        slot = [0.0]
        with self._lock:
            now = time.monotonic()
            at = max(now, self._paused_until)
            if self.rate_limit:
                limit, window = self.rate_limit
                if len(self._sent_at) == limit:
                    # A little margin: the cloud sees each request a little after it was sent.
                    at = max(at, self._sent_at[0][0] + window * 1.01 + 0.05)
            # Before booking a turn: a request that will not be sent must not hold one.
            self._check_wait(max(at, self._busy_until) - now, "Particle asked to wait")
            if self.rate_limit:
                slot[0] = at
                self._sent_at.append(slot)
        if at > now:
            self.sleep(at - now)
        # The window counts when requests leave, not when they were booked: a thread that woke late
        # (a busy process) moves its own entry, so the requests after it keep their distance.
        slot[0] = max(slot[0], time.monotonic())

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import requests

        access_token = self._access_token()
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            self._pace()
            with self._lock:
                self.requests_sent += 1
            wait: float | None = None
            try:
                response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                # The exception text can carry the URL; only its kind goes into the message.
                failure: ParticleError = ParticleUnavailable(f"{method} {_route(path)}: {type(exc).__name__}")
            else:
                if response.status_code < 400:
                    return _json_body(method, path, response)
                failure = _error_for(method, path, response, access_token)
                _count_answer(response.status_code)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise failure
                wait = _retry_after(response)
                if wait is not None:  # the cloud said when; earlier only earns more 429s, for every thread
                    with self._lock:
                        now = time.monotonic()
                        self._paused_until = max(self._paused_until, now + min(self.retry_after_cap, wait))
                        self._busy_until = max(self._busy_until, now + wait)
                    # Uncapped here: retrying before the cloud's own time only earns another 429.
                    self._check_wait(
                        wait, f"{method} {_route(path)} answered {response.status_code}", failure.status
                    )
            if attempt == self.max_retries:
                raise failure
            if wait is None:  # exponential backoff with full jitter: parallel workers spread out
                backoff = min(self.backoff_cap, self.backoff_base * 2**attempt) * self.rng.random()
                self._check_wait(backoff, str(failure), failure.status)
                self.sleep(backoff)
            # else the next _pace() waits for the pause
        raise AssertionError("unreachable")


def _count_answer(status: int) -> None:
    """Every 429 and 5xx Particle answers, retried or not, as a metric of the calling function (the
    dashboard's Particle widget): how often the cloud pushes back, which the retries otherwise hide."""
    name = "ParticleRateLimited" if status == 429 else "ParticleServerErrors" if status >= 500 else None
    if name is None:
        return
    # Imported here: the CLI imports this module for its constants and never sends (no Powertools).
    from tokenflow.observability import metrics

    metrics.add_metric(name=name, unit="Count", value=1)


def _check_device_id(device_id: object) -> None:
    """Before any request: an id that is not 24 lowercase hex characters could change the path."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise ParticleBadRequest("device id must be 24 lowercase hex characters")


def _total_pages(body: dict[str, Any]) -> int | None:
    """The page count from ``meta`` (``total_pages``, or ``total_page`` as some answers spell it);
    None when absent: then the listing ends at the first empty page."""
    meta = body.get("meta")
    if not isinstance(meta, dict):
        return None
    value = meta.get("total_pages", meta.get("total_page"))
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _route(path: str) -> str:
    """The path with device ids elided, for messages and logs."""
    return "/".join("{id}" if DEVICE_ID_RE.fullmatch(part) else part for part in path.split("/"))


def _json_body(method: str, path: str, response: requests.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        raise ParticleUnavailable(
            f"{method} {_route(path)} answered {response.status_code} without JSON", response.status_code
        ) from None
    return body if isinstance(body, dict) else {"data": body}


def _error_for(method: str, path: str, response: requests.Response, access_token: str) -> ParticleError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = ""
    if isinstance(body, dict):
        # Only Particle's own fields: a body may echo the request (and so the Blynk token) back.
        parts = [str(body.get(k)) for k in ("error", "error_description") if body.get(k)]
        detail = _scrub(": ".join(parts), access_token)[:MAX_MESSAGE_CHARS]
    cls = _ERRORS_BY_STATUS.get(
        status, ParticleUnavailable if status in RETRYABLE_STATUSES else ParticleError
    )
    return cls(f"{method} {_route(path)} answered {status}{': ' + detail if detail else ''}", status)


def _scrub(text: str, access_token: str) -> str:
    """Hide anything shaped like a secret: the access token and any AuthToken-shaped run."""
    if access_token:
        text = text.replace(access_token, "…")
    return AUTH_TOKEN_RE.sub("…", text)


def _retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds, or as an HTTP date; None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
