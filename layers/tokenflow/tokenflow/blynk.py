"""The Blynk device HTTPS API, as far as Tokenflow uses it: a datastream's last value, per token.

``GET https://{region}.blynk.cloud/external/api/get?token=T&V6`` (REFERENCE.md, "Blynk static
tokens"; Blynk docs, "Device HTTPS API / Get Datastream Value":
https://docs.blynk.io/en/blynk.cloud/device-https-api/get-multiple-datastream-values). The answers:

- 200 with the value: the datastream has one (evidence that the device's data reaches Blynk: a
  device that only sends through the HTTP API never shows as online, REFERENCE.md);
- 400 ``{"error":{"message":"Invalid token."}}``: the token is unknown to that server, e.g. deleted
  in Blynk (Blynk docs, same page);
- 308 with ``Location``: the token belongs to another region; the redirect is followed once and
  the region it names is reported;
- what Blynk answers for a datastream that never had a value is not documented (unconfirmed): a
  200 with an empty body, or a 400 with any message but "Invalid token." and "Wrong pin format.",
  is read as "no data yet".

The AuthToken travels in the query string (the only way this API takes it), so the URL is a secret:
no URL is ever logged, put into an exception or kept. Exceptions of ``requests`` name the URL
(``... Max retries exceeded with url: /external/api/get?token=...``), so they are caught here and
replaced by a message made of the region and the exception's type, raised ``from None`` so no
traceback carries the original. urllib3 logs every request line with its query at DEBUG: its
logger is pinned at WARNING here (and in ``tokenflow.observability``, for every function), whatever
level the Lambda runtime gives the root logger. X-Ray's requests patch records the URL without its
query (aws_xray_sdk.ext.util.strip_url).

One ``requests.Session`` per client, timeouts on every call, retries with exponential backoff and
full jitter on 429, 5xx, timeouts and connection errors; none on 400 (asking again will not change
it). An optional ``rate`` bounds the client's own requests per second: Blynk allows 50 requests/s
per device (REFERENCE.md), and a verification pass reading many devices stays far below that and
below what one caller should send.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tokenflow.tokens import redact

if TYPE_CHECKING:
    import requests

REGIONS = ("fra1", "lon1", "ny3", "sgp1", "blr1")
DEFAULT_REGION = "ny3"
DEFAULT_DATASTREAM = "V6"
# Where a region's API lives; ``{region}`` is filled in. The local stack and the tests point it at the
# Blynk simulator (local/tokenflow_local/blynk_sim.py), which takes the region as the first path part.
DEFAULT_URL_TEMPLATE = "https://{region}.blynk.cloud"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
INVALID_TOKEN_MESSAGE = "Invalid token."  # noqa: S105 (Blynk's error message)
WRONG_PIN_MESSAGE = "Wrong pin format."
MAX_MESSAGE_CHARS = 120

# Outcomes of a read, as the device item records them (``blynk_check``).
OK = "ok"
NO_DATA = "no-data"
INVALID_TOKEN = "invalid-token"  # noqa: S105 (an outcome's name)
WRONG_REGION = "wrong-region"


def quiet_http_logs() -> None:
    """Keep urllib3's and botocore's DEBUG lines off: urllib3's request line holds the query string,
    so the AuthToken, and botocore logs response bodies (a token item's). Called at import and by
    every client made (a test or a runtime may have turned them on)."""
    for name in ("urllib3", "botocore", "boto3"):
        logging.getLogger(name).setLevel(logging.WARNING)


quiet_http_logs()


class BlynkError(Exception):
    """Blynk could not be asked, or answered something unusable. The message never holds a URL or
    a token: only the region, a status and Blynk's own (redacted, truncated) message."""


class BlynkUnavailable(BlynkError):
    """429, 5xx, a timeout or a connection error, after the retries: try again later."""


class BlynkBadRequest(BlynkError):
    """The request is wrong whatever the token (e.g. "Wrong pin format.": the datastream setting)."""


@dataclass(frozen=True)
class BlynkRead:
    """What one read found. ``outcome`` is ok, no-data or invalid-token; ``region`` is the region that
    answered; ``redirected_from`` is the configured region when that one answered 308."""

    outcome: str
    region: str
    value: str | None = None
    redirected_from: str | None = None

    @property
    def check(self) -> str:
        """The result as recorded on the device: the region mismatch first (it is the cause to fix),
        else the outcome."""
        if self.redirected_from is not None:
            return f"{WRONG_REGION}:{self.region}"
        return self.outcome

    @property
    def has_data(self) -> bool:
        return self.outcome == OK


@dataclass(frozen=True)
class BlynkSettings:
    """The Blynk part of the configuration (environment variables set by template.yaml)."""

    region: str = DEFAULT_REGION
    datastream: str = DEFAULT_DATASTREAM
    url_template: str = DEFAULT_URL_TEMPLATE

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BlynkSettings:
        env = dict(os.environ if env is None else env)
        region = env.get("BLYNK_REGION", DEFAULT_REGION) or DEFAULT_REGION
        if region not in REGIONS:
            raise BlynkBadRequest(f"BLYNK_REGION must be one of {', '.join(REGIONS)}, not {region!r}")
        datastream = env.get("BLYNK_DATASTREAM", DEFAULT_DATASTREAM) or DEFAULT_DATASTREAM
        template = env.get("BLYNK_URL_TEMPLATE", DEFAULT_URL_TEMPLATE) or DEFAULT_URL_TEMPLATE
        return cls(region=region, datastream=datastream, url_template=template.rstrip("/"))


def region_of_url(url: str) -> str | None:
    """The Blynk region a URL names: ``https://fra1.blynk.cloud/...`` (its host's first label) or a
    simulator's ``http://127.0.0.1:PORT/fra1/...`` (its first path segment); None if neither."""
    parts = urlsplit(url)
    label = (parts.hostname or "").split(".", 1)[0]
    if label in REGIONS:
        return label
    segment = parts.path.lstrip("/").split("/", 1)[0]
    return segment if segment in REGIONS else None


class BlynkClient:
    """Reads datastream values by token; safe to share between threads (one session, one pacing)."""

    def __init__(
        self,
        region: str = DEFAULT_REGION,
        *,
        url_template: str = DEFAULT_URL_TEMPLATE,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        rate: float | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if region not in REGIONS:
            raise BlynkBadRequest(f"unknown Blynk region {region!r} (one of {', '.join(REGIONS)})")
        quiet_http_logs()
        if session is None:
            import requests

            session = requests.Session()
        self.region = region
        self.url_template = url_template.rstrip("/")
        self.session = session
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.min_interval = 1.0 / rate if rate else 0.0
        self.sleep = sleep
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self._pace_lock = threading.Lock()
        self._next_slot = 0.0

    @classmethod
    def from_settings(cls, settings: BlynkSettings, **options: Any) -> BlynkClient:
        return cls(settings.region, url_template=settings.url_template, **options)

    def base_url(self, region: str) -> str:
        return self.url_template.format(region=region)

    def get(self, token: str, datastream: str = DEFAULT_DATASTREAM) -> BlynkRead:
        """The last value of ``datastream`` for the device holding ``token``, in the configured region;
        a 308 is followed once (to a Blynk region only) and the region it names is reported."""
        # The pin is a bare query key (``&V6``), as Blynk's examples write it.
        query = f"token={token}&{datastream}"
        response = self._send(self.base_url(self.region) + "/external/api/get", query, self.region)
        if response.status_code in (301, 302, 307, 308):
            target = response.headers.get("Location", "")
            right = region_of_url(target)
            if right is None or right == self.region:
                raise BlynkError(f"Blynk {self.region} redirected to a place that is no other Blynk region")
            # Followed once, to the same path of the named region's API (never to the Location as
            # given: only Blynk's own hosts get the token).
            again = self._send(self.base_url(right) + "/external/api/get", query, right)
            if again.status_code in (301, 302, 307, 308):
                raise BlynkError(f"Blynk {right} redirected again; not followed")
            return self._read(again, right, datastream, redirected_from=self.region)
        return self._read(response, self.region, datastream, redirected_from=None)

    # ---- internals ---------------------------------------------------------------------------

    def _read(
        self, response: requests.Response, region: str, datastream: str, *, redirected_from: str | None
    ) -> BlynkRead:
        status = response.status_code
        if status == 200:
            value = _value(response.text, datastream)
            outcome = OK if value not in (None, "") else NO_DATA
            return BlynkRead(outcome, region, value if outcome == OK else None, redirected_from)
        if status == 400:
            message = _error_message(response)
            if message == INVALID_TOKEN_MESSAGE:
                return BlynkRead(INVALID_TOKEN, region, None, redirected_from)
            if message == WRONG_PIN_MESSAGE:
                raise BlynkBadRequest(f"Blynk {region}: {message} (check the datastream setting)")
            return BlynkRead(NO_DATA, region, None, redirected_from)
        raise BlynkError(f"Blynk {region} answered HTTP {status}: {_error_message(response)}")

    def _pace(self) -> None:
        if not self.min_interval:
            return
        with self._pace_lock:
            now = self.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + self.min_interval
        if start > now:
            self.sleep(start - now)

    def _send(self, url: str, query: str, region: str) -> requests.Response:
        import requests

        attempt = 0
        while True:
            self._pace()
            failure: str
            try:
                response = self.session.get(f"{url}?{query}", timeout=self.timeout, allow_redirects=False)
            except requests.Timeout:
                failure = "timed out"
            except requests.RequestException as exc:
                failure = f"could not be reached ({type(exc).__name__})"
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return response
                failure = f"answered HTTP {response.status_code}"
                response.close()
            if attempt >= self.max_retries:
                # No ``from exc``: requests' exceptions carry the URL, so the token.
                raise BlynkUnavailable(f"Blynk {region} {failure} after {attempt + 1} attempt(s)") from None
            delay = min(self.backoff_cap, self.backoff_base * 2**attempt)
            self.sleep(self.rng.uniform(0, delay))
            attempt += 1

    def close(self) -> None:
        self.session.close()


def _value(text: str, datastream: str) -> str | None:
    """The value in a ``get`` answer: plain text for one pin, a JSON string or number, or an object
    keyed by pin (the multi-pin form), whichever Blynk sends."""
    body = text.strip()
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict):
        wanted = {k.lower(): v for k, v in data.items()}.get(datastream.lower())
        return None if wanted is None else str(wanted)
    if isinstance(data, list):
        return str(data[0]) if data else None
    return None if data is None else str(data)


def _error_message(response: requests.Response) -> str:
    """Blynk's ``{"error":{"message":...}}``, redacted and truncated (it is echoed in errors)."""
    try:
        data = response.json()
        message = data["error"]["message"] if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        message = None
    text = str(message) if message is not None else response.text[:MAX_MESSAGE_CHARS]
    return redact(text.strip())[:MAX_MESSAGE_CHARS]
