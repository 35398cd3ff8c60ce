"""``tokenflow``: the operator's command line for a Tokenflow stack.

Uploads exports to the bucket and reads and acts on the fleet through the IAM-signed HTTP API. Every
failure ends in one line on stderr (``tokenflow: <reason>``) and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import IO, Any, NoReturn

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError

from tokenflow.store import DEVICE_STATES
from tokenflow_cli import aws, doctor, labels, output
from tokenflow_cli.client import DEVICE_ID_RE, ApiClient, ApiError, CliError, segment, token_ref_for_url

# What ``python -m tokenflow_local.run`` listens on by default, and the bucket it names after the
# template (``${AWS::StackName}-exports-${AWS::AccountId}`` for the stack "tokenflow-local").
LOCAL_API_URL = "http://127.0.0.1:3000"
LOCAL_AWS_URL = "http://127.0.0.1:4566"
LOCAL_BUCKET = "tokenflow-local-exports-123456789012"
LOCAL_REGION = "us-east-1"
LOCAL_KEY = "tokenflow-local"  # moto accepts any key
LOCAL_STACK = "tokenflow-local"  # the stack name the local stack records itself under
DEFAULT_STACK = "tokenflow"

EXPORT_SUFFIXES = (".zip", ".csv")  # the template's S3 notification filters
MAX_PAGE = 100
POLL_SECONDS = 0.5


class Context:
    """Settings from options and environment, with the AWS session and API client made on first use."""

    def __init__(self, args: argparse.Namespace, out: IO[str], err: IO[str]) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.local: bool = args.local
        self.endpoint: str | None = args.aws_endpoint or (LOCAL_AWS_URL if self.local else None)
        self.sign = not (args.no_sign or self.local)

    @cached_property
    def session(self) -> boto3.session.Session:
        if self.local:
            return boto3.session.Session(
                aws_access_key_id=LOCAL_KEY,
                aws_secret_access_key=LOCAL_KEY,
                region_name=self.args.region or LOCAL_REGION,
            )
        return boto3.session.Session(profile_name=self.args.profile, region_name=self.args.region)

    @cached_property
    def outputs(self) -> dict[str, str]:
        return aws.stack_outputs(self.session, self.args.stack, self.endpoint)

    def _output(self, key: str, option: str, env: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise CliError(f"stack {self.args.stack} has no output {key}: pass {option} or set {env}")
        return value

    @cached_property
    def api_url(self) -> str:
        if self.args.api_url:
            return str(self.args.api_url)
        if self.local:
            return LOCAL_API_URL
        return self._output("ApiUrl", "--api-url", "TOKENFLOW_API_URL")

    @cached_property
    def bucket(self) -> str:
        if self.args.bucket:
            return str(self.args.bucket)
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
        region = aws.region_for(self.args.region, self.session, self.api_url)
        return ApiClient(self.api_url, credentials=credentials, region=region)

    def show(self, data: Any, text: Callable[[Any], str]) -> None:
        """Print ``data`` as JSON with --json, else as ``text(data)``."""
        if self.args.json:
            self.say(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            self.say(text(data))

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, message: str) -> None:
        """Progress and remarks: stderr, so stdout stays the answer alone."""
        print(message, file=self.err, flush=True)

    def progress(self, message: str, done: bool) -> None:
        """A progress line: rewritten in place on a terminal, printed once at the end elsewhere."""
        if self.err.isatty():
            print(f"\r{message}", end="\n" if done else "", file=self.err, flush=True)
        elif done:
            self.note(message)


# ---- commands --------------------------------------------------------------------------------------


def cmd_upload(ctx: Context) -> int:
    path = Path(ctx.args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise CliError(f"{path.name}: only .zip and .csv exports are imported")
    sha256 = aws.file_sha256(path) if not ctx.args.no_wait else None
    # Seen before: ingest files the copy away without a new import record, so the old one is the answer.
    before = _import_or_none(ctx, sha256) if sha256 else None
    key = aws.upload(ctx.session, ctx.endpoint, path, ctx.bucket, ctx.err)
    if sha256 is None:
        ctx.show({"bucket": ctx.bucket, "key": key}, lambda r: f"uploaded s3://{r['bucket']}/{r['key']}")
        return 0
    ctx.note(f"waiting for import {sha256[:12]}...")
    result = before if before and before.get("status") != "processing" else _wait(ctx, sha256)
    if before and result is before:
        ctx.note(f"the same file was imported before as {before.get('source_key')}")
    ctx.show(result, output.import_result)
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


def _wait(ctx: Context, sha256: str) -> dict[str, Any]:
    deadline = time.monotonic() + ctx.args.timeout
    while True:
        found = _import_or_none(ctx, sha256)
        if found and found.get("status") != "processing":
            return found
        if time.monotonic() > deadline:
            state = "still processing" if found else "not started"
            raise CliError(f"import {sha256[:12]} {state} after {ctx.args.timeout:g} s")
        time.sleep(POLL_SECONDS)


def cmd_summary(ctx: Context) -> int:
    ctx.show(ctx.api.get("/summary"), output.summary)
    return 0


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


def cmd_devices(ctx: Context) -> int:
    if ctx.args.limit is not None and ctx.args.limit < 1:
        raise CliError("--limit must be at least 1")
    state = ctx.args.state
    if ctx.args.not_live_for and state not in (None, "confirmed"):
        raise CliError("--not-live-for lists confirmed devices: leave out --state or use --state confirmed")
    if ctx.args.not_live_for:
        state = "confirmed"
    found, cursor = list_devices(ctx, [state], ctx.args.limit, ctx.args.page_size, ctx.args.not_live_for)
    if ctx.args.json:
        ctx.say(json.dumps({"devices": found, "cursor": cursor}, indent=2, ensure_ascii=False))
    else:
        ctx.say(output.devices(found))
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


def cmd_device(ctx: Context) -> int:
    ctx.show(_device(ctx, ctx.args.id), output.device)
    return 0


def cmd_find(ctx: Context) -> int:
    ctx.show(ctx.api.get(f"/tokens/{segment(token_ref_for_url(ctx.args.ref))}"), output.token)
    return 0


def _device_id(value: str) -> str:
    if not DEVICE_ID_RE.fullmatch(value):
        raise CliError(f"{value!r} is not a device id (24 hex characters)")
    return value


def cmd_reveal(ctx: Context) -> int:
    answer = ctx.api.get(f"/devices/{_device_id(ctx.args.id)}/token")
    ctx.show(answer, lambda a: a["token"])
    return 0


def cmd_assign(ctx: Context) -> int:
    answer = ctx.api.post(f"/devices/{_device_id(ctx.args.id)}/assign")
    ctx.show(
        answer,
        lambda a: (
            f"device {a['device_id']}: {a.get('state')}, queued {output.yes_no(a.get('queued'))}, "
            f"sweep requested {output.yes_no(a.get('sweep_requested'))}"
        ),
    )
    return 0


def cmd_transfer(ctx: Context) -> int:
    old, new = _device_id(ctx.args.old), _device_id(ctx.args.new)
    answer = ctx.api.post(f"/devices/{old}/transfer", {"to": new})

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


def cmd_revoke(ctx: Context) -> int:
    answer = ctx.api.post(f"/tokens/{segment(token_ref_for_url(ctx.args.ref))}/revoke")

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


def cmd_labels(ctx: Context) -> int:
    states = ctx.args.state or ["delivered", "confirmed"]
    devices, _ = list_devices(ctx, states, ctx.args.limit, ctx.args.page_size)
    made: list[labels.Label] = []
    skipped = 0
    for n, listed in enumerate(devices, 1):
        device_id = listed["device_id"]
        try:
            png = ctx.api.get_bytes(f"/devices/{device_id}/qr")
        except ApiError as exc:
            if exc.status != 404:
                raise
            skipped += 1
        else:
            made.append(labels.label_for(ctx.api.get(f"/devices/{device_id}"), png))
        ctx.progress(f"labels: {n}/{len(devices)}", done=n == len(devices))
    out = Path(ctx.args.output)
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


def cmd_doctor(ctx: Context) -> int:
    stack = ctx.args.stack
    if ctx.local and stack == DEFAULT_STACK:
        stack = LOCAL_STACK
    integration = Path(ctx.args.integration) if ctx.args.integration else doctor.INTEGRATION
    checker = doctor.Doctor(
        ctx.session, ctx.endpoint, stack, integration=integration, api=lambda path: ctx.api.get(path)
    )
    if ctx.args.json:
        checks = list(checker.checks())
        ctx.say(json.dumps([c.__dict__ for c in checks], indent=2))
        return 1 if any(c.status == doctor.FAIL for c in checks) else 0
    colour = ctx.out.isatty() and "NO_COLOR" not in os.environ
    return doctor.run(checker, ctx.out, colour)


# ---- arguments ---------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (the usage itself is in --help), and help and errors
    go to the streams main was given (not a process-wide redirect, which would catch other threads)."""

    out: IO[str] | None = None
    err: IO[str] | None = None

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        if message:
            stream = (self.err or sys.stderr) if file is sys.stderr else (self.out or sys.stdout)
            stream.write(message)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tokenflow: {message} (see {self.prog} --help)\n")


def parser(out: IO[str] | None = None, err: IO[str] | None = None) -> argparse.ArgumentParser:
    env = os.environ.get
    p = Parser(prog="tokenflow", description="Operate a Tokenflow stack.")
    p.add_argument("--api-url", default=env("TOKENFLOW_API_URL"), help="the HTTP API (env TOKENFLOW_API_URL)")
    p.add_argument("--bucket", default=env("TOKENFLOW_BUCKET"), help="exports bucket (env TOKENFLOW_BUCKET)")
    p.add_argument(
        "--stack",
        default=env("TOKENFLOW_STACK", DEFAULT_STACK),
        help="CloudFormation stack whose outputs give the API URL and bucket (env TOKENFLOW_STACK)",
    )
    p.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's)")
    p.add_argument("--profile", help="AWS profile")
    p.add_argument("--aws-endpoint", help="AWS endpoint URL for S3 and CloudFormation (e.g. a local one)")
    p.add_argument("--no-sign", action="store_true", help="send API requests unsigned (local gateway)")
    p.add_argument(
        "--local",
        action="store_true",
        help=f"use the local stack: API {LOCAL_API_URL}, AWS {LOCAL_AWS_URL}, bucket {LOCAL_BUCKET}",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[Context], int], help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.set_defaults(handler=handler)
        return cmd

    cmd = add("upload", cmd_upload, "upload a Blynk export and wait for its import")
    cmd.add_argument("file", help="the export (.zip or .csv)")
    cmd.add_argument("--no-wait", action="store_true", help="return once uploaded")
    cmd.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the import (120)")

    add("summary", cmd_summary, "token and device counts, low stock, recent imports")

    cmd = add("devices", cmd_devices, "list devices, following every page")
    cmd.add_argument("--state", choices=DEVICE_STATES, help="only devices in this state")
    cmd.add_argument("--limit", type=int, help="stop after this many devices")
    cmd.add_argument("--page-size", type=_page_size, default=50, help="devices per request (1-100)")
    cmd.add_argument(
        "--not-live-for",
        metavar="DURATION",
        help="confirmed devices with no Blynk value for this long (e.g. 24h), with the likely cause",
    )

    cmd = add("device", cmd_device, "one device (by id, or by a token it holds)")
    cmd.add_argument("id", help="device id, AuthToken, QR token or token id")

    cmd = add("find", cmd_find, "which device holds a token, and the token's history")
    cmd.add_argument("ref", help="AuthToken (sent as its SHA-256), QR token or token id")

    cmd = add("reveal", cmd_reveal, "print a device's AuthToken (audited)")
    cmd.add_argument("id", help="device id")

    cmd = add("assign", cmd_assign, "queue a device for its token now")
    cmd.add_argument("id", help="device id")

    cmd = add("transfer", cmd_transfer, "RMA: move a device's token to its replacement")
    cmd.add_argument("old", help="the device giving up its token")
    cmd.add_argument("new", help="the replacement device")

    cmd = add("revoke", cmd_revoke, "revoke a token deleted in Blynk")
    cmd.add_argument("ref", help="AuthToken (sent as its SHA-256), QR token or token id")

    cmd = add("doctor", cmd_doctor, "check a deployed stack: one line per check, with the fix")
    cmd.add_argument(
        "--integration",
        help="the status integration JSON given to Particle, whose secret header is compared by hash "
        "(default firmware/integrations/tokenflow-status.json)",
    )

    cmd = add("labels", cmd_labels, "a printable A4 PDF of QR labels")
    cmd.add_argument(
        "--state", action="append", choices=DEVICE_STATES, help="repeatable (default delivered, confirmed)"
    )
    cmd.add_argument("--limit", type=int, help="at most this many devices")
    cmd.add_argument("--page-size", type=_page_size, default=MAX_PAGE, help=argparse.SUPPRESS)
    cmd.add_argument("-o", "--output", default="labels.pdf", help="the PDF to write (labels.pdf)")
    for each in [p, *sub.choices.values()]:
        if isinstance(each, Parser):
            each.out, each.err = out, err
    return p


def _page_size(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PAGE}")
    return number


def main(
    argv: list[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run one command; ``stdout``/``stderr`` default to the process's own streams."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = parser(out, err).parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.handler(Context(args, out, err)))
    except CliError as exc:
        reason = str(exc)
    except ClientError as exc:
        reason = exc.response.get("Error", {}).get("Message") or str(exc)
    except BotoCoreError as exc:  # no credentials, unknown profile, unreachable endpoint
        reason = str(exc)
    except requests.RequestException as exc:
        reason = f"request failed: {exc}"
    except OSError as exc:
        reason = f"{str(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}"
    except KeyboardInterrupt:
        print(file=err)
        return 130
    # One line, whatever the reason looked like: scripts and people read the last line of stderr.
    print(f"tokenflow: {' '.join(reason.split())}", file=err, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
