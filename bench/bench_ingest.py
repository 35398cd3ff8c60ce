"""Ingest benchmark: a generated export with one QR PNG per token, parsed and stored against moto.

    .venv/bin/python bench/bench_ingest.py [--tokens 100000]

Reports:
- parse rate: rows/s of the export parser alone (validation pass + batches with their PNGs), one core;
- peak RSS of a process that only parses (what the ingest function needs, the table being remote);
- DynamoDB write calls per 1,000 tokens, against the minimum (one TransactWriteItems per 99 tokens
  plus the import record's writes);
- total time of the whole import (read from S3, parse, store, report) against in-process moto, and
  the peak RSS of that process (moto's tables live in it too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench"


def export_path(tokens: int) -> Path:
    path = CACHE / f"export-{tokens}.zip"
    if not path.exists():
        from tokenflow_local.sample_export import make_export

        CACHE.mkdir(parents=True, exist_ok=True)
        # One image reused for every token: a real QR PNG of the usual size, without the minutes
        # segno would need to draw 100,000 of them. The parser reads every one of them all the same.
        path.write_bytes(make_export(tokens, real_qr=False))
    return path


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


def full_import(path: Path) -> dict:
    import boto3
    from moto import mock_aws

    from tokenflow.ingest import Importer
    from tokenflow.store import Store
    from tokenflow_local import moto_speedups
    from tokenflow_local.resources import create_bucket, create_table

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 (moto accepts any credentials)
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    moto_speedups.install()
    with mock_aws():
        dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
        create_table(dynamodb, "bench")
        create_bucket(s3, "bench-exports")
        s3.put_object(Bucket="bench-exports", Key="incoming/export.zip", Body=path.read_bytes())
        store = Store("bench", dynamodb)
        started = time.perf_counter()
        outcome = Importer(store, "bench-exports", s3=s3).ingest("incoming/export.zip")
        elapsed = time.perf_counter() - started
    assert outcome is not None
    added = outcome.tokens_added
    token_writes = store.calls.counts.get("TransactWriteItems", 0)
    minimum = math.ceil(added / 99)
    return {
        "tokens_added": added,
        "total_seconds": round(elapsed, 1),
        "write_calls": store.calls.writes(),
        "token_transactions": token_writes,
        "write_calls_per_1000_tokens": round(1000 * store.calls.writes() / added, 2),
        "minimum_per_1000_tokens": round(1000 * minimum / added, 2),
        "ratio_to_minimum": round(store.calls.writes() / minimum, 3),
        "peak_rss_mb_with_moto": round(peak_rss_mb(), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--phase", choices=["all", "parse", "import"], default="all")
    args = parser.parse_args()
    path = export_path(args.tokens)
    if args.phase == "parse":
        print(json.dumps(parse_only(path)))
        return 0
    if args.phase == "import":
        print(json.dumps(full_import(path)))
        return 0
    results = {"tokens": args.tokens}
    # Each phase in its own process, so peak RSS belongs to that phase alone.
    for phase in ("parse", "import"):
        out = subprocess.run(
            [sys.executable, __file__, "--tokens", str(args.tokens), "--phase", phase],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.update(json.loads(out.strip().splitlines()[-1]))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
