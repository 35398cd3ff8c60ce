"""The ``tokenflow`` command line against the local stack: S3 upload, the HTTP API, the label PDF.

``main([...])`` runs in-process with the stack's API URL, bucket and AWS endpoint; requests go over
real HTTP to the local gateway. A spy on the gateway's router records which paths arrived, so the
tests can tell that an AuthToken never travelled in a URL. The steps build on each other (the module's
STORY, see tests/e2e/conftest.py: each test also passes alone, replaying the steps it needs).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.credentials import Credentials

from tests.e2e.conftest import DEVICES, QUARANTINED, Story, device_ledgers, eventually, sim_api
from tokenflow.tokens import token_id
from tokenflow_cli.client import CliError, sign_headers, token_ref_for_url
from tokenflow_cli.main import LOCAL_BUCKET, main
from tokenflow_local.sample_export import csv_text, make_export, make_tokens
from tokenflow_local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a local stack, started once per module

ELIGIBLE = DEVICES - QUARANTINED
TOKENS = 20
SAMPLE = {t.token: t for t in make_tokens(TOKENS, seed=1)}
UNKNOWN_DEVICE = "0" * 24
STORY = Story()
TOKENFLOW = [sys.executable, "-m", "tokenflow_cli.main"]  # the CLI as its own process
ESCAPE = "\x1b["  # any ANSI escape sequence: colour, bold


def tokenflow(*argv: str) -> tuple[int, str, str]:
    """``main(argv)``: (exit status, stdout, stderr).

    The stack's functions run in this process and print their logs and metrics to sys.stdout from
    their own threads, so capsys would mix them in; main writes to the streams it is given instead.
    """
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def cli_for(stack: LocalStack) -> Callable[..., tuple[int, str, str]]:
    """Run ``tokenflow`` against the stack."""

    def run(*argv: str, sign: bool = False) -> tuple[int, str, str]:
        assert stack.api_url
        options = ["--api-url", stack.api_url, "--bucket", stack.bucket, "--aws-endpoint", stack.aws_url]
        if not sign:
            options.append("--no-sign")
        return tokenflow(*options, *argv)

    return run


@pytest.fixture
def cli(stack: LocalStack) -> Callable[..., tuple[int, str, str]]:
    return cli_for(stack)


@pytest.fixture
def arrived(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, headers) of every request the gateway routes during the test."""
    seen: list[tuple[str, str, dict[str, str]]] = []
    gateway = stack.gateway
    route, invoke = gateway.route, gateway.invoke

    def spy_route(method: str, path: str) -> Any:
        seen.append((method, path, {}))
        return route(method, path)

    def spy_invoke(matched: Any, event: dict[str, Any]) -> Any:
        seen[-1][2].update(event.get("headers") or {})
        return invoke(matched, event)

    monkeypatch.setattr(gateway, "route", spy_route)
    monkeypatch.setattr(gateway, "invoke", spy_invoke)
    return seen


def json_of(cli: Callable[..., tuple[int, str, str]], *argv: str) -> Any:
    code, out, err = cli("--json", *argv)
    assert code == 0, err
    return json.loads(out)


def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenflow: "), err
    return lines[0]


# ---- signing, without a stack -------------------------------------------------------------------


def test_requests_are_signed_with_sigv4_for_execute_api():
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/devices?state=confirmed&limit=5"
    headers = sign_headers("GET", url, None, credentials, "eu-west-1", {"Accept": "application/json"})

    stamp = headers["X-Amz-Date"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", stamp)
    auth = headers["Authorization"]
    assert auth.startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{stamp[:8]}/eu-west-1/execute-api/aws4_request"
    )
    signed = re.search(r"SignedHeaders=([^,]+)", auth)
    assert signed and {"host", "x-amz-date", "x-amz-security-token"} <= set(signed.group(1).split(";"))
    assert re.search(r"Signature=[0-9a-f]{64}$", auth)
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert headers["Accept"] == "application/json"


def test_an_auth_token_is_replaced_by_its_hash_in_urls():
    token = next(iter(SAMPLE))
    qr = SAMPLE[token].qr_token
    assert token_ref_for_url(token) == token_id(token)
    assert token_ref_for_url(qr) == qr
    assert token_ref_for_url(token_id(token)) == token_id(token)
    with pytest.raises(CliError):
        token_ref_for_url("not-a-token")


# ---- against the stack --------------------------------------------------------------------------


@STORY.step
def test_upload_waits_for_the_import_and_reports_it(stack: LocalStack, tmp_path: Path):
    cli = cli_for(stack)
    export = tmp_path / "first export.zip"
    export.write_bytes(make_export(TOKENS, seed=1))

    code, out, err = cli("upload", str(export), "--timeout", "60")

    assert code == 0, err
    assert "upload first export.zip: 100%" in err
    assert re.search(r"^status\s+processed$", out, re.M), out
    assert re.search(r"^tokens added\s+20$", out, re.M), out
    assert re.search(r"^rows rejected\s+0$", out, re.M), out

    def all_confirmed():
        devices = json_of(cli, "summary")["devices"]
        assert devices["confirmed"] == TOKENS and devices["waiting"] == ELIGIBLE - TOKENS, devices

    eventually(all_confirmed, 30)


def test_upload_of_a_missing_file_fails_in_one_line(cli, tmp_path: Path):
    code, out, err = cli("upload", str(tmp_path / "nope.zip"))
    assert code == 1 and out == ""
    assert "no such file" in one_line_error(err) and "nope.zip" in err


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_summary_as_a_table_and_as_json(cli):
    code, out, err = cli("summary")
    assert code == 0, err
    assert re.search(r"^\s+confirmed\s+20$", out, re.M), out
    assert re.search(r"^LOW STOCK\s+(yes|no)", out, re.M)
    assert "incoming/first export.zip" in out and "processed" in out

    data = json_of(cli, "summary")
    assert data["tokens"]["confirmed"] == TOKENS and data["tokens"]["available"] == 0
    assert data["recent_imports"][0]["tokens_added"] == TOKENS


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_devices_follows_the_cursor_across_pages(cli, arrived):
    data = json_of(cli, "devices", "--state", "confirmed", "--page-size", "3")
    ids = [d["device_id"] for d in data["devices"]]
    assert len(ids) == TOKENS == len(set(ids))
    assert {d["state"] for d in data["devices"]} == {"confirmed"}
    assert data["cursor"] is None
    lists = [path for method, path, _ in arrived if path == "/devices"]
    assert len(lists) == 7  # ceil(20 / 3) pages, each after the previous one's cursor

    limited = json_of(cli, "devices", "--state", "confirmed", "--limit", "5", "--page-size", "2")
    assert [d["device_id"] for d in limited["devices"]] == ids[:5]
    assert limited["cursor"]  # stopped early: more to read

    code, out, err = cli("devices", "--state", "confirmed")
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].split()[:4] == ["DEVICE", "STATE", "TOKEN", "FINGERPRINT"]
    assert {row.split()[0] for row in rows[1:]} == set(ids)
    assert "20 devices" in err


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_find_sends_the_hash_of_an_auth_token_never_the_token(stack, cli, arrived):
    device_id, token = next(iter(device_ledgers(stack).items()))

    code, out, err = cli("find", token)
    assert code == 0, err
    assert re.search(rf"^device\s+{device_id}$", out, re.M), out
    assert re.search(rf"^token id\s+{token_id(token)}$", out, re.M)
    assert token not in out + err
    paths = [path for _, path, _ in arrived]
    assert f"/tokens/{token_id(token)}" in paths
    assert not any(token in path for path in paths)

    answer = json_of(cli, "device", token)  # a device by a token it holds
    assert answer["device_id"] == device_id
    assert answer["qr_token"] == SAMPLE[token].qr_token
    assert token not in json.dumps(answer)


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it", or_later=True)
def test_reveal_prints_only_the_token(stack, cli):
    device_id, token = next(iter(device_ledgers(stack).items()))
    code, out, err = cli("reveal", device_id)
    assert code == 0, err
    assert out == f"{token}\n"


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_labels_writes_one_qr_image_per_delivered_or_confirmed_device(cli, tmp_path: Path):
    pdf = tmp_path / "labels.pdf"
    code, out, err = cli("labels", "-o", str(pdf))
    assert code == 0, err
    assert "labels: 20/20" in err
    assert f"wrote 20 labels to {pdf}" in out

    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type /Page\b", data)) == 1  # 20 labels fit one 3 x 8 sheet
    assert len(re.findall(rb"/Subtype /Image", data)) == TOKENS  # every QR differs: no image shared
    text = b"".join(_inflate(s) for s in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S))
    for device in json_of(cli, "devices", "--state", "confirmed")["devices"]:
        assert f"({device['device_id']}) Tj".encode() in text
        assert f"(SN {device['serial_number']}) Tj".encode() in text


def _inflate(stream: bytes) -> bytes:
    try:
        return zlib.decompress(stream)
    except zlib.error:  # an image stream, not a page's content
        return b""


@STORY.step
def test_transfer_and_revoke_change_the_devices_state(stack: LocalStack):
    cli = cli_for(stack)
    held = device_ledgers(stack)
    old, moved_token = next(iter(held.items()))
    waiting = json_of(cli, "devices", "--state", "waiting")["devices"]
    new = waiting[0]["device_id"]

    code, out, err = cli("transfer", old, new)
    assert code == 0, err
    assert f"from {old} (clearing: its Ledger is cleared, then it is retired) to {new} (pending)" in out

    def moved():
        assert json_of(cli, "device", old)["state"] == "retired"
        replacement = json_of(cli, "device", new)
        assert replacement["state"] == "confirmed"
        assert replacement["token"]["token_id"] == token_id(moved_token)

    eventually(moved, 30)

    holder, revoked = next((d, t) for d, t in device_ledgers(stack).items() if d not in (old, new))
    code, out, err = cli("revoke", SAMPLE[revoked].qr_token)
    assert code == 0, err
    assert f"device {holder}: its Ledger is cleared, then it gets a fresh token" in out
    assert revoked not in out

    def back_to_waiting():
        device = json_of(cli, "device", holder)
        assert device["state"] == "waiting" and device["token"] is None, device

    eventually(back_to_waiting, 30)
    assert json_of(cli, "find", revoked)["state"] == "revoked"


def test_an_unknown_device_is_one_line_on_stderr(cli):
    code, out, err = cli("device", UNKNOWN_DEVICE)
    assert code == 1 and out == ""
    line = one_line_error(err)
    assert f"device {UNKNOWN_DEVICE} is unknown" in line and "404" in line

    code, _, err = cli("reveal", "not-a-device")
    assert code == 1 and "not a device id" in one_line_error(err)


def test_usage_errors_are_one_line_with_exit_status_2_and_help_goes_to_the_given_stream():
    code, out, err = tokenflow("devices", "--state", "bogus")
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert "'--state'" in line and "bogus" in line and line.endswith("(see tokenflow devices --help)")

    code, out, err = tokenflow()
    assert code == 2 and "Missing command" in one_line_error(err)

    code, out, err = tokenflow("labels", "--help")
    assert code == 0 and err == ""
    assert out.startswith("Usage: tokenflow labels [OPTIONS]") and "--output" in out


def test_an_unreachable_api_is_one_line_on_stderr(stack):
    code, _, err = tokenflow("--api-url", "http://127.0.0.1:9", "--no-sign", "summary")
    assert code == 1 and "cannot reach the API" in one_line_error(err)


def test_signed_requests_reach_the_api_with_sigv4_headers(cli, arrived):
    # The stack exports its (dummy) credentials and region, as a user's shell would hold real ones.
    code, _, err = cli("summary", sign=True)
    assert code == 0, err
    headers = next(h for _, path, h in arrived if path == "/summary")
    assert re.match(
        r"AWS4-HMAC-SHA256 Credential=tokenflow-local/\d{8}/us-east-1/execute-api/aws4_request, ",
        headers["authorization"],
    )
    assert "x-amz-date" in headers


@STORY.step
def test_a_bare_csv_gives_tokens_without_qr_images_and_labels_skip_them(stack: LocalStack, tmp_path: Path):
    cli = cli_for(stack)
    waiting = json_of(cli, "summary")["devices"]["waiting"]
    export = tmp_path / "top-up.CSV"  # the key gets a lower-case suffix, which the S3 filter needs
    export.write_text(csv_text(make_tokens(waiting, seed=2)))
    code, out, err = cli("upload", str(export), "--timeout", "60")
    assert code == 0, err
    assert re.search(rf"^tokens added\s+{waiting}$", out, re.M), out
    assert re.search(r"^file\s+incoming/top-up\.csv$", out, re.M), out

    def topped_up():
        devices = json_of(cli, "summary")["devices"]
        assert devices["waiting"] == 0 and devices["delivered"] == 0, devices

    eventually(topped_up, 30)
    confirmed = json_of(cli, "summary")["devices"]["confirmed"]

    result = json_of(cli, "labels", "-o", str(tmp_path / "labels.pdf"))
    assert result == {
        "file": str(tmp_path / "labels.pdf"),
        "labels": confirmed - waiting,
        "skipped_without_qr": waiting,
    }
    data = (tmp_path / "labels.pdf").read_bytes()
    assert len(re.findall(rb"/Subtype /Image", data)) == confirmed - waiting


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it", or_later=True)
def test_uploading_the_same_file_again_reports_the_first_import(cli, tmp_path: Path):
    export = tmp_path / "again.zip"
    export.write_bytes(make_export(TOKENS, seed=1))
    code, out, err = cli("upload", str(export), "--timeout", "30")
    assert code == 0, err
    assert "imported before as incoming/first export.zip" in err
    assert re.search(r"^file\s+incoming/first export\.zip$", out, re.M), out


def test_the_api_url_and_bucket_come_from_the_stack_outputs(stack, cli):
    cloudformation = stack.client("cloudformation")
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "ApiUrl": {"Value": stack.api_url},
            "ExportsBucketName": {"Value": stack.bucket},
        },
    }
    cloudformation.create_stack(StackName="tokenflow-cli", TemplateBody=json.dumps(template))
    cloudformation.create_stack(
        StackName="tokenflow-bare", TemplateBody=json.dumps({"Resources": template["Resources"]})
    )
    aws = ["--aws-endpoint", stack.aws_url, "--no-sign", "--json"]

    code, out, err = tokenflow(*aws, "--stack", "tokenflow-cli", "summary")
    assert code == 0, err
    assert set(json.loads(out)) >= {"tokens", "devices", "low_stock"}

    code, _, err = tokenflow(*aws, "--stack", "tokenflow-bare", "summary")
    assert code == 1 and "stack tokenflow-bare has no output ApiUrl" in one_line_error(err)

    code, _, err = tokenflow(*aws, "--stack", "no-such-stack", "summary")
    assert code == 1 and "no-such-stack" in one_line_error(err)


def test_missing_credentials_are_one_line_on_stderr(monkeypatch, tmp_path: Path):
    # A named profile without keys: botocore then ignores the key variables the stack's threads use.
    config = tmp_path / "config"
    config.write_text("[profile keyless]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out, err = tokenflow("--api-url", "http://127.0.0.1:9", "--profile", "keyless", "summary")
    assert code == 1 and out == ""
    assert "no AWS credentials" in one_line_error(err)


# ---- the CLI as a process: pipes, terminals, completion, the console --------------------------------


def process_env(**changes: str | None) -> dict[str, str]:
    """This process's environment without the variables that choose colour, then ``changes``."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update({k: v for k, v in changes.items() if v is not None})
    return env


def in_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with its stdout on a pseudo-terminal 400 columns wide; (exit status, what it showed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.DEVNULL, env=env
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the process closed its end of the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return process.wait(timeout=60), shown.decode().replace("\r\n", "\n")


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_tables_are_coloured_on_a_terminal_and_plain_with_no_color_or_off_a_terminal(stack):
    argv = [*TOKENFLOW, "--api-url", stack.api_url, "--no-sign", "devices", "--state", "confirmed"]
    ids = {d["device_id"] for d in json_of(cli_for(stack), "devices", "--state", "confirmed")["devices"]}

    code, coloured = in_terminal(argv, process_env())
    assert code == 0 and ESCAPE in coloured  # bold headers, states in colour
    assert ids <= set(re.findall(r"\b[0-9a-f]{24}\b", coloured))

    code, plain = in_terminal(argv, process_env(NO_COLOR="1"))
    assert code == 0 and ESCAPE not in plain, plain
    assert plain.splitlines()[0].split()[:4] == ["DEVICE", "STATE", "TOKEN", "FINGERPRINT"]
    assert {row.split()[0] for row in plain.splitlines()[1:]} == ids

    # A pipe is no terminal, whatever FORCE_COLOR says: one row per line, nothing but text.
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=process_env(FORCE_COLOR="1"))
    assert piped.returncode == 0 and ESCAPE not in piped.stdout + piped.stderr
    assert {row.split()[0] for row in piped.stdout.splitlines()[1:]} == ids
    assert all(row == row.rstrip() for row in piped.stdout.splitlines())
    assert piped.stderr == "20 devices\n"


@pytest.mark.parametrize(
    "argv", [["devices"], ["--json", "summary"], ["--help"]], ids=["table", "json", "help"]
)
def test_a_closed_stdout_pipe_ends_quietly(stack, argv):
    # `tokenflow devices | head -1`: the reader is gone before the answer is written (here before
    # the process even starts, so the write always meets the closed pipe).
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [*TOKENFLOW, "--api-url", stack.api_url, "--no-sign", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=process_env(),
        )
    finally:
        os.close(write)
    assert done.stderr == ""  # no traceback, no "Broken pipe" line
    assert done.returncode == 1


def test_shell_completion_script_and_answers_come_from_the_cli():
    script = subprocess.run(
        TOKENFLOW,
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(_TOKENFLOW_COMPLETE="bash_source"),
    )
    assert script.returncode == 0, script.stderr
    assert "complete -o nosort -F _tokenflow_completion tokenflow" in script.stdout
    assert "_TOKENFLOW_COMPLETE=bash_complete" in script.stdout

    # What bash asks when the user presses Tab after `tokenflow devices --state c`.
    answer = subprocess.run(
        TOKENFLOW,
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(
            _TOKENFLOW_COMPLETE="bash_complete", COMP_WORDS="tokenflow devices --state c", COMP_CWORD="3"
        ),
    )
    assert answer.returncode == 0, answer.stderr
    assert sorted(answer.stdout.split()) == ["plain,clearing", "plain,confirmed"]


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_json_output_is_the_api_answer_byte_for_byte(stack, cli):
    api = stack.api_url
    qr = next(t.qr_token for t in SAMPLE.values())

    def same(path: str, *argv: str, wrap: Callable[[Any], Any] = lambda a: a) -> None:
        answer = requests.get(api + path, timeout=10).json()
        code, out, err = cli("--json", *argv)
        assert code == 0, err
        assert out == json.dumps(wrap(answer), indent=2, ensure_ascii=False) + "\n"

    same(f"/tokens/{qr}", "find", qr)
    same(f"/tokens/{qr}", "find", qr, "--json")  # --json after the command: the same bytes
    same("/imports?limit=20", "imports")
    # Waiting devices: the verify function's Blynk checks, every second here, touch confirmed ones.
    listing = ("/devices?state=waiting&limit=50", "devices", "--state", "waiting")
    eventually(lambda: same(*listing, wrap=lambda a: {**a, "cursor": None}), 20)


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_imports_lists_each_import_and_shows_one_by_the_start_of_its_id(cli):
    code, out, err = cli("imports")
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].split() == ["IMPORT", "STATUS", "ADDED", "KNOWN", "REJECTED", "FINISHED", "FILE"]
    short = rows[1].split()[0]
    assert len(short) == 12 and "processed" in rows[1] and rows[1].endswith("incoming/first export.zip")

    code, out, err = cli("imports", short)
    assert code == 0, err
    assert re.search(rf"^import\s+{short}[0-9a-f]{{52}}$", out, re.M), out
    assert re.search(r"^tokens added\s+20$", out, re.M), out

    code, out, err = cli("imports", "abc")
    assert code == 1 and out == "" and "64 hex characters" in one_line_error(err)


@pytest.mark.story_after("test_upload_waits_for_the_import_and_reports_it")
def test_the_device_list_shows_each_devices_qr_token_and_the_exports_columns(stack, cli):
    held = device_ledgers(stack)
    listed = json_of(cli, "devices", "--state", "confirmed")["devices"]
    assert {d["device_id"] for d in listed} == set(held)
    for device in listed:
        sample = SAMPLE[held[device["device_id"]]]
        assert device["qr_token"] == sample.qr_token
        assert device["metadata"] == {
            "Serial Number": sample.serial_number,
            "Device Name": sample.device_name,
        }

    code, out, err = cli("devices", "--state", "confirmed")
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].split()[:5] == ["DEVICE", "STATE", "TOKEN", "FINGERPRINT", "QR"]
    for row in rows[1:]:
        assert row.split()[4] == SAMPLE[held[row.split()[0]]].qr_token, row


def test_console_starts_the_web_console_or_says_in_one_line_why_not(stack):
    try:
        import tokenflow_cli.console.server  # noqa: F401 (is the console there to start?)
    except ImportError:
        code, out, err = tokenflow("--api-url", stack.api_url, "--no-sign", "console", "--port", "0")
        assert code == 1 and out == ""
        assert "the web console is not available" in one_line_error(err)
        return
    port = free_port()
    process = subprocess.Popen(
        [*TOKENFLOW, "--api-url", stack.api_url, "--no-sign", "console", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(),
    )
    try:

        def serving() -> None:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            except requests.ConnectionError:
                raise AssertionError("not listening yet") from None
            assert response.status_code == 200

        eventually(serving, 30)
    finally:
        process.send_signal(2)  # Ctrl-C
        code = process.wait(timeout=30)
    assert code == 0, process.stderr.read() if process.stderr else ""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@STORY.step
def test_a_top_up_with_local_upload_serves_new_devices_and_wait_sees_the_fleet_served(
    stack: LocalStack, tmp_path: Path
):
    # The README's top-up: new devices join the product, an export goes up with `tokenflow --local
    # upload` (the local stack's bucket and any keys), and `tokenflow wait` returns once all are served.
    assert stack.bucket == LOCAL_BUCKET
    cli = cli_for(stack)
    before = json_of(cli, "summary")["devices"]
    sim_api(stack, "/devices", "POST", json={"count": 3})

    def new_devices_wait():
        assert json_of(cli, "summary")["devices"]["waiting"] == before["waiting"] + 3

    eventually(new_devices_wait, 30)
    # Three tokens and a row whose token is one character short: the import takes three, rejects one.
    export = tmp_path / "more.csv"
    broken = "Q" * 31
    export.write_text(csv_text(make_tokens(3, seed=7)) + f"{broken},sqr_{'q' * 32},SN-X,Pump X\r\n")
    local = ["--local", "--api-url", str(stack.api_url), "--aws-endpoint", stack.aws_url]

    code, out, err = tokenflow(*local, "upload", str(export), "--timeout", "60")
    assert code == 0, err
    assert re.search(r"^tokens added\s+3$", out, re.M), out
    assert re.search(r"^rows rejected\s+1$", out, re.M), out
    import_id = re.search(r"^import\s+([0-9a-f]{64})$", out, re.M)
    assert import_id, out

    code, out, err = tokenflow(*local, "imports", import_id[1][:12])
    assert code == 0, err
    rejected = out.split("REJECTED ROWS\n", 1)[1].splitlines()
    assert rejected[0].split() == ["ROW", "TOKEN", "REASON"] and rejected[1].split()[0] == "5", out
    assert broken not in out  # the report masks the rejected row's token too

    code, out, err = tokenflow(*local, "wait", "--timeout", "60")
    assert code == 0, err
    devices = json_of(cli, "summary")["devices"]
    assert devices["confirmed"] == before["confirmed"] + 3 and devices["waiting"] == before["waiting"]
    assert f"confirmed: {devices['confirmed']}/{devices['confirmed']}" in err
    assert out.startswith("fleet served: ") and f"{devices['confirmed']} confirmed" in out
