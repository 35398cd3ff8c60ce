"""``tokenflow console``: a web console on 127.0.0.1 over the operator API.

The browser talks only to this local server; the server calls the API with the CLI's ``ApiClient``,
which signs every request with the operator's own AWS credentials (SigV4), as the CLI does. So there
is no login of its own and no credential ever reaches the browser.

Why this stack: pages are rendered on the server with Jinja2 templates by Flask (small, well kept,
already pinned here: moto's server runs on it) and every action is a plain HTML form, posted and
answered with a redirect (POST-redirect-GET), so the console needs no JavaScript at all: nothing to
vendor, build or keep up to date, and its Content-Security-Policy can forbid scripts outright. The
activity chart is inline SVG drawn on the server (chart.py). The one stylesheet is served from the
package (static/console.css): no CDN, nothing fetched from elsewhere.

Safety (guard.py): bound to 127.0.0.1 only; ``Host`` must be 127.0.0.1 or localhost with the
console's port (DNS rebinding); every POST carries the per-process token in its form and in a
``SameSite=Strict`` cookie (CSRF); transfer, revoke and reveal each take a second, explicit click on
a page that names the consequences. An AuthToken is shown only on the reveal answer, fetched
through the API's audited route (``GET /devices/{id}/token``), sent with ``Cache-Control: no-store``
(as every page is) and never logged: the server keeps no access log (paths carry search terms).
A search for an AuthToken is posted, and the console looks it up by its SHA-256 (token id), so the
AuthToken never lands in a URL or the browser's history.

``make_app(api)`` is the WSGI app (tests use Flask's test client on it); ``ConsoleServer`` runs it
on a port (0: any free one) in a thread; ``serve`` runs it until Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import threading
import webbrowser
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, flash, redirect, render_template, request, session, url_for
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tokenflow.model import DEVICE_STATES, TOKEN_STATES
from tokenflow.tokens import is_auth_token, is_qr_token, is_token_id, token_id
from tokenflow_cli import labels
from tokenflow_cli.client import ApiClient, ApiError, CliError, segment
from tokenflow_cli.console import guard
from tokenflow_cli.console.chart import activity_svg

__all__ = ["ConsoleServer", "make_app", "serve"]

PAGE_SIZE = 25
ACTIVITY_HOURS = 24
MAX_LABELS = 240  # ten A4 sheets
DEVICE_ID = re.compile(r"[0-9a-f]{24}")
SERIAL = re.compile(r"[A-Za-z0-9]{6,32}")
IMPORT_ID = re.compile(r"[0-9a-f]{64}")
# States a device can be given a label in: it holds a token.
LABEL_STATES = ("confirmed", "delivered", "pending", "failed")


def _device_id(value: str) -> str:
    if not DEVICE_ID.fullmatch(value):
        raise ApiError(400, "a device id is 24 lowercase hex characters")
    return value


def make_app(api: ApiClient, *, local: bool = False, port: int | None = None) -> Flask:
    """The console as a WSGI app calling ``api``; ``port`` is the one ``Host`` must name (None: any,
    until ``ConsoleServer`` binds and sets it)."""
    app = Flask(__name__)
    secret = guard.new_secret()
    app.config.update(
        SECRET_KEY=guard.new_secret(),  # signs the session cookie; dies with the process
        SESSION_COOKIE_NAME=guard.COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        CONSOLE_PORT=port,
        MAX_CONTENT_LENGTH=16 * 1024,
    )
    app.jinja_env.autoescape = True

    @app.before_request
    def check_request() -> Response | None:
        if not guard.host_allowed(request.host, app.config["CONSOLE_PORT"]):
            return Response(
                "This console answers only at 127.0.0.1 or localhost.\n", 403, mimetype="text/plain"
            )
        if request.method == "POST":
            fine = guard.origin_allowed(request.headers.get("Origin"), request.host) and guard.token_matches(
                secret, request.form.get(guard.CSRF_FIELD), session.get(guard.CSRF_FIELD)
            )
            if not fine:
                return Response(
                    "Refused: this form did not come from this console's own page. Reload the page.\n",
                    403,
                    mimetype="text/plain",
                )
        session[guard.CSRF_FIELD] = secret
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(guard.SECURITY_HEADERS)
        # Every page shows live state (and the reveal page a token): nothing is kept by the browser.
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {
            "csrf_field": guard.CSRF_FIELD,
            "csrf_token": secret,
            "local": local,
            "api_url": api.base_url,
            "device_states": DEVICE_STATES,
            "token_states": TOKEN_STATES,
        }

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[str, int]:
        status = exc.status if exc.status in (400, 404, 409, 422) else 502
        return render_template("error.html", message=str(exc), status=exc.status), status

    @app.errorhandler(CliError)
    def unreachable(exc: CliError) -> tuple[str, int]:
        return render_template("error.html", message=str(exc), status=None), 502

    # ---- reading ---------------------------------------------------------------------------------

    @app.get("/")
    def overview() -> str:
        summary = api.get("/summary")
        try:
            hours = api.get("/activity", hours=ACTIVITY_HOURS)["hours"]
        except ApiError:  # an API deployed before the route: the rest of the page still helps
            hours = None
        totals = {
            "assigned": sum(h["assigned"] for h in hours or []),
            "confirmed": sum(h["confirmed"] for h in hours or []),
        }
        return render_template(
            "overview.html",
            page="overview",
            summary=summary,
            chart=activity_svg(hours) if hours is not None else None,
            totals=totals,
            hours=ACTIVITY_HOURS,
        )

    @app.get("/devices")
    def devices() -> str:
        state = request.args.get("state") or None
        if state not in (None, *DEVICE_STATES):
            state = None
        cursor = request.args.get("cursor") or None
        listing = api.get("/devices", state=state, cursor=cursor, limit=PAGE_SIZE)
        return render_template(
            "devices.html",
            page="devices",
            devices=listing["devices"],
            next_cursor=listing.get("cursor"),
            state=state,
            paged=cursor is not None,
        )

    @app.post("/search")
    def search() -> Response:
        query = (request.form.get("q") or "").strip()
        target = _search(api, query)
        if target is None:
            return redirect(url_for("devices"), 303)
        return redirect(url_for("device", device_id=target), 303)

    @app.get("/devices/<device_id>")
    def device(device_id: str) -> str:
        view = api.get(f"/devices/{segment(_device_id(device_id))}")
        try:
            events = api.get(f"/devices/{segment(device_id)}/history")["events"]
        except ApiError:
            events = []
        return render_template("device.html", page="devices", device=view, events=events)

    @app.get("/devices/<device_id>/qr.png")
    def device_qr(device_id: str) -> Response:
        png = api.get_bytes(f"/devices/{segment(_device_id(device_id))}/qr")
        return Response(png, mimetype="image/png")

    @app.get("/imports")
    def imports() -> str:
        return render_template(
            "imports.html", page="imports", imports=api.get("/imports", limit=50)["imports"]
        )

    @app.get("/imports/<import_id>")
    def import_report(import_id: str) -> str:
        if not IMPORT_ID.fullmatch(import_id):
            raise ApiError(400, "an import id is the file's SHA-256 (64 hex characters)")
        report = api.get(f"/imports/{import_id}")
        return render_template("import.html", page="imports", item=report, report=report.get("report") or {})

    @app.get("/labels")
    def labels_page() -> str:
        return render_template("labels.html", page="labels", label_states=LABEL_STATES, max_labels=MAX_LABELS)

    @app.get("/labels.pdf")
    def labels_pdf() -> Response:
        state = request.args.get("state") or "confirmed"
        if state not in LABEL_STATES:
            raise ApiError(
                400, f"labels are printed for devices that hold a token: {', '.join(LABEL_STATES)}"
            )
        try:
            limit = max(1, min(MAX_LABELS, int(request.args.get("limit") or 24)))
        except ValueError:
            raise ApiError(400, "the number of labels is a whole number") from None
        made = _labels(api, state, limit)
        return Response(
            labels.render(made),
            mimetype="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="labels-{state}.pdf"'},
        )

    # ---- acting: each behind a confirmation page -------------------------------------------------

    @app.get("/devices/<device_id>/transfer")
    def confirm_transfer(device_id: str) -> str | Response:
        view = api.get(f"/devices/{segment(_device_id(device_id))}")
        to = (request.args.get("to") or "").strip().lower()
        if not DEVICE_ID.fullmatch(to) or to == device_id:
            flash(
                "Name the replacement by its Particle device id (24 hex characters, not this device).",
                "error",
            )
            return redirect(url_for("device", device_id=device_id), 303)
        if not view.get("token"):
            flash("This device holds no token to transfer.", "error")
            return redirect(url_for("device", device_id=device_id), 303)
        try:
            target: dict[str, Any] | None = api.get(f"/devices/{segment(to)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            target = None
        return render_template("confirm_transfer.html", page="devices", device=view, to=to, target=target)

    @app.post("/devices/<device_id>/transfer")
    def transfer(device_id: str) -> Response:
        to = (request.form.get("to") or "").strip().lower()
        _device_id(device_id)
        return _act(
            device_id,
            lambda: api.post(f"/devices/{segment(device_id)}/transfer", {"to": _device_id(to)}),
            lambda a: (
                f"Token {a['token']['mask']} moves to {a['to']} ({a['new_state']}); "
                f"this device is {a['old_state']}: its Ledger is being cleared, then it is retired."
            ),
        )

    @app.get("/devices/<device_id>/revoke")
    def confirm_revoke(device_id: str) -> str | Response:
        view = api.get(f"/devices/{segment(_device_id(device_id))}")
        if not view.get("token"):
            flash("This device holds no token to revoke.", "error")
            return redirect(url_for("device", device_id=device_id), 303)
        return render_template("confirm_revoke.html", page="devices", device=view)

    @app.post("/devices/<device_id>/revoke")
    def revoke(device_id: str) -> Response:
        _device_id(device_id)
        tid = request.form.get("token_id") or ""
        if not is_token_id(tid):
            raise ApiError(400, "the form names no token")
        return _act(
            device_id,
            lambda: api.post(f"/tokens/{segment(tid)}/revoke"),
            lambda a: (
                f"Token {a['token']['mask']} is {a['state']}: it is never handed out again. "
                + (
                    f"This device is {a['device_state']}: its Ledger is being cleared, "
                    "then it gets a fresh token."
                    if a.get("device_id")
                    else ""
                )
            ),
        )

    @app.get("/devices/<device_id>/reveal")
    def confirm_reveal(device_id: str) -> str | Response:
        view = api.get(f"/devices/{segment(_device_id(device_id))}")
        if not view.get("token"):
            flash("This device holds no token.", "error")
            return redirect(url_for("device", device_id=device_id), 303)
        return render_template("confirm_reveal.html", page="devices", device=view)

    @app.post("/devices/<device_id>/reveal")
    def reveal(device_id: str) -> str:
        # The API logs the reveal with the caller's IAM identity; the token goes to this answer only.
        answer = api.get(f"/devices/{segment(_device_id(device_id))}/token")
        print(
            f"tokenflow console: AuthToken of device {device_id} revealed (audited by the API)",
            file=sys.stderr,
        )
        return render_template("reveal.html", page="devices", device_id=device_id, token=answer["token"])

    def _act(device_id: str, call: Callable[[], Any], said: Callable[[Any], str]) -> Response:
        try:
            answer = call()
        except ApiError as exc:
            flash(f"Refused: {exc}", "error")
        else:
            flash(said(answer), "ok")
        return redirect(url_for("device", device_id=device_id), 303)

    return app


def _search(api: ApiClient, query: str) -> str | None:
    """The device a search names (device id, token id, QR token, AuthToken or serial number), or
    None with a flashed message saying why not."""
    if not query:
        flash("Type a device id, serial number, token id or QR token.", "error")
        return None
    if DEVICE_ID.fullmatch(query.lower()):
        return query.lower()
    if is_auth_token(query) or is_token_id(query) or is_qr_token(query):
        ref = token_id(query) if is_auth_token(query) else query  # never an AuthToken in a URL
        try:
            token = api.get(f"/tokens/{segment(ref)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            flash("No stored token matches.", "error")
            return None
        if not token.get("device_id"):
            flash(f"Token {token.get('mask')} is {token.get('state')} and held by no device.", "info")
            return None
        held_by: str = token["device_id"]
        return held_by
    if SERIAL.fullmatch(query):
        try:
            found = api.get(f"/serial_numbers/{segment(query)}")
        except ApiError as exc:
            if exc.status not in (404, 503):
                raise
            flash(f"Serial number {query}: {exc}", "error")
            return None
        device_id: str = found["device_id"]
        return device_id
    flash("Not a device id, serial number, token id (64 hex) or QR token (sqr_...).", "error")
    return None


def _labels(api: ApiClient, state: str, limit: int) -> list[labels.Label]:
    made: list[labels.Label] = []
    cursor = None
    while len(made) < limit:
        page = api.get("/devices", state=state, cursor=cursor, limit=min(100, limit))
        for view in page["devices"]:
            if len(made) >= limit:
                break
            try:
                png = api.get_bytes(f"/devices/{segment(view['device_id'])}/qr")
            except ApiError as exc:
                if exc.status == 404:  # its export had no QR image
                    continue
                raise
            made.append(labels.label_for(api.get(f"/devices/{segment(view['device_id'])}"), png))
        cursor = page.get("cursor")
        if not cursor:
            break
    return made


class _QuietHandler(WSGIRequestHandler):
    """No access log: request lines carry device ids and search terms, and the console needs none."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class ConsoleServer:
    """The console on ``host``:``port`` (0: a free port), served from a thread; a context manager."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise CliError(f"the console listens on 127.0.0.1 only, not {host}")
        self.app = app
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        app.config["CONSOLE_PORT"] = self.port
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tokenflow-console", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    api: ApiClient, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False, local: bool = False
) -> None:
    """Serve the console at http://host:port until Ctrl-C."""
    try:
        server = ConsoleServer(make_app(api, local=local), host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print(f"Tokenflow console at {server.url}  (API {api.base_url}; Ctrl-C stops it)", flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()
