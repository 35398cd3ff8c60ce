"""The console's guards: the Host check (DNS rebinding), the form token and SameSite cookie (CSRF),
the security headers, and binding to loopback only. Through Flask's test client on the real app;
the API it would call is unreachable, so a request the guards let through fails later with 502,
never with the guards' 403."""

from __future__ import annotations

import re

import pytest

from tokenflow_cli.client import ApiClient, CliError
from tokenflow_cli.console import guard
from tokenflow_cli.console.server import ConsoleServer, make_app

PORT = 8765
DEVICE = "e00fce68" + "0" * 15 + "1"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def app():
    # Port 9 on loopback (discard): nothing answers, so an API call fails at once.
    return make_app(ApiClient("http://127.0.0.1:9", timeout=2), port=PORT)


def client_for(app, host: str = f"127.0.0.1:{PORT}"):
    return app.test_client(), {"base_url": f"http://{host}"}


@pytest.mark.parametrize("host", [f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"LOCALHOST:{PORT}"])
def test_the_console_answers_at_its_own_loopback_address(app, host):
    client, where = client_for(app, host)
    answer = client.get("/labels", **where)  # a page that calls no API
    assert answer.status_code == 200
    assert b"Download PDF" in answer.data


@pytest.mark.parametrize(
    "host",
    [
        f"evil.example:{PORT}",  # DNS rebinding: a hostile name resolving to 127.0.0.1
        "evil.example",
        f"127.0.0.1.evil.example:{PORT}",
        "127.0.0.1:8766",  # another port
        f"0.0.0.0:{PORT}",
        f"[::1]:{PORT}",
    ],
)
def test_any_other_host_header_is_refused_before_anything_runs(app, host):
    client, where = client_for(app, host)
    answer = client.get("/labels", **where)
    assert answer.status_code == 403
    assert b"only at 127.0.0.1 or localhost" in answer.data


def test_host_check_without_a_bound_port_still_wants_a_loopback_name():
    assert guard.host_allowed("localhost:1234", None)
    assert not guard.host_allowed("attacker.test:1234", None)
    assert not guard.host_allowed(None, None)


def form_token(client, where) -> str:
    match = CSRF_RE.search(client.get("/labels", **where).get_data(as_text=True))
    assert match
    return match.group(1)


def test_a_post_with_the_pages_token_and_cookie_passes_the_guard(app):
    client, where = client_for(app)
    token = form_token(client, where)
    answer = client.post(f"/devices/{DEVICE}/reveal", data={"csrf": token}, **where)
    assert answer.status_code == 502  # past the guard: the (unreachable) API was called
    assert b"cannot reach the API" in answer.data


@pytest.mark.parametrize("case", ["no token", "wrong token", "no cookie", "foreign origin"])
def test_a_cross_site_post_is_refused(app, case):
    client, where = client_for(app)
    token = form_token(client, where)
    data = {"csrf": token}
    headers = {}
    if case == "no token":
        data = {}
    elif case == "wrong token":
        data = {"csrf": token[:-1] + ("A" if token[-1] != "A" else "B")}
    elif case == "no cookie":
        client = app.test_client()  # a browser that did not send the SameSite cookie
    else:
        headers = {"Origin": "https://evil.example"}
    for path in (
        f"/devices/{DEVICE}/reveal",
        f"/devices/{DEVICE}/revoke",
        f"/devices/{DEVICE}/transfer",
        "/search",
    ):
        answer = client.post(path, data={**data, "to": DEVICE, "q": DEVICE}, headers=headers, **where)
        assert answer.status_code == 403, (case, path)
        assert b"did not come from this console" in answer.data


def test_the_form_token_is_per_process(app):
    other = make_app(ApiClient("http://127.0.0.1:9", timeout=2), port=PORT)
    client, where = client_for(app)
    stolen = form_token(*client_for(other))
    answer = client.post(f"/devices/{DEVICE}/reveal", data={"csrf": stolen}, **where)
    assert answer.status_code == 403


def test_the_session_cookie_is_samesite_strict_and_http_only(app):
    client, where = client_for(app)
    cookie = client.get("/labels", **where).headers["Set-Cookie"]
    assert f"{guard.COOKIE_NAME}=" in cookie
    assert "SameSite=Strict" in cookie and "HttpOnly" in cookie


def test_pages_forbid_scripts_framing_and_caching(app):
    client, where = client_for(app)
    answer = client.get("/labels", **where)
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy  # no script source at all
    assert "frame-ancestors 'none'" in policy and answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert b"<script" not in answer.data


def test_the_server_binds_loopback_only(app):
    with pytest.raises(CliError, match=r"127\.0\.0\.1 only"):
        ConsoleServer(app, host="0.0.0.0")  # noqa: S104 (the refusal is the point)
    with ConsoleServer(app, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:") and app.config["CONSOLE_PORT"] == server.port
