"""What keeps the console's local server from being driven by any other web page.

The console can transfer and revoke tokens with the operator's own AWS credentials, so a page
elsewhere in the same browser must not be able to make it act:

- DNS rebinding: a hostile name that resolves to 127.0.0.1 reaches the port but carries its own
  name in ``Host``; only ``127.0.0.1:<port>`` and ``localhost:<port>`` are served.
- Cross-site requests (CSRF): every POST carries the per-process token in its form and in a
  ``SameSite=Strict`` cookie (a cross-site form post sends neither the token nor the cookie), and
  an ``Origin`` header, when the browser sends one, must be the console's own.
- Framing and scripts: no page may be framed, and pages load nothing but the console's own files.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

LOOPBACK_NAMES = ("127.0.0.1", "localhost")
CSRF_FIELD = "csrf"
COOKIE_NAME = "tokenflow_console"

# No script at all (the pages are plain HTML forms), only the console's own styles and images.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on form posts.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def new_secret() -> str:
    """The per-process token forms carry (256 random bits)."""
    return secrets.token_urlsafe(32)


def host_allowed(host: str | None, port: int | None) -> bool:
    """Whether a request's ``Host`` header names this console: a loopback name and, once the
    server is bound, its port (``port`` None: any port, before binding)."""
    if not host:
        return False
    name, _, given_port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if name.lower() not in LOOPBACK_NAMES:
        return False
    if port is None:
        return True
    return given_port == str(port)


def origin_allowed(origin: str | None, host: str) -> bool:
    """A browser's ``Origin`` (sent with POSTs) must be the console itself; absent is allowed (the
    token and the cookie still have to match)."""
    if origin is None:
        return True
    return origin in (f"http://{host}",)


def token_matches(expected: str, *given: str | None) -> bool:
    """Every one of ``given`` equals the process token (compared in constant time)."""
    return all(g is not None and hmac.compare_digest(expected.encode(), g.encode()) for g in given)
