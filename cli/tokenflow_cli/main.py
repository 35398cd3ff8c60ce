"""``tokenflow``: the operator's command line for a Tokenflow stack.

Uploads exports to the bucket and reads and acts on the fleet through the IAM-signed HTTP API. Every
failure ends in one line on stderr (``tokenflow: <reason>``) and a non-zero exit status: 1 for a
failure, 2 for a usage error, 130 for Ctrl-C.

Commands, options, help and shell completion are Click's, views and progress bars Rich's (output.py).
Click rather than Typer: Click is already in the locked dependencies (aws-sam-cli pins it), it lets
main() hand help and errors to the streams it was given rather than the process's, and Typer would add
a layer (and its own dependencies) over the same Click for type-hint syntax alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import boto3
import click
import requests
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import RenderableType
from rich.text import Text

from tokenflow.store import DEVICE_STATES
from tokenflow_cli import aws, doctor, labels, output
from tokenflow_cli.client import DEVICE_ID_RE, ApiClient, ApiError, CliError, segment, token_ref_for_url

PROG = "tokenflow"
# What ``python -m tokenflow_local.run`` listens on by default, and the bucket it names after the
# template (``${AWS::StackName}-exports-${AWS::AccountId}`` for the stack "tokenflow-local").
LOCAL_API_URL = "http://127.0.0.1:3000"
LOCAL_AWS_URL = "http://127.0.0.1:4566"
LOCAL_BUCKET = "tokenflow-local-exports-123456789012"
LOCAL_REGION = "us-east-1"
LOCAL_KEY = "tokenflow-local"  # moto accepts any key
LOCAL_STACK = "tokenflow-local"  # the stack name the local stack records itself under
DEFAULT_STACK = "tokenflow"
CONSOLE_PORT = 8765

EXPORT_SUFFIXES = (".zip", ".csv")  # the template's S3 notification filters
MAX_PAGE = 100
POLL_SECONDS = 0.5
FLEET_POLL_SECONDS = 1.0
# Device states on the way to confirmed: a fleet is served when none is left in them.
IN_FLIGHT = ("pending", "delivered", "clearing")
IMPORT_ID_LENGTH = 64
MIN_IMPORT_PREFIX = 6

# Exit statuses (unchanged from the argparse version scripts were written against).
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# A closed pipe (``tokenflow devices | head``): what Python's documentation does for SIGPIPE,
# exit status 1 without a traceback (https://docs.python.org/3/library/signal.html#note-on-sigpipe),
# as Click's own main does.
EXIT_PIPE_CLOSED = 1


@dataclass
class Streams:
    """Where main was told to write: help and errors go there, not to a process-wide redirect."""

    out: IO[str]
    err: IO[str]


@dataclass
class Settings:
    """The global options (and their environment variables)."""

    api_url: str | None = None
    bucket: str | None = None
    stack: str = DEFAULT_STACK
    region: str | None = None
    profile: str | None = None
    aws_endpoint: str | None = None
    no_sign: bool = False
    local: bool = False
    json: bool = False


class Context:
    """Settings from options and environment, with the AWS session and API client made on first use."""

    def __init__(self, settings: Settings, out: IO[str], err: IO[str]) -> None:
        self.settings = settings
        self.out = out
        self.err = err
        self.local = settings.local
        self.endpoint: str | None = settings.aws_endpoint or (LOCAL_AWS_URL if self.local else None)
        self.sign = not (settings.no_sign or self.local)
        self.stdout = output.console_for(out)
        self.stderr = output.console_for(err)

    @property
    def json(self) -> bool:
        return self.settings.json

    @cached_property
    def session(self) -> boto3.session.Session:
        if self.local:
            return boto3.session.Session(
                aws_access_key_id=LOCAL_KEY,
                aws_secret_access_key=LOCAL_KEY,
                region_name=self.settings.region or LOCAL_REGION,
            )
        return boto3.session.Session(profile_name=self.settings.profile, region_name=self.settings.region)

    @cached_property
    def outputs(self) -> dict[str, str]:
        return aws.stack_outputs(self.session, self.settings.stack, self.endpoint)

    def _output(self, key: str, option: str, env: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise CliError(f"stack {self.settings.stack} has no output {key}: pass {option} or set {env}")
        return value

    @cached_property
    def api_url(self) -> str:
        if self.settings.api_url:
            return self.settings.api_url
        if self.local:
            return LOCAL_API_URL
        return self._output("ApiUrl", "--api-url", "TOKENFLOW_API_URL")

    @cached_property
    def bucket(self) -> str:
        if self.settings.bucket:
            return self.settings.bucket
        if self.local:
            return LOCAL_BUCKET
        return self._output("ExportsBucketName", "--bucket", "TOKENFLOW_BUCKET")

    @cached_property
    def api(self) -> ApiClient:
        if not self.sign:
            return ApiClient(self.api_url)
        credentials = self.session.get_credentials()
        if credentials is None:
            raise CliError("no AWS credentials found: configure a profile, set AWS_PROFILE, or use --local")
        region = aws.region_for(self.settings.region, self.session, self.api_url)
        return ApiClient(self.api_url, credentials=credentials, region=region)

    def show(self, data: Any, view: Callable[[Any], RenderableType | str]) -> None:
        """Print ``data`` as JSON with --json, else as ``view(data)``."""
        if self.json:
            self.say_json(data)
        else:
            self.say(view(data))

    def say_json(self, data: Any) -> None:
        # Written as it always was (indent 2, UTF-8 kept), never through Rich: scripts compare bytes.
        self.out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        self.out.flush()

    def say(self, view: RenderableType | str) -> None:
        self.out.write(output.render(output.as_renderable(view), self.stdout))
        self.out.flush()

    def note(self, message: str) -> None:
        """Remarks: stderr, so stdout stays the answer alone."""
        self.err.write(output.render(Text(message, style="dim"), self.stderr))
        self.err.flush()


# ---- Click, with main's streams --------------------------------------------------------------------


def _show_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    streams = ctx.find_root().obj
    stream = getattr(streams, "out", None) or sys.stdout
    stream.write(ctx.get_help() + "\n")
    stream.flush()
    ctx.exit(0)


def _help_option(command: click.Command, ctx: click.Context) -> click.Option | None:
    names = command.get_help_option_names(ctx)
    if not names or not command.add_help_option:
        return None
    return click.Option(
        names,
        is_flag=True,
        is_eager=True,
        expose_value=False,
        callback=_show_help,
        help="Show this message and exit.",
    )


class Command(click.Command):
    """A command whose --help goes to the stream main was given."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = getattr(self, "_tokenflow_help", None)
        if option is None:  # made once: Click orders eager options by object identity
            option = self._tokenflow_help = _help_option(self, ctx)
        return option


class PipeClosed(Exception):
    """stdout's reader went away; not an OSError, so Click's own main does not swallow it first."""


class Group(click.Group):
    command_class = Command

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = getattr(self, "_tokenflow_help", None)
        if option is None:
            option = self._tokenflow_help = _help_option(self, ctx)
        return option

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise PipeClosed from exc


def _json_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # `tokenflow devices --json` works as `tokenflow --json devices` does.
    if value and isinstance(ctx.obj, Context):
        ctx.obj.settings.json = True


def command(name: str, help: str, **kwargs: Any) -> Callable[[Callable[..., int]], click.Command]:
    """A subcommand: gets the Context as its first argument, takes --json too, returns its exit status."""

    def decorate(handler: Callable[..., int]) -> click.Command:
        wrapped = click.pass_obj(handler)
        wrapped = click.option(
            "--json",
            "_json",
            is_flag=True,
            expose_value=False,
            callback=_json_flag,
            help="Print the API's JSON instead of tables.",
        )(wrapped)
        return cli.command(name, help=help, short_help=help, **kwargs)(wrapped)

    return decorate


# "\b": Click keeps the paragraph's lines as written (the command must stay one line to copy it).
EPILOG = """\b
Shell completion: put this in ~/.bashrc (zsh_source in ~/.zshrc, fish_source for fish):
  eval "$(_TOKENFLOW_COMPLETE=bash_source tokenflow)"
"""


@click.group(
    cls=Group,
    name=PROG,
    help="Operate a Tokenflow stack.",
    epilog=EPILOG,
    no_args_is_help=False,  # a missing command is a usage error (exit 2), as it always was
    context_settings={"max_content_width": 110},
)
@click.option("--api-url", envvar="TOKENFLOW_API_URL", show_envvar=True, help="The HTTP API.")
@click.option("--bucket", envvar="TOKENFLOW_BUCKET", show_envvar=True, help="The exports bucket.")
@click.option(
    "--stack",
    envvar="TOKENFLOW_STACK",
    show_envvar=True,
    default=DEFAULT_STACK,
    show_default=True,
    help="CloudFormation stack whose outputs give the API URL and bucket.",
)
@click.option("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's).")
@click.option("--profile", help="AWS profile.")
@click.option("--aws-endpoint", help="AWS endpoint URL for S3 and CloudFormation (e.g. a local one).")
@click.option("--no-sign", is_flag=True, help="Send API requests unsigned (local gateway).")
@click.option(
    "--local",
    is_flag=True,
    help=f"Use the local stack: API {LOCAL_API_URL}, AWS {LOCAL_AWS_URL}, bucket {LOCAL_BUCKET}.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables.")
@click.pass_context
def cli(
    click_ctx: click.Context,
    api_url: str | None,
    bucket: str | None,
    stack: str,
    region: str | None,
    profile: str | None,
    aws_endpoint: str | None,
    no_sign: bool,
    local: bool,
    as_json: bool,
) -> None:
    streams = click_ctx.obj if isinstance(click_ctx.obj, Streams) else Streams(sys.stdout, sys.stderr)
    settings = Settings(api_url, bucket, stack, region, profile, aws_endpoint, no_sign, local, as_json)
    click_ctx.obj = Context(settings, streams.out, streams.err)


# ---- commands --------------------------------------------------------------------------------------


@command("upload", "Upload a Blynk export and wait for its import.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--no-wait", is_flag=True, help="Return once uploaded.")
@click.option(
    "--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the import."
)
def cmd_upload(ctx: Context, file: Path, no_wait: bool, timeout: float) -> int:
    path = file
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise CliError(f"{path.name}: only .zip and .csv exports are imported")
    sha256 = aws.file_sha256(path) if not no_wait else None
    # Seen before: ingest files the copy away without a new import record, so the old one is the answer.
    before = _import_or_none(ctx, sha256) if sha256 else None
    label = f"upload {path.name}"
    with output.Bar(
        ctx.stderr, label, path.stat().st_size, transfer=True, final=lambda _d, _t: f"{label}: 100%"
    ) as bar:
        key = aws.upload(ctx.session, ctx.endpoint, path, ctx.bucket, bar.advance)
    if sha256 is None:
        ctx.show({"bucket": ctx.bucket, "key": key}, lambda r: f"uploaded s3://{r['bucket']}/{r['key']}")
        return 0
    if before and before.get("status") != "processing":
        result = before
        ctx.note(f"the same file was imported before as {before.get('source_key')}")
    else:
        with output.waiting(ctx.stderr, f"waiting for import {sha256[:12]}..."):
            result = _wait_for_import(ctx, sha256, timeout)
    ctx.show(result, output.import_result_view)
    if result.get("status") == "rejected":
        raise CliError(f"the import was rejected: {result.get('reason') or 'see the report'}")
    return 0


def _import_or_none(ctx: Context, sha256: str) -> dict[str, Any] | None:
    try:
        return ctx.api.get(f"/imports/{sha256}")
    except ApiError as exc:
        if exc.status == 404:  # ingest has not started on it yet
            return None
        raise


def _wait_for_import(ctx: Context, sha256: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = _import_or_none(ctx, sha256)
        if found and found.get("status") != "processing":
            return found
        if time.monotonic() > deadline:
            state = "still processing" if found else "not started"
            raise CliError(f"import {sha256[:12]} {state} after {timeout:g} s")
        time.sleep(POLL_SECONDS)


@command("summary", "Token and device counts, low stock, recent imports.")
def cmd_summary(ctx: Context) -> int:
    ctx.show(ctx.api.get("/summary"), output.summary_view)
    return 0


@command("imports", "The latest imports, or one import (ID or its first characters) with its rejected rows.")
@click.argument("import_id", metavar="[ID]", required=False)
@click.option(
    "--limit", type=click.IntRange(1, MAX_PAGE), default=20, show_default=True, help="Imports listed."
)
def cmd_imports(ctx: Context, import_id: str | None, limit: int) -> int:
    if import_id is None:
        ctx.show(ctx.api.get("/imports", limit=limit), lambda data: output.imports_table(data["imports"]))
        return 0
    ctx.show(ctx.api.get(f"/imports/{segment(_full_import_id(ctx, import_id))}"), output.import_result_view)
    return 0


def _full_import_id(ctx: Context, ref: str) -> str:
    """The import id a table's 12 characters (or any unique prefix of 6 or more) name."""
    ref = ref.lower()
    if len(ref) == IMPORT_ID_LENGTH:
        return ref
    if len(ref) < MIN_IMPORT_PREFIX:
        raise CliError(f"an import id is 64 hex characters (or its first {MIN_IMPORT_PREFIX} or more)")
    listed = ctx.api.get("/imports", limit=MAX_PAGE).get("imports", [])
    found = {i["import_id"] for i in listed if str(i.get("import_id", "")).startswith(ref)}
    if len(found) != 1:
        many = "more than one" if found else "none"
        raise CliError(f"{many} of the latest {len(listed)} imports start with {ref}: give the whole id")
    return found.pop()


def list_devices(
    ctx: Context,
    states: Sequence[str | None],
    limit: int | None,
    page_size: int,
    not_live_for: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Devices of ``states``, following each cursor; the cursor left when ``limit`` stopped the listing."""
    found: list[dict[str, Any]] = []
    for state in states:
        cursor: str | None = None
        while True:
            want = page_size if limit is None else min(page_size, limit - len(found))
            query: dict[str, Any] = {"state": state, "cursor": cursor, "limit": want}
            if not_live_for:
                query["not_live_for"] = not_live_for
            page = ctx.api.get("/devices", **query)
            found.extend(page.get("devices", []))
            cursor = page.get("cursor")
            if limit is not None and len(found) >= limit:
                return found[:limit], cursor
            if not cursor:
                break
    return found, None


STATE_CHOICE = click.Choice(DEVICE_STATES)
PAGE_SIZE = click.IntRange(1, MAX_PAGE)


@command("devices", "List devices, following every page.")
@click.option("--state", type=STATE_CHOICE, help="Only devices in this state.")
@click.option("--limit", type=int, help="Stop after this many devices.")
@click.option("--page-size", type=PAGE_SIZE, default=50, show_default=True, help="Devices per request.")
@click.option(
    "--not-live-for",
    metavar="DURATION",
    help="Confirmed devices with no Blynk value for this long (e.g. 24h), with the likely cause.",
)
def cmd_devices(
    ctx: Context, state: str | None, limit: int | None, page_size: int, not_live_for: str | None
) -> int:
    if limit is not None and limit < 1:
        raise CliError("--limit must be at least 1")
    if not_live_for and state not in (None, "confirmed"):
        raise CliError("--not-live-for lists confirmed devices: leave out --state or use --state confirmed")
    if not_live_for:
        state = "confirmed"
    found, cursor = list_devices(ctx, [state], limit, page_size, not_live_for)
    if ctx.json:
        ctx.say_json({"devices": found, "cursor": cursor})
    else:
        ctx.say(output.devices_view(found))
        more = " (more: raise --limit)" if cursor else ""
        ctx.note(f"{len(found)} device{'s' if len(found) != 1 else ''}{more}")
    return 0


def _device(ctx: Context, ref: str) -> dict[str, Any]:
    """A device by its id, or by a token it holds (AuthToken, QR token or token id)."""
    if DEVICE_ID_RE.fullmatch(ref):
        return ctx.api.get(f"/devices/{ref}")
    found = ctx.api.get(f"/tokens/{segment(token_ref_for_url(ref))}")
    if not found.get("device_id"):
        raise CliError(f"token {found.get('mask') or ''} is {found.get('state')}: no device holds it")
    return ctx.api.get(f"/devices/{found['device_id']}")


@command("device", "One device (by id, or by a token it holds).")
@click.argument("ref", metavar="ID")
def cmd_device(ctx: Context, ref: str) -> int:
    ctx.show(_device(ctx, ref), output.device_view)
    return 0


@command("find", "Which device holds a token, and the token's history.")
@click.argument("ref", metavar="REF")
def cmd_find(ctx: Context, ref: str) -> int:
    ctx.show(ctx.api.get(f"/tokens/{segment(token_ref_for_url(ref))}"), output.token_view)
    return 0


def _device_id(value: str) -> str:
    if not DEVICE_ID_RE.fullmatch(value):
        raise CliError(f"{value!r} is not a device id (24 hex characters)")
    return value


@command("reveal", "Print a device's AuthToken (audited).")
@click.argument("device_id", metavar="ID")
def cmd_reveal(ctx: Context, device_id: str) -> int:
    answer = ctx.api.get(f"/devices/{_device_id(device_id)}/token")
    ctx.show(answer, lambda a: a["token"])
    return 0


@command("assign", "Queue a device for its token now.")
@click.argument("device_id", metavar="ID")
def cmd_assign(ctx: Context, device_id: str) -> int:
    answer = ctx.api.post(f"/devices/{_device_id(device_id)}/assign")
    ctx.show(
        answer,
        lambda a: (
            f"device {a['device_id']}: {a.get('state')}, queued {output.yes_no(a.get('queued'))}, "
            f"sweep requested {output.yes_no(a.get('sweep_requested'))}"
        ),
    )
    return 0


@command("transfer", "RMA: move a device's token to its replacement.")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
def cmd_transfer(ctx: Context, old: str, new: str) -> int:
    answer = ctx.api.post(f"/devices/{_device_id(old)}/transfer", {"to": _device_id(new)})

    def text(a: dict[str, Any]) -> str:
        line = (
            f"token {a['token'].get('mask')} moves from {a['from']} ({a['old_state']}: its Ledger is "
            f"cleared, then it is retired) to {a['to']} ({a['new_state']})"
        )
        replaced = a.get("replaced_token")
        if replaced:
            fate = "back in stock" if replaced.get("state") == "available" else "released, never reused"
            line += f"; {a['to']}'s own token {replaced.get('mask')} is {fate}"
        return line

    ctx.show(answer, text)
    return 0


@command("revoke", "Revoke a token deleted in Blynk.")
@click.argument("ref", metavar="REF")
def cmd_revoke(ctx: Context, ref: str) -> int:
    answer = ctx.api.post(f"/tokens/{segment(token_ref_for_url(ref))}/revoke")

    def text(a: dict[str, Any]) -> str:
        line = f"token {a['token'].get('mask')}: {a['state']}"
        if a.get("already_revoked"):
            line += " (already revoked)"
        if a.get("device_id"):
            if a.get("device_requeued"):
                line += f"; device {a['device_id']}: its Ledger is cleared, then it gets a fresh token"
            else:
                line += f"; device {a['device_id']} not requeued"
        return line

    ctx.show(answer, text)
    return 0


@command("labels", "A printable A4 PDF of QR labels.")
@click.option(
    "--state", "states", type=STATE_CHOICE, multiple=True, help="Repeatable (default delivered, confirmed)."
)
@click.option("--limit", type=int, help="At most this many devices.")
@click.option("--page-size", type=PAGE_SIZE, default=MAX_PAGE, hidden=True)
@click.option("-o", "--output", "out_file", default="labels.pdf", show_default=True, help="The PDF to write.")
def cmd_labels(
    ctx: Context, states: tuple[str, ...], limit: int | None, page_size: int, out_file: str
) -> int:
    devices, _ = list_devices(ctx, list(states) or ["delivered", "confirmed"], limit, page_size)
    made: list[labels.Label] = []
    skipped = 0
    with output.Bar(ctx.stderr, "labels", len(devices)) as bar:
        for listed in devices:
            device_id = listed["device_id"]
            try:
                png = ctx.api.get_bytes(f"/devices/{device_id}/qr")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                skipped += 1
            else:
                made.append(labels.label_for(ctx.api.get(f"/devices/{device_id}"), png))
            bar.advance()
    out = Path(out_file)
    try:
        labels.write(made, out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    result = {"file": str(out), "labels": len(made), "skipped_without_qr": skipped}
    ctx.show(
        result,
        lambda r: (
            f"wrote {r['labels']} label{'s' if r['labels'] != 1 else ''} to {r['file']}"
            + (f"; {skipped} device(s) without a QR image skipped" if skipped else "")
        ),
    )
    return 0


@command(
    "wait", "Wait until the fleet is served: no device on its way, none waiting while tokens are in stock."
)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait.")
def cmd_wait(ctx: Context, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    with output.Bar(ctx.stderr, "confirmed", 0, final=_fleet_line) as bar:
        while True:
            data = ctx.api.get("/summary")
            devices, tokens = data.get("devices") or {}, data.get("tokens") or {}
            moving = sum(int(devices.get(s, 0)) for s in IN_FLIGHT)
            # Waiting devices with tokens in stock get one at the next sweep: still to be served.
            servable = min(int(devices.get("waiting", 0)), int(tokens.get("available", 0)))
            confirmed = int(devices.get("confirmed", 0))
            bar.update(confirmed, confirmed + moving + servable)
            paused = data.get("paused")
            if paused:  # nothing moves until an operator acts: waiting on would only time out
                raise CliError(f"assignment is paused since {paused.get('since')}: {paused.get('reason')}")
            if moving == 0 and servable == 0:
                break
            if time.monotonic() > deadline:
                on_way = ", ".join(f"{devices.get(s, 0)} {s}" for s in IN_FLIGHT)
                raise CliError(f"the fleet is not served after {timeout:g} s: {on_way}, {servable} waiting")
            time.sleep(FLEET_POLL_SECONDS)
    ctx.show(data, lambda d: _served(d.get("devices") or {}))
    return 0


def _fleet_line(done: int, total: int) -> str:
    return f"confirmed: {done}/{total}"


def _served(devices: dict[str, Any]) -> str:
    counts = ", ".join(f"{count} {state}" for state, count in devices.items() if count)
    return f"fleet served: {counts or 'no devices'}"


@command("doctor", "Check a deployed stack: one line per check, with the fix.")
@click.option(
    "--integration",
    help="The status integration JSON given to Particle, whose secret header is compared by hash "
    "(default firmware/integrations/tokenflow-status.json).",
)
def cmd_doctor(ctx: Context, integration: str | None) -> int:
    stack = ctx.settings.stack
    if ctx.local and stack == DEFAULT_STACK:
        stack = LOCAL_STACK
    checker = doctor.Doctor(
        ctx.session,
        ctx.endpoint,
        stack,
        integration=Path(integration) if integration else doctor.INTEGRATION,
        api=lambda path: ctx.api.get(path),
    )
    if ctx.json:
        checks = list(checker.checks())
        ctx.out.write(json.dumps([c.__dict__ for c in checks], indent=2) + "\n")
        ctx.out.flush()
        return 1 if any(c.status == doctor.FAIL for c in checks) else 0
    return doctor.run(checker, ctx.out, output.wants_colour(ctx.out))


@command(
    "console", "Serve the web console on 127.0.0.1 (the API signed with your credentials); Ctrl-C stops it."
)
@click.option("--port", type=click.IntRange(0, 65535), default=CONSOLE_PORT, show_default=True)
@click.option("--open", "open_browser", is_flag=True, help="Open it in the default browser.")
def cmd_console(ctx: Context, port: int, open_browser: bool) -> int:
    try:  # imported here: its web stack is not needed by any other command
        from tokenflow_cli.console.server import serve
    except ImportError as exc:
        raise CliError(f"the web console is not available: {exc}") from None
    with contextlib.suppress(KeyboardInterrupt):  # how it is meant to stop
        serve(api=ctx.api, host="127.0.0.1", port=port, open_browser=open_browser, local=ctx.local)
    return 0


# ---- main ----------------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str | None:
    """The one line a failure is reported as, or None for an exception that is not a user's failure."""
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Message") or str(exc)
    if isinstance(exc, BotoCoreError):  # no credentials, unknown profile, unreachable endpoint
        return str(exc)
    if isinstance(exc, requests.RequestException):
        return f"request failed: {exc}"
    if isinstance(exc, OSError):
        return f"{str(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}"
    return None


def _fail(err: IO[str], reason: str) -> None:
    # One line, whatever the reason looked like: scripts and people read the last line of stderr.
    line = Text.assemble(("tokenflow:", "bold red"), " ", " ".join(reason.split()))
    err.write(output.render(line, output.console_for(err)))
    err.flush()


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so the flush at exit raises nothing either
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (tests give a StringIO)
        pass


def main(
    argv: list[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run one command; ``stdout``/``stderr`` default to the process's own streams."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        code = cli.main(
            args=sys.argv[1:] if argv is None else list(argv),
            prog_name=PROG,
            standalone_mode=False,
            obj=Streams(out, err),
        )
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else PROG
        _fail(err, f"{exc.format_message()} (see {where} --help)")
        return EXIT_USAGE
    except click.ClickException as exc:
        _fail(err, exc.format_message())
        return exc.exit_code
    except click.Abort:  # Ctrl-C (Click has printed the newline)
        return EXIT_INTERRUPTED
    except PipeClosed:
        if out is sys.stdout:
            _quiet_stdout()
        return EXIT_PIPE_CLOSED
    except Exception as exc:
        reason = _reason(exc)
        if reason is None:
            raise
        _fail(err, reason)
        return EXIT_FAILURE
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
