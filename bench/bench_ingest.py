"""Ingest benchmark: a generated export with one QR PNG per token, parsed and stored against moto.

    .venv/bin/python bench/bench_ingest.py [--tokens 100000]
    .venv/bin/python bench/bench_ingest.py --rows 500000      # the most an export may hold

Reports:
- parse rate: rows/s of the export parser alone (validation pass + batches with their PNGs), one core;
- peak RSS of a process that only parses;
- DynamoDB write calls per 1,000 tokens, against the minimum (one TransactWriteItems per 98 tokens,
  with the counter shard and the import's checkpoint, plus the import record's writes);
- the whole import (read from S3, parse, store, report) in a process of its own, talking to a moto
  server in another process over HTTP as the function talks to AWS: its time against the ingest
  function's Timeout and its peak RSS against its MemorySize (both read from template.yaml).

An export may hold 500,000 rows but at most 250,000 archive entries and 200 MB (``export.Limits``):
above 249,999 tokens the generated export carries the CSV alone, without images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench"


def with_images(tokens: int) -> bool:
    """Whether an export of this many tokens can carry one image each within the export limits."""
    from tokenflow.export import Limits

    return tokens < Limits().max_entries  # one entry per image, and the CSV


def export_path(tokens: int) -> Path:
    images = with_images(tokens)
    path = CACHE / f"export-{tokens}{'' if images else '-csv'}.zip"
    if not path.exists():
        from tokenflow_local.sample_export import make_export

        CACHE.mkdir(parents=True, exist_ok=True)
        # One image reused for every token: a real QR PNG of the usual size, without the minutes
        # segno would need to draw 100,000 of them. The parser reads every one of them all the same.
        path.write_bytes(make_export(tokens, real_qr=False, with_png=images))
    return path


def ingest_limits() -> dict[str, int]:
    """The ingest function's MemorySize and Timeout, as template.yaml declares them."""
    text = (ROOT / "template.yaml").read_text()
    block = re.search(r"^  IngestFunction:\n(.*?)(?=^  \S)", text, re.S | re.M)
    assert block, "IngestFunction not found in template.yaml"
    memory = re.search(r"^\s+MemorySize: (\d+)", block.group(1), re.M)
    timeout = re.search(r"^\s+Timeout: (\d+)", block.group(1), re.M)
    assert memory and timeout, "IngestFunction has no MemorySize or Timeout of its own"
    return {"memory_mb": int(memory.group(1)), "timeout_s": int(timeout.group(1))}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_only(path: Path) -> dict:
    from tokenflow.export import ExportReader

    data = path.read_bytes()
    started = time.perf_counter()
    reader = ExportReader(data, path.name)
    rows = images = 0
    for batch in reader.batches(99):
        rows += len(batch)
        images += sum(1 for t in batch if t.qr_png)
    elapsed = time.perf_counter() - started
    rss = peak_rss_mb()  # before the CSV-only pass below adds its own copy of the rows
    # The CSV rows alone (same rows, no archive, no images): the parser's own per-row cost.
    with zipfile.ZipFile(path) as archive:
        csv_bytes = archive.read(reader.csv_entry)
    csv_started = time.perf_counter()
    csv_rows = sum(len(b) for b in ExportReader(csv_bytes, "tokens.csv").batches(99))
    csv_elapsed = time.perf_counter() - csv_started
    return {
        "csv_rows_per_second": round(csv_rows / csv_elapsed),
        "rows": rows,
        "images": images,
        "parse_seconds": round(elapsed, 3),
        "rows_per_second": round(rows / elapsed),
        "archive_mb": round(len(data) / 2**20, 1),
        "peak_rss_mb": round(rss, 1),
    }


_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",  # moto accepts any credentials
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


def serve_moto(port: int) -> None:
    """The phase that plays AWS: a moto server on ``port`` until killed."""
    from tokenflow_local import moto_speedups
    from tokenflow_local.embedded_aws import MotoServer

    os.environ.update(_ENV)
    moto_speedups.install()
    server = MotoServer("127.0.0.1", port)
    server.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def full_import(path: Path, endpoint: str) -> dict:
    """The phase that plays the ingest function: its own process, AWS over HTTP."""
    import boto3

    from tokenflow.ingest import WRITE_BATCH, Importer
    from tokenflow.store import Store
    from tokenflow_local.resources import create_bucket, create_table

    os.environ.update(_ENV)
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    create_table(dynamodb, "bench")
    create_bucket(s3, "bench-exports")
    s3.put_object(Bucket="bench-exports", Key="incoming/export.zip", Body=path.read_bytes())
    rss_before = peak_rss_mb()  # the test's own upload is not the function's
    store = Store("bench", dynamodb)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    outcome = Importer(store, "bench-exports", s3=s3).ingest("incoming/export.zip")
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    assert outcome is not None
    record = store.get_import(outcome.sha256) or {}
    added = outcome.tokens_added
    token_writes = store.calls.counts.get("TransactWriteItems", 0)
    minimum = math.ceil(added / WRITE_BATCH)
    limits = ingest_limits()
    rss = peak_rss_mb()
    return {
        "tokens_added": added,
        "total_seconds": round(elapsed, 1),
        "timeout_seconds": limits["timeout_s"],
        "time_over_timeout": round(elapsed / limits["timeout_s"], 3),
        # The function's own work (parse, requests, responses): what the time is without moto's.
        "cpu_seconds_import": round(cpu, 1),
        "cpu_over_timeout": round(cpu / limits["timeout_s"], 3),
        "write_calls": store.calls.writes(),
        "token_transactions": token_writes,
        "checkpoint_chunks": int(record.get("checkpoint_chunks", 0)),
        "write_calls_per_1000_tokens": round(1000 * store.calls.writes() / added, 2),
        "minimum_per_1000_tokens": round(1000 * minimum / added, 2),
        "ratio_to_minimum": round(store.calls.writes() / minimum, 3),
        "peak_rss_mb_import": round(rss, 1),
        "peak_rss_mb_before_import": round(rss_before, 1),
        "memory_size_mb": limits["memory_mb"],
        "rss_over_memory_size": round(rss / limits["memory_mb"], 3),
    }


def run_import_phase(tokens: int) -> dict:
    """A moto server in one process, the import in another (so its RSS is the function's alone)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--phase", "server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the server's request log
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [sys.executable, __file__, "--tokens", str(tokens), "--phase", "import", "--port", str(port)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return dict(json.loads(out.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", "--rows", dest="tokens", type=int, default=100_000)
    parser.add_argument("--phase", choices=["all", "parse", "import", "server"], default="all")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "server":
        serve_moto(args.port)
        return 0
    path = export_path(args.tokens)
    if args.phase == "parse":
        print(json.dumps(parse_only(path)))
        return 0
    if args.phase == "import":
        print(json.dumps(full_import(path, f"http://127.0.0.1:{args.port}")))
        return 0
    results = {"tokens": args.tokens, "with_images": with_images(args.tokens)}
    # Each phase in its own process, so peak RSS belongs to that phase alone.
    out = subprocess.run(
        [sys.executable, __file__, "--tokens", str(args.tokens), "--phase", "parse"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    results.update(json.loads(out.strip().splitlines()[-1]))
    results.update(run_import_phase(args.tokens))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
