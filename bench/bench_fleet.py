"""Fleet benchmark: the whole local stack (functions in the local Lambda runtime, moto, the Particle
simulator) serving a product of ``--devices`` devices from one export of as many tokens.

    make bench-fleet                                    # 100,000 devices at Particle's own limit
    .venv/bin/python bench/bench_fleet.py --devices 10000 --rate-scale 1

The product lists 100 devices a page. Particle's rate limit (10,000 requests per 5 minutes) is scaled
by ``--rate-scale`` (the window shortened by that factor) so that a run takes minutes, and
``--faults`` of the simulator's answers (default 2 %) are errors (500, 502, 503 or 429). An export
of one token per device is dropped under ``incoming/``; ingest stores it and starts the sweep, the
sweep lists the product and queues the devices, assign writes their Ledgers. The run ends when every
device holds a delivered token (or ``--deadline`` passes).

The sweep's schedule: the local stack ticks every 5 s (a run continues a pass that stopped on its
time budget at the next tick), and a new full pass starts at most once per ``--sweep-period``
seconds (SweepSchedule's default, ten minutes, divided by the rate scale like Particle's window),
as the deployed sweep paces its passes (``SWEEP_SCHEDULE``, ``tokenflow.settings.pass_interval``).

What is counted, and where:
- Particle requests: the simulator's own counters (every request, errors and 429s included);
- DynamoDB calls and SQS messages: every request reaching the embedded moto server (a WSGI wrapper
  around it), SQS messages as the entries sent to the assign queue;
- Lambda invocations, their durations and billed GB-seconds: every call of the local runtime's
  ``invoke``, with the function's MemorySize and Timeout from template.yaml;
- duplicates: tokens held by more than one device, read from the table at the end.

The last line of output is one JSON object, also written to bench/results/fleet-<devices>.json
(fleet-<devices>-rate<scale>.json at another rate scale than 1).
Prices (us-east-1, x86, on-demand; public price pages, 2026): Lambda $0.20 per million requests and
$0.0000166667 per GB-second; DynamoDB on-demand $0.625 per million write request units and $0.125
per million read request units (a transactional write counts twice; counted here as calls, one
unit each, which undercounts items over 1 KB and transactions); SQS $0.40 per million requests.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

PARTICLE_LIMIT = 10_000  # requests per 5 minutes (Particle's documented API rate limit)
PARTICLE_WINDOW = 300.0
PAGE = 100
LAMBDA_REQUEST_PRICE = 0.20 / 1e6
LAMBDA_GB_SECOND_PRICE = 0.0000166667
DYNAMODB_WRITE_PRICE = 0.625 / 1e6
DYNAMODB_READ_PRICE = 0.125 / 1e6
SQS_REQUEST_PRICE = 0.40 / 1e6
_DYNAMODB_WRITES = {"TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}

os.environ.update(
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
)


class AwsCounts:
    """Counts the requests that reach the embedded moto server, by service and operation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dynamodb: Counter[str] = Counter()
        self.sqs: Counter[str] = Counter()
        self.assign_messages = 0

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.dynamodb)

    def install(self) -> None:
        from tokenflow_local import embedded_aws

        counts = self
        original = embedded_aws._SerialisedRequests.__call__

        def counted(wrapper: Any, environ: dict[str, Any], start_response: Any) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if target.startswith("DynamoDB_"):
                with counts.lock:
                    counts.dynamodb[target.split(".", 1)[-1]] += 1
            elif target.startswith("AmazonSQS."):
                operation = target.split(".", 1)[-1]
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = environ["wsgi.input"].read(length) if length else b""
                environ["wsgi.input"] = io.BytesIO(body)  # the server reads it again
                with counts.lock:
                    counts.sqs[operation] += 1
                    if operation in {"SendMessage", "SendMessageBatch"} and b"AssignQueue" in body:
                        request = json.loads(body or b"{}")
                        counts.assign_messages += len(request.get("Entries", [])) or 1
            return original(wrapper, environ, start_response)

        embedded_aws._SerialisedRequests.__call__ = counted  # type: ignore[method-assign]


class Invocations:
    """Every invocation of the local runtime: function, duration; with the functions' limits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[tuple[str, float]] = []
        self.running: dict[int, tuple[str, float]] = {}  # by id of the call: function, start

    def until_now(self) -> list[tuple[str, float]]:
        """The invocations of the run so far: the finished ones, and each still running for as long
        as it has run. Taken at the end of the measured period, so that what runs after it (the
        next sweep pass, starved by this benchmark's own scan of the table for duplicates, and cut
        by the stack's stop) is not the run's."""
        now = time.perf_counter()
        with self.lock:
            return self.records + [(name, now - started) for name, started in self.running.values()]

    def install(self) -> None:
        from tokenflow_local import lambda_runtime

        original = lambda_runtime.invoke
        records = self

        def timed(name: str, event: dict[str, Any], **kwargs: Any) -> Any:
            started, call = time.perf_counter(), object()
            with records.lock:
                records.running[id(call)] = (name, started)
            try:
                return original(name, event, **kwargs)
            finally:
                with records.lock:
                    del records.running[id(call)]
                    records.records.append((name, time.perf_counter() - started))

        lambda_runtime.invoke = timed  # type: ignore[assignment]


def served(store: Any) -> int:
    devices = store.summary()["devices"]
    return int(devices.get("delivered", 0)) + int(devices.get("confirmed", 0))


def duplicates(store: Any) -> int:
    """Tokens held by more than one device, read from every device item."""
    client, holders = store.client, Counter()
    for page in client.get_paginator("scan").paginate(
        TableName=store.table,
        FilterExpression="kind = :d",
        ExpressionAttributeValues={":d": {"S": "device"}},
    ):
        for item in page["Items"]:
            if "token_id" in item:
                holders[item["token_id"]["S"]] += 1
    return sum(n - 1 for n in holders.values() if n > 1)


def run(
    devices: int,
    rate_scale: float,
    faults: float,
    deadline: float,
    sweep_period: float,
    pacing: bool = True,
) -> dict[str, Any]:
    from tokenflow.store import Store
    from tokenflow.store.sweep_state import SweepState
    from tokenflow_local.lambda_runtime import function_limits
    from tokenflow_local.sample_export import make_export
    from tokenflow_local.stack import LocalStack

    aws, invocations = AwsCounts(), Invocations()
    aws.install()
    invocations.install()
    export = make_export(devices, real_qr=False)
    schedule = f"rate({sweep_period / rate_scale:g} seconds)"

    class FleetStack(LocalStack):
        """The local stack with the scaled schedule, whose schedule and pollers start only once the
        pass the import starts is under way (``release``): the run measures a product served from
        an export, not a product listed before its tokens exist, nor a schedule tick coinciding
        with the import (the local tick comes every 5 s, so it always would: its pass would list
        the fleet, and the import's pass list it again, as it must for a pass begun before the
        tokens were stored)."""

        held = True

        def environment(self) -> dict[str, str]:
            # The local tick keeps continuing passes; new passes come at the scaled schedule's pace.
            # Warnings and errors only, as this module's own environment asks: an INFO line per
            # claim is the benchmark's CPU, not the fleet's.
            # The deployed pacing (template.yaml: the assign function's share of Particle's limit),
            # told the scaled window; one client here: every function of the stack runs in this
            # process and shares one Particle client (tokenflow.wiring), where in AWS each of the
            # AssignMaxConcurrency invocations has its own and the share is divided among them.
            pace = {"PARTICLE_RATE_WINDOW": f"{PARTICLE_WINDOW / rate_scale:g}", "PARTICLE_RATE_CLIENTS": "1"}
            if not pacing:
                pace["PARTICLE_RATE_SHARE"] = "0"
            return {
                **super().environment(),
                **pace,
                "SWEEP_SCHEDULE": schedule,
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }

        def _start_triggers(self) -> None:
            if not self.held:
                super()._start_triggers()

        def release(self) -> None:
            self.held = False
            self._start_triggers()

    stack = FleetStack(
        aws_port=0,
        api_port=0,
        particle_port=0,
        devices=devices,
        quarantined=0,
        devices_per_page=PAGE,
        simulate_devices=False,
        # The verify function runs on the sweep's schedule in AWS: once per (scaled) period here too.
        verify_interval=sweep_period / rate_scale,
    )
    with stack:
        sim = stack.simulator
        assert sim is not None
        window = PARTICLE_WINDOW / rate_scale
        sim.set_rate_limit(PARTICLE_LIMIT, window)
        sim.set_faults(error_rate=faults, seed=1)
        store = Store(stack.table, stack.client("dynamodb"))
        before = aws.snapshot()  # the stack's own set-up (tables, queues) is not the fleet's
        started = time.monotonic()
        stack.client("s3").put_object(Bucket=stack.bucket, Key="incoming/fleet.zip", Body=export)
        sweep_state = SweepState(store.db)
        while time.monotonic() - started < deadline and not (sweep_state.get() or {}).get("pass_id"):
            time.sleep(0.5)  # ingest stores the export and starts the sweep, whose pass queues the fleet
        stack.release()
        done = 0
        while time.monotonic() - started < deadline:
            done = served(store)
            if done >= devices:
                break
            # The process's cyclic garbage collector, not the fleet: moto's tables, queues and the
            # simulated fleet are millions of long-lived objects in this one process, and with 100,000
            # devices the collector's passes over them took 83 % of the interpreter's time (py-spy
            # --gil --native: gc_collect_main) and the run slowed from 28 to 20 devices a second. Every
            # object alive now is moved out of its view (gc.freeze); in AWS each function runs in a
            # process of its own with a heap of a few megabytes, and the tables and queues are services.
            gc.freeze()
            time.sleep(2.0)
        wall = time.monotonic() - started
        ran = invocations.until_now()
        stats = sim.stats()
        dynamodb_ops = aws.snapshot() - before - Counter(store.calls.counts)  # less this loop's reads
        dupes = duplicates(store)
    limits = function_limits()
    pages = math.ceil(devices / PAGE)
    bound = (devices + pages) / (PARTICLE_LIMIT / window)
    list_requests = sum(
        n for r, n in stats["requests"].items() if r.startswith("GET") and r.endswith("/devices")
    )
    per_function: dict[str, list[float]] = {}
    for name, seconds in ran:
        per_function.setdefault(name, []).append(seconds)
    gb_seconds = sum(
        # Lambda bills each invocation's duration rounded up to the millisecond, times its memory
        math.ceil(s * 1000) / 1000 * limits.get(name, (0, 128))[1] / 1024
        for name, s in ran
    )
    longest = max(
        ((s / limits.get(name, (300.0, 128))[0], name, s) for name, s in ran),
        default=(0, "", 0),
    )
    dynamodb_calls = sum(dynamodb_ops.values())
    writes = sum(n for op, n in dynamodb_ops.items() if op in _DYNAMODB_WRITES)
    cost = (
        len(ran) * LAMBDA_REQUEST_PRICE
        + gb_seconds * LAMBDA_GB_SECOND_PRICE
        + writes * DYNAMODB_WRITE_PRICE
        + (dynamodb_calls - writes) * DYNAMODB_READ_PRICE
        + sum(aws.sqs.values()) * SQS_REQUEST_PRICE
    )
    per = max(done, 1)
    return {
        "devices": devices,
        "devices_served": done,
        "duplicates": dupes,
        "wall_seconds": round(wall, 1),
        "rate_limit_bound_seconds": round(bound, 1),
        "wall_over_bound": round(wall / bound, 3),
        "particle_requests": stats["total"],
        "particle_requests_per_device": round(stats["total"] / per, 4),
        "particle_statuses": stats["statuses"],
        "list_requests": list_requests,
        "list_requests_per_full_pass": pages,
        "sqs_messages_per_device": round(aws.assign_messages / per, 3),
        "sqs_requests": dict(aws.sqs),
        "dynamodb_calls_per_device": round(dynamodb_calls / per, 3),
        "dynamodb_calls": dict(dynamodb_ops),
        "lambda_invocations_per_1000_devices": round(1000 * len(ran) / per, 1),
        "lambda_invocations": {name: len(v) for name, v in per_function.items()},
        "billed_gb_seconds_per_1000_devices": round(1000 * gb_seconds / per, 2),
        "max_invocation_over_timeout": round(longest[0], 3),
        "max_invocation": {"function": longest[1], "seconds": round(longest[2], 1)},
        "cost_per_10000_devices_usd": round(10_000 * cost / per, 4),
        "rate_scale": rate_scale,
        "faults": faults,
        "sweep_schedule": schedule,
        "pacing": pacing,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    # 1: Particle's own limit, which this project's 2-core machine keeps pace with at 100,000
    # devices (bench/README.md, "Fleet"); below 1 the limit binds harder and the run is longer.
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--faults", type=float, default=0.02)
    parser.add_argument("--deadline", type=float, default=6 * 3600.0, help="seconds before giving up")
    parser.add_argument(
        "--sweep-period",
        type=float,
        default=600.0,
        help="SweepSchedule period in seconds (divided by --rate-scale): new sweep passes at most this often",
    )
    parser.add_argument(
        "--no-pacing",
        action="store_true",
        help="the assign client not paced to its share of the limit (429s only); results file -nopacing",
    )
    args = parser.parse_args()
    pacing = not args.no_pacing
    result = run(args.devices, args.rate_scale, args.faults, args.deadline, args.sweep_period, pacing)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Particle's own limit: fleet-<devices>.json; another rate scale: fleet-<devices>-rate<scale>.json.
    scale = ("" if args.rate_scale == 1 else f"-rate{args.rate_scale:g}") + ("" if pacing else "-nopacing")
    (RESULTS / f"fleet-{args.devices}{scale}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if result["devices_served"] == args.devices and result["duplicates"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
