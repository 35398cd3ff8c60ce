"""Assignment benchmark: sweep + assign workers against the Particle simulator and in-process moto.

    .venv/bin/python bench/bench_assign.py [--devices 10000] [--tokens 10000] [--latency 0.03]
                                           [--rate 100/3] [--workers 8] [--record]

A product of ``--devices`` devices (one page of 100 per listing request), ``--tokens`` stored
tokens, the simulator answering every request after ``--latency`` seconds and accepting at most
``--rate`` requests per window (a sliding window, scaled down from Particle's 10,000 per 5 minutes
so the run takes minutes, not hours). The sweep pages through the product and queues the devices
on SQS while ``--workers`` threads consume the queue with the real Assigner, all sharing one
Particle client that paces itself to the rate limit.

Reports:
- Particle requests per device (every request sent, 429s included), against 1 + the paging share;
- DynamoDB calls per device (sweep and assign, from ``Store.calls``), against 3;
- wall time (first listing request to the last Ledger write) against the rate-limit bound: the
  requests needed divided by the allowed rate.

``--record`` appends the results to bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
SECTION = "## Assignment (`bench/bench_assign.py`)"

# In-process moto only, never an account; metrics and per-device logs would drown the report.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 (moto's placeholder credentials)
    AWS_SESSION_TOKEN="testing",  # noqa: S106
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
    POWERTOOLS_SERVICE_NAME="tokenflow-bench",
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
TABLE = "tokenflow-bench"


def parse_rate(text: str) -> tuple[int, float]:
    requests, seconds = text.split("/")
    return int(requests), float(seconds)


class TimedAtomicClient:
    """One lock around every moto call (moto does not serialise requests, DynamoDB does: see
    tests/support/moto_atomic.py), and the time spent inside moto, per operation."""

    def __init__(self, client: Any, lock: threading.Lock, seconds: dict[str, float]) -> None:
        self._client, self._lock, self.seconds = client, lock, seconds

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                started = time.perf_counter()
                try:
                    return attr(*args, **kwargs)
                finally:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return call


def run(devices: int, tokens: int, latency: float, rate: tuple[int, float], workers: int) -> dict:
    import boto3
    from moto import mock_aws

    from tokenflow.assign_queue import AssignQueue
    from tokenflow.assignment import Assigner, AssignRequest, RetryLater
    from tokenflow.ingest import utc_now
    from tokenflow.particle import ParticleClient
    from tokenflow.store import NewToken, Store
    from tokenflow.sweep import Sweeper
    from tokenflow_local import moto_speedups
    from tokenflow_local.particle_sim import ParticleSimulator
    from tokenflow_local.resources import create_table

    moto_speedups.install()
    limit, window = rate
    with mock_aws(), ParticleSimulator(max_per_page=100) as sim:
        lock = threading.Lock()  # one lock for every moto call: moto does not serialise requests
        moto_seconds: dict[str, float] = {}
        dynamodb = TimedAtomicClient(boto3.client("dynamodb"), lock, moto_seconds)
        sqs = TimedAtomicClient(boto3.client("sqs"), lock, moto_seconds)
        create_table(boto3.client("dynamodb"), TABLE)
        queue_url = sqs.create_queue(QueueName="assign", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        rng = random.Random(1)
        Store(TABLE, dynamodb).add_tokens(
            [NewToken("".join(rng.choice(ALPHABET) for _ in range(32))) for _ in range(tokens)],
            import_id="bench",
            now=utc_now(),
        )
        ids = sim.add_devices(devices)
        sim.set_faults(latency=latency)
        sim.set_rate_limit(limit, window)
        sim.reset_stats()
        moto_seconds.clear()

        particle = ParticleClient(
            sim.url, sim.access_token, sim.product, rate_limit=rate, pool_size=workers + 2
        )
        sweep_store = Store(TABLE, dynamodb)
        stores = [Store(TABLE, dynamodb) for _ in range(workers)]
        sweep_done = threading.Event()
        outcomes: dict[str, int] = {}
        errors: list[str] = []

        def sweep() -> None:
            try:
                Sweeper(sweep_store, particle, AssignQueue(queue_url, sqs)).sweep(per_page=100)
            except Exception as exc:  # reported below; the workers stop once the queue is empty
                errors.append(f"sweep: {type(exc).__name__}: {exc}")
            finally:
                sweep_done.set()

        def work(store: Store, seed: int) -> None:
            assigner = Assigner(store, particle, clock=utc_now, rng=random.Random(seed))
            while True:
                answer = sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
                )
                messages = answer.get("Messages", [])
                if not messages:
                    if sweep_done.is_set():
                        return
                    time.sleep(0.1)  # an empty receive still costs moto a queue scan
                    continue
                done = []
                for message in messages:
                    request = AssignRequest.from_message(json.loads(message["Body"]))
                    count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                    try:
                        outcome = assigner.assign(request, count)
                    except RetryLater as exc:
                        errors.append(f"retry: {exc}")
                        sqs.change_message_visibility(
                            QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                        )
                        continue
                    with lock:
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    done.append(message)
                if done:
                    sqs.delete_message_batch(
                        QueueUrl=queue_url,
                        Entries=[
                            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)
                        ],
                    )

        started = time.monotonic()
        threads = [threading.Thread(target=sweep)] + [
            threading.Thread(target=work, args=(store, n)) for n, store in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started

        summary = Store(TABLE, dynamodb).summary()
        served = min(devices, tokens)
        ledger_tokens = {sim.ledger_data(d)["blynk_token"] for d in ids if sim.ledger_data(d)}
        assert summary["devices"]["delivered"] == served, summary
        assert len(ledger_tokens) == served and sim.stats()["ledger_writes"] == served
        sim_stats = sim.stats()

    pages = -(-devices // 100)
    dynamo_assign = sum(s.calls.total for s in stores)
    dynamo_sweep = sweep_store.calls.total
    needed = pages + served  # one listing request per page, one Ledger write per device
    bound = needed / (limit / window)
    return {
        "devices": devices,
        "tokens": tokens,
        "latency_ms": latency * 1000,
        "rate": f"{limit}/{window:g}s",
        "workers": workers,
        "outcomes": outcomes,
        "retries": len(errors),
        "errors": errors[:5],
        "particle_requests": particle.requests_sent,
        "particle_429": int(sim_stats["statuses"].get("429", 0)),
        "particle_per_device": particle.requests_sent / devices,
        "particle_goal": 1 + pages / devices,
        "dynamodb_calls": dynamo_assign + dynamo_sweep,
        "dynamodb_assign_per_device": dynamo_assign / devices,
        "dynamodb_per_device": (dynamo_assign + dynamo_sweep) / devices,
        "dynamodb_by_operation": {
            op: sum(s.calls.counts.get(op, 0) for s in [*stores, sweep_store])
            for op in sorted({op for s in [*stores, sweep_store] for op in s.calls.counts})
        },
        "moto_s": sum(moto_seconds.values()),
        "moto_by_operation": {k: round(v, 1) for k, v in sorted(moto_seconds.items(), key=lambda kv: -kv[1])},
        "wall_s": wall,
        "bound_s": bound,
        "ratio": wall / bound,
    }


def report(r: dict, command: str) -> str:
    by_operation = ", ".join(f"{k} {v:,}" for k, v in r["dynamodb_by_operation"].items())
    return "\n".join(
        [
            f"    {command}",
            "",
            f"{r['devices']:,} devices, {r['tokens']:,} tokens, {r['latency_ms']:.0f} ms simulator latency, "
            f"rate limit {r['rate']} (sliding window), {r['workers']} assign workers, "
            f"recorded {date.today()}:",
            "",
            "| measure | result | goal |",
            "| --- | --- | --- |",
            f"| Particle requests per device (429s included: {r['particle_429']}) | "
            f"{r['particle_per_device']:.3f} ({r['particle_requests']:,}) | <= {r['particle_goal']:.3f} |",
            f"| DynamoDB calls per device, assign only | {r['dynamodb_assign_per_device']:.3f} | <= 3 |",
            f"| DynamoDB calls per device, sweep included | {r['dynamodb_per_device']:.3f} "
            f"({r['dynamodb_calls']:,}: {by_operation}) | |",
            f"| wall time / rate-limit bound | {r['wall_s']:.1f} s / {r['bound_s']:.1f} s = {r['ratio']:.3f} "
            f"| <= 1.15 |",
            f"| time inside moto (serialised, one lock) | {r['moto_s']:.1f} s "
            f"({', '.join(f'{k} {v:.1f} s' for k, v in list(r['moto_by_operation'].items())[:4])}) | |",
            f"| outcomes | {', '.join(f'{k} {v:,}' for k, v in sorted(r['outcomes'].items()))}; "
            f"messages retried {r['retries']} | |",
            "",
        ]
    )


def record(text: str) -> None:
    existing = README.read_text() if README.exists() else "# Benchmarks\n"
    if SECTION not in existing:
        existing = existing.rstrip("\n") + f"\n\n{SECTION}\n\n"
    README.write_text(existing.rstrip("\n") + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.03, help="seconds per simulator answer")
    parser.add_argument("--rate", default="100/3", help="simulator rate limit, REQUESTS/SECONDS")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--record", action="store_true", help="append the results to bench/README.md")
    args = parser.parse_args(argv)
    # The metrics' EMF lines go to stdout (flushed every 100 metrics): keep them out of the report.
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        result = run(args.devices, args.tokens, args.latency, parse_rate(args.rate), args.workers)
    command = (
        f".venv/bin/python bench/bench_assign.py --devices {args.devices} --tokens {args.tokens} "
        f"--latency {args.latency:g} --rate {args.rate} --workers {args.workers}"
    )
    text = report(result, command)
    print(text)
    if result["errors"]:
        print("first retried errors:", *result["errors"], sep="\n  ")
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
