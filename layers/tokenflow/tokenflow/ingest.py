"""Import one Blynk token export from S3 into the table, and file it with a report beside it.

The object under ``incoming/`` is read into memory (never extracted to disk), parsed, its new tokens
stored, and then it is moved to ``processed/`` (or ``rejected/``) next to a JSON report. Nothing is
ever written under ``incoming/``, so an import can never trigger itself.

Every step is safe to repeat, because S3 delivers events at least once:
- the file's SHA-256 names its import record, so the same bytes under another key, or the same
  event again, are recognised;
- a token is written only if it does not exist yet (``Store.add_tokens``), so a repeated or
  overlapping import never changes a stored token;
- the object leaves ``incoming/`` last, after its report and its import record are written; an event
  for an object that is already gone is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from tokenflow import aws
from tokenflow.export import ExportReader, ExportRejected, Limits
from tokenflow.observability import logger, metrics
from tokenflow.store import NewToken, Store

INCOMING_PREFIX = "incoming/"
PROCESSED_PREFIX = "processed/"
REJECTED_PREFIX = "rejected/"
WRITE_BATCH = 99  # tokens per TransactWriteItems, with one counter shard: 100 items
REPORT_PROBLEMS_KEPT = 1000  # rows listed in a report; the count is always complete
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ImportOutcome:
    status: str  # processed | rejected | duplicate
    sha256: str
    destination_key: str
    report_key: str
    tokens_added: int
    report: dict[str, Any]


class Importer:
    """Imports exports from one bucket into one store."""

    def __init__(
        self,
        store: Store,
        bucket: str,
        *,
        s3: Any | None = None,
        limits: Limits | None = None,
        on_tokens_added: Callable[[int], None] | None = None,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.s3 = s3 or aws.client("s3")
        self.limits = limits or Limits()
        self.on_tokens_added = on_tokens_added
        self.clock = clock

    def ingest(self, key: str) -> ImportOutcome | None:
        """Import ``s3://bucket/key``; None when there is nothing (left) to do for that key."""
        if not key.startswith(INCOMING_PREFIX):
            logger.warning("Ignoring an object outside incoming/", extra={"key": key})
            return None
        started = self.clock()
        data = self._read(key)
        if data is None:
            logger.info("Object already handled (no longer in incoming/)", extra={"key": key})
            return None
        sha256 = hashlib.sha256(data).hexdigest()
        log_context = {"key": key, "import_id": sha256, "size_bytes": len(data)}

        previous = self.store.get_import(sha256)
        if previous and previous.get("status") in {"processed", "rejected"}:
            if previous.get("source_key") == key:
                # The same event again after the import finished but before the file left incoming/.
                logger.info("Finishing an import that was already recorded", extra=log_context)
                return self._file_away(key, sha256, dict(previous.get("summary", {})), record=False)
            logger.info("Duplicate upload of an imported file", extra=log_context)
            report = self._base_report(key, sha256, len(data), started)
            first = previous.get("source_key")
            if previous["status"] == "rejected":
                reason = previous.get("summary", {}).get("reason", "")
                report.update(
                    status="rejected", reason=f"the same file was rejected before as {first}: {reason}"
                )
            else:
                report.update(status="duplicate", reason=f"the same file was imported before as {first}")
            report.update(duplicate_of=sha256, first_source_key=first)
            metrics.add_metric(name="DuplicateImports", unit="Count", value=1)
            return self._file_away(key, sha256, report, record=False)

        self.store.begin_import(sha256, key, len(data), started)
        report = self._base_report(key, sha256, len(data), started)
        try:
            reader = ExportReader(data, posixpath.basename(key), self.limits)
            added, known = self._store_tokens(reader, sha256)
        except ExportRejected as exc:
            report.update(status="rejected", reason=exc.reason)
            logger.warning("Export rejected", extra={**log_context, "reason": exc.reason})
            metrics.add_metric(name="ImportsRejected", unit="Count", value=1)
            return self._file_away(key, sha256, report)

        summary = reader.summary()
        problems = summary.pop("problems", [])
        report.update(summary)
        report.update(
            status="processed",
            tokens_added=added,
            tokens_already_known=known,
            rows_rejected=len(problems),
            problems=problems[:REPORT_PROBLEMS_KEPT],
            problems_truncated=len(problems) > REPORT_PROBLEMS_KEPT,
        )
        logger.info(
            "Export imported",
            extra={
                **log_context,
                "tokens_added": added,
                "tokens_already_known": known,
                "rows_rejected": len(problems),
            },
        )
        metrics.add_metric(name="TokensImported", unit="Count", value=added)
        metrics.add_metric(name="RowsRejected", unit="Count", value=len(problems))
        outcome = self._file_away(key, sha256, report)
        if added and self.on_tokens_added:
            self.on_tokens_added(added)
        return outcome

    # ---- steps ---------------------------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        body = obj["Body"]
        # Read at most one byte past the limit: enough to know the file is too large.
        data = body.read(self.limits.max_archive_bytes + 1)
        body.close()
        return data

    def _store_tokens(self, reader: ExportReader, import_id: str) -> tuple[int, int]:
        added = known = 0
        now = self.clock()
        for batch in reader.batches(WRITE_BATCH):
            result = self.store.add_tokens(
                [
                    NewToken(
                        token=t.token, qr_token=t.qr_token, metadata=t.metadata, qr_png=t.qr_png, row=t.row
                    )
                    for t in batch
                ],
                import_id=import_id,
                now=now,
            )
            added += len(result.added)
            known += len(result.known)
        return added, known

    def _base_report(self, key: str, sha256: str, size: int, started: str) -> dict[str, Any]:
        return {
            "import_id": sha256,
            "source_key": key,
            "size_bytes": size,
            "started_at": started,
            "tokens_added": 0,
            "tokens_already_known": 0,
        }

    def _destination(self, key: str, sha256: str, status: str) -> tuple[str, str]:
        prefix = REJECTED_PREFIX if status == "rejected" else PROCESSED_PREFIX
        name = _SAFE_NAME.sub("_", posixpath.basename(key)) or "export"
        day = self.clock()[:10]
        base = f"{prefix}{day}/{sha256[:16]}-{name}"
        return base, f"{base}.report.json"

    def _file_away(
        self, key: str, sha256: str, report: dict[str, Any], *, record: bool = True
    ) -> ImportOutcome:
        """Write the report, move the file beside it, record the outcome; the file leaves incoming/ last.

        ``record=False`` files away without touching the import record: a duplicate upload, or the
        end of an import whose record is already complete (its report names the destination).
        """
        status = report.get("status", "processed")
        if not report.get("destination_key"):
            destination, report_key = self._destination(key, sha256, status)
            report.update(destination_key=destination, report_key=report_key, finished_at=self.clock())
        destination, report_key = report["destination_key"], report["report_key"]
        self.s3.put_object(
            Bucket=self.bucket,
            Key=report_key,
            Body=json.dumps(report, indent=2, sort_keys=True, default=str, ensure_ascii=False).encode(),
            ContentType="application/json; charset=utf-8",
        )
        self.s3.copy_object(
            Bucket=self.bucket, Key=destination, CopySource={"Bucket": self.bucket, "Key": key}
        )
        if record:
            self.store.finish_import(sha256, _record_summary(report), self.clock())
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        return ImportOutcome(
            status=status,
            sha256=sha256,
            destination_key=destination,
            report_key=report_key,
            tokens_added=int(report.get("tokens_added", 0)) if record else 0,
            report=report,
        )


def _record_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the import record keeps: the report without the per-row list (that stays in S3)."""
    kept = {k: v for k, v in report.items() if k not in {"problems", "ignored_entries", "columns"}}
    # DynamoDB takes Decimal, not float: a JSON round trip makes every number storable.
    return json.loads(json.dumps(kept, default=str), parse_float=Decimal)
