"""``make run``: the whole of Tokenflow on this machine, with a sample export and a simulated fleet.

    python -m tokenflow_local.run --devices 25 --tokens 30 \
        [--api-port 3000 --aws-port 4566 --particle-port 4000]

Starts the local stack (tokenflow_local.stack), drops a sample Blynk export into the bucket's
``incoming/`` prefix exactly as an operator would, shows the devices getting and confirming their
tokens, prints the summary, then keeps serving with the URLs to try until Ctrl-C. The functions' own
JSON logs and metrics go to ``.local-state/functions.log``; the stack's addresses to
``.local-state/stack.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any

import requests

from tokenflow_local import persistence
from tokenflow_local.stack import LocalStack, PortInUse

STATE_DIR = Path(__file__).resolve().parents[2] / ".local-state"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tokenflow_local.run",
        description="Run Tokenflow locally: embedded AWS, Particle simulator, functions, API and devices.",
    )
    parser.add_argument("--devices", type=int, default=25, help="devices in the product (default 25)")
    parser.add_argument("--quarantined", type=int, default=1, help="of which quarantined (default 1)")
    parser.add_argument("--tokens", type=int, default=30, help="tokens in the sample export (default 30)")
    parser.add_argument("--per-page", type=int, default=10, help="devices per list page (default 10)")
    parser.add_argument("--api-port", type=int, default=3000)
    parser.add_argument("--aws-port", type=int, default=4566)
    parser.add_argument("--particle-port", type=int, default=4000)
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=schedule_seconds(),
        help="seconds between scheduled sweeps (default: the template's SweepSchedule, "
        f"{schedule_seconds():.0f} s; an import and every device report start work without it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sample export seed (other seeds: other tokens)")
    parser.add_argument("--no-export", action="store_true", help="start empty; drop an export yourself")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help=f"forget the state the last run saved in {STATE_DIR / 'state'}, start clean (make run FRESH=1)",
    )
    parser.add_argument(
        "--in-process-aws",
        action="store_true",
        help="run the embedded AWS (moto) in this process instead of a process of its own (one core)",
    )
    parser.add_argument(
        "--exit-when-done", action="store_true", help="stop after the summary instead of serving (for CI)"
    )
    return parser.parse_args(argv)


# How the simulated devices pace themselves here: the firmware's own settings
# (firmware/src/tokenflow_config.h): readings every TOKENFLOW_PUBLISH_INTERVAL_MS (5 minutes), status
# reports without a token after TOKENFLOW_STATUS_FIRST_RETRY_MS (5 s), doubling up to
# TOKENFLOW_STATUS_MAX_RETRY_MS (10 minutes).
DATA_INTERVAL_S = 300.0
STATUS_FIRST_RETRY_S = 5.0
STATUS_MAX_RETRY_S = 600.0


def schedule_seconds() -> float:
    """The template's SweepSchedule default (``rate(10 minutes)``) in seconds."""
    from tokenflow_local import resources

    expression = str(resources.parameter_defaults().get("SweepSchedule") or "rate(10 minutes)")
    match = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        return 600.0
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match[2].rstrip("s")]
    return float(int(match[1]) * unit)


class Console:
    """Progress for a person: one line rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = ""

    def say(self, text: str = "") -> None:
        if self._last and self.tty:
            self.out.write("\n")
        self._last = ""
        self.out.write(text + "\n")
        self.out.flush()

    def progress(self, text: str) -> None:
        if text == self._last:
            return
        if self.tty:
            self.out.write("\r\033[K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()
        self._last = text


def summary(stack: LocalStack) -> dict[str, Any]:
    """The summary as the API answers it (the store's own when the API is not served)."""
    if stack.api_url:
        response = requests.get(f"{stack.api_url}/summary", timeout=10)
        response.raise_for_status()
        return response.json()
    from tokenflow.store import Store

    return Store(stack.table, stack.client("dynamodb")).summary()


def counts(data: dict[str, Any], kind: str) -> dict[str, int]:
    section = data.get(kind) or {}
    return {k: int(v) for k, v in section.items() if isinstance(v, int | float)}


def watch_progress(stack: LocalStack, console: Console, expected: int, timeout: float) -> bool:
    """Show the fleet's progress until ``expected`` devices are confirmed (or delivered, without devices)."""
    goal = "confirmed" if stack.fleet is not None else "delivered"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = summary(stack)
        tokens, devices = counts(data, "tokens"), counts(data, "devices")
        done = devices.get(goal, 0)
        # The verify function's last complete pass (none before its first): live in Blynk.
        live = (data.get("liveness") or {}).get("live", 0)
        console.progress(
            f"  tokens: {sum(tokens.values())} imported, {tokens.get('available', 0)} available   "
            f"devices: {devices.get('pending', 0)} pending, {devices.get('delivered', 0)} delivered, "
            f"{devices.get('confirmed', 0)} confirmed ({live} live in Blynk), "
            f"{devices.get('waiting', 0)} waiting, "
            f"{devices.get('failed', 0)} failed   [{done}/{expected} {goal}]"
        )
        if done >= expected:
            console.say()
            return True
        time.sleep(0.5)
    console.say()
    return False


def write_state(stack: LocalStack) -> Path:
    STATE_DIR.mkdir(exist_ok=True)
    path = STATE_DIR / "stack.json"
    path.write_text(
        json.dumps(
            {
                "api_url": stack.api_url,
                "aws_endpoint_url": stack.aws_url,
                "particle_url": stack.particle_url,
                "bucket": stack.bucket,
                "table": stack.table,
                "queues": stack.queues,
                "region": "us-east-1",
                "webhook_secret_parameter": stack.parameters["WebhookSecretParameter"],
            },
            indent=2,
        )
        + "\n"
    )
    return path


def print_urls(stack: LocalStack, console: Console, first_device: str | None) -> None:
    api = stack.api_url or "(not served)"
    aws = f"aws --endpoint-url {stack.aws_url} --region us-east-1"
    device = first_device or "<device id>"
    lines = [
        "",
        "Tokenflow is running locally. Try:",
        f"  HTTP API        {api}",
        f"  Swagger UI      {api}/swagger",
        f"  OpenAPI         {api}/openapi.json",
        f"  Particle sim    {stack.particle_url}   (control API: {stack.particle_url}/_sim/stats)",
        f"  Embedded AWS    {stack.aws_url}   (bucket {stack.bucket}, any access key works)",
        "",
        f"  curl -s {api}/summary",
        f"  curl -s '{api}/devices?state=confirmed'",
        f"  curl -s {api}/devices/{device}",
        f"  curl -s -o label.png {api}/devices/{device}/qr",
        f"  curl -s -X POST {api}/tokens/<token id>/revoke",
        "  tokenflow --local summary",
        "  tokenflow --local devices --state waiting",
        "",
        "  More tokens (another seed gives other tokens):",
        "    .venv/bin/python -m tokenflow_local.sample_export --tokens 20 --seed 7 -o more.zip",
        f"    {aws} s3 cp more.zip s3://{stack.bucket}/incoming/more.zip",
        f"    {aws} s3 ls --recursive s3://{stack.bucket}/",
        "  More devices:",
        f"    curl -s -X POST {stack.particle_url}/_sim/devices -d '{{\"count\": 5}}'",
        "",
        f"  The webhook secret of this run: {stack.webhook_secret}",
        f"  Function logs: {STATE_DIR / 'functions.log'}",
        "",
        "Ctrl-C stops everything.",
    ]
    for line in lines:
        console.say(line)


class SampleExport:
    """The sample export's bytes, made in a process of its own while the stack starts.

    Drawing 1,000 QR codes takes seconds of CPU: in another process they use the second core instead
    of slowing the stack's start. The same tokens make the same bytes (``sample_export``), so the zip
    is kept in ``.local-state/exports/`` and later runs read it back."""

    def __init__(self, tokens: int, seed: int) -> None:
        self.path = STATE_DIR / "exports" / f"sample-export-{seed}-{tokens}.zip"
        self._pool: ProcessPoolExecutor | None = None
        self._future: Future[bytes] | None = None
        if not self.path.is_file():
            from tokenflow_local.sample_export import make_export

            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self._future = self._pool.submit(make_export, tokens, seed=seed)

    def bytes(self) -> bytes:
        if self._future is None:
            return self.path.read_bytes()
        data = self._future.result()
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(self.path)
        return data

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(sys.stdout)
    STATE_DIR.mkdir(exist_ok=True)
    export = None if args.no_export else SampleExport(args.tokens, args.seed)
    # The functions log JSON lines and EMF metrics to stdout, as in Lambda: send them to a file so
    # the terminal shows the story, not the logs. (Before any function is loaded.)
    log_file = (STATE_DIR / "functions.log").open("a", buffering=1)
    sys.stdout = log_file
    # Powertools warns on stderr when an invocation had no metric to flush: normal here, and noise.
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    console.say(
        f"Starting Tokenflow locally: {args.devices} devices ({args.quarantined} quarantined), "
        f"{args.per_page} per page, sample export of {args.tokens} tokens."
    )
    stack = LocalStack(
        aws_port=args.aws_port,
        api_port=args.api_port,
        particle_port=args.particle_port,
        devices=args.devices,
        quarantined=args.quarantined,
        devices_per_page=args.per_page,
        sweep_interval=args.sweep_interval,
        data_interval=DATA_INTERVAL_S,
        device_first_retry=STATUS_FIRST_RETRY_S,
        device_max_retry=STATUS_MAX_RETRY_S,
        state_dir=STATE_DIR / "state",
        fresh=args.fresh,
        aws_process=not args.in_process_aws,
        concurrent=True,
    )
    try:
        stack.start()
    except (PortInUse, persistence.StateError) as exc:
        console.say(f"error: {exc}")
        if export is not None:
            export.close()
        return 2
    try:
        write_state(stack)
        console.say(f"  embedded AWS on {stack.aws_url}, Particle simulator on {stack.particle_url}")
        console.say(f"  HTTP API on {stack.api_url or '(not served: no gateway or api function)'}")
        eligible = max(0, args.devices - args.quarantined)
        ok = True
        restored = stack.restored
        if restored is not None:
            console.say(
                f"Restored the last run's state from {STATE_DIR / 'state'}: {restored.devices} devices, "
                f"{restored.items} table items, {restored.objects} objects, {restored.messages} queued "
                "messages. Nothing is imported or assigned again. (make run FRESH=1 starts clean.)"
            )
        else:
            console.say(
                f"State is saved to {STATE_DIR / 'state'} when this run stops cleanly (Ctrl-C) and restored "
                "by the next `make run` (FRESH=1 starts clean; a killed run keeps the last saved state)."
            )
        if export is not None and restored is None:
            from tokenflow_local.sample_export import make_tokens

            # The export's tokens exist in the Blynk simulator, in the stack's region.
            stack.register_blynk_tokens(t.token for t in make_tokens(args.tokens, seed=args.seed))
            key = f"incoming/sample-export-{args.seed}.zip"
            stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=export.bytes())
            console.say(f"Dropped a sample export of {args.tokens} tokens at s3://{stack.bucket}/{key}")
            expected = min(eligible, args.tokens)
            ok = watch_progress(stack, console, expected, timeout=60 + 0.2 * args.devices)
            if not ok:
                console.say("  (not every device finished in time: see the summary and the function logs)")
            if eligible > args.tokens:
                console.say(
                    f"  {eligible - args.tokens} devices wait for tokens: drop another export to top them up."
                )
        elif args.no_export:
            console.say(
                f"No sample export dropped (--no-export): the {eligible} devices wait for tokens. Upload an "
                "export to serve them: .venv/bin/tokenflow --local upload <export.zip>"
            )
        console.say("Summary:")
        console.say(json.dumps(summary(stack), indent=2, default=str))
        first = next((d["id"] for d in stack.simulator.devices() if not d["quarantined"]), None)
        if args.exit_when_done:
            return 0 if ok and not stack.errors else 1
        print_urls(stack, console, first)
        try:
            while not stopping.wait(1):
                pass
        except KeyboardInterrupt:
            pass
        console.say("\nStopping...")
        return 0
    finally:
        if export is not None:
            export.close()
        stack.stop()
        console.say("Stopped.")
        sys.stdout = sys.__stdout__
        log_file.close()


if __name__ == "__main__":
    raise SystemExit(main())
