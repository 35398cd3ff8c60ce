"""The operator API over HTTP: SigV4-signed requests (IAM auth) through one ``requests.Session``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from tokenflow.particle import DEVICE_ID_RE
from tokenflow.tokens import is_auth_token, is_qr_token, is_token_id, token_id

__all__ = ["DEVICE_ID_RE", "ApiClient", "ApiError", "CliError", "segment", "token_ref_for_url"]
TIMEOUT = 30.0


class CliError(Exception):
    """A failure the user can act on; main prints it as one line."""


class ApiError(CliError):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


def token_ref_for_url(ref: str) -> str:
    """What goes in a /tokens/{ref} URL: an AuthToken is replaced by its SHA-256.

    URLs end up in access logs and shell history; the hash names the same token without the secret.
    """
    if is_token_id(ref) or is_qr_token(ref):
        return ref
    if is_auth_token(ref):
        return token_id(ref)
    raise CliError("expected an AuthToken (32 characters), a QR token (sqr_...) or a token id (64 hex)")


def sign_headers(
    method: str,
    url: str,
    body: bytes | None,
    credentials: Credentials | ReadOnlyCredentials,
    region: str,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """The request's headers plus the SigV4 ones for API Gateway (service ``execute-api``)."""
    request = AWSRequest(method=method, url=url, data=body or b"", headers=dict(headers or {}))
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())


def _error_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return text[0][:200] if text else response.reason or "request failed"
    if not isinstance(data, dict):
        return str(data)[:200]
    if data.get("message"):
        return str(data["message"])
    detail = data.get("detail")
    if isinstance(detail, list) and detail:
        # Validation errors (422): name the first bad field, which is what the user has to fix.
        first = detail[0] if isinstance(detail[0], dict) else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p not in ("path", "query", "body"))
        what = first.get("msg") or first.get("type") or "invalid"
        return f"invalid {where or 'request'}: {what}"
    return json.dumps(data)[:200]


class ApiClient:
    """Calls the API at ``base_url``; signs every request unless ``credentials`` is None (local gateway)."""

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        region: str | None = None,
        session: requests.Session | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.region = region
        self.session = session or requests.Session()
        self.timeout = timeout

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> requests.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.credentials is not None:
            # Frozen per request: refreshed (SSO, assumed role) credentials stay valid on long runs.
            frozen = self.credentials.get_frozen_credentials()
            headers = sign_headers(method, url, data, frozen, self.region or "us-east-1", headers)
        try:
            response = self.session.request(method, url, data=data, headers=headers, timeout=self.timeout)
        except requests.ConnectionError:
            raise CliError(f"cannot reach the API at {self.base_url}") from None
        except requests.Timeout:
            raise CliError(f"the API at {self.base_url} did not answer in {self.timeout:.0f} s") from None
        except requests.RequestException as exc:
            raise CliError(f"request to {self.base_url} failed: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _error_message(response))
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None) -> Any:
        return self._json(self.request("POST", path, body=body))

    def get_bytes(self, path: str) -> bytes:
        return self.request("GET", path).content

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise CliError(f"the API answered {response.url} with something that is not JSON") from None


def segment(value: str) -> str:
    """One URL path segment, quoted (ids are plain, but a typo must not change the route)."""
    return quote(value, safe="")
