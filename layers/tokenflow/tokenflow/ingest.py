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

Two deliveries of one event may also run at the same time, in two Lambda environments. Before it
writes a token, a delivery claims the import by creating its report key with ``If-None-Match: *``
(a placeholder the finished report replaces), so exactly one of them imports and files the file:
the other waits for the import record to be finished and stops as "already handled" (no error, no
alarm, no token written, so the report's counts stay whole). Likewise a delivery that finds the
object gone at CopyObject or DeleteObject, while the import record says the file was filed, has
nothing left to do. While it waits, the holder's checkpoint is its heartbeat: a record whose
checkpoint moves belongs to a live import, however long it takes, and the waiting delivery stops
as "already handled" at once (if the holder later dies, Lambda's retry of its own event continues
it). A claim whose record neither finishes nor moves for ``claim_wait_seconds`` (the attempt died
after claiming) is taken over, from the checkpoint read after the wait: kept well under the
function's timeout, so a retry can still finish the import. A live import never writes nothing
for that long (a chunk of tokens takes well under a second); were two to run at once all the
same, each token would still be stored once (``Store.add_tokens``) and only the counts split.

A retry after a timeout continues where the stopped attempt left off: every transaction of tokens
also records in the import record how many of the file's tokens are stored (``Store.add_tokens``
with ``checkpoint_at``), and the next attempt skips that many (they are parsed again, not written).

Object keys and the reader's summary go through ``tokens.redact`` before they reach a report, the
import record, a destination key or a log line: an operator may name an upload after a token.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from tokenflow import aws
from tokenflow.export import ExportReader, ExportRejected, Limits
from tokenflow.observability import logger, metrics
from tokenflow.store import NewToken, Store
from tokenflow.store.imports import Checkpoint
from tokenflow.store.tokens import TOKENS_PER_CHECKPOINTED_TRANSACTION
from tokenflow.tokens import redact
from tokenflow.wiring import utc_now as utc_now  # the default clock, still importable from here

INCOMING_PREFIX = "incoming/"
PROCESSED_PREFIX = "processed/"
REJECTED_PREFIX = "rejected/"
# Tokens per TransactWriteItems, with one counter shard and the import's checkpoint: 100 items.
WRITE_BATCH = TOKENS_PER_CHECKPOINTED_TRANSACTION
REPORT_PROBLEMS_KEPT = 1000  # rows listed in a report; the count is always complete
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
FINISHED = frozenset({"processed", "rejected"})
# S3 answers a conditional write that finds the key with 412, and one that races another conditional
# write of the same key with 409 (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
_CLAIMED = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_GONE = frozenset({"NoSuchKey", "404", "NotFound"})


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
        claim_wait_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.s3 = s3 or aws.client("s3")
        self.limits = limits or Limits()
        self.on_tokens_added = on_tokens_added
        self.clock = clock
        # How long a delivery that finds another one's report waits for that one to finish.
        self.claim_wait_seconds = claim_wait_seconds
        self.sleep = sleep

    def ingest(self, key: str) -> ImportOutcome | None:
        """Import ``s3://bucket/key``; None when there is nothing (left) to do for that key."""
        shown_key = redact(key)  # the key as reports, records and logs show it
        if not key.startswith(INCOMING_PREFIX):
            logger.warning("Ignoring an object outside incoming/", extra={"key": shown_key})
            return None
        started = self.clock()
        data = self._read(key)
        if data is None:
            logger.info("Object already handled (no longer in incoming/)", extra={"key": shown_key})
            return None
        sha256 = hashlib.sha256(data).hexdigest()
        log_context = {"key": shown_key, "import_id": sha256, "size_bytes": len(data)}

        previous = self.store.get_import(sha256)
        if previous and previous.get("status") in FINISHED:
            if previous.get("source_key") == shown_key:
                # The same event again after the import finished but before the file left incoming/:
                # its report is written already (it precedes the record), only the move is left.
                logger.info("Finishing an import that was already recorded", extra=log_context)
                summary = dict(previous.get("summary", {}))
                return self._file_away(key, sha256, summary, data, record=False, write_report=False)
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
            return self._file_away(key, sha256, report, data, record=False)

        self.store.begin_import(sha256, shown_key, len(data), started)
        report = self._base_report(key, sha256, len(data), started)
        try:
            # The constructor reads and checks the whole file; nothing is written before it passes.
            reader = ExportReader(data, posixpath.basename(key), self.limits)
        except ExportRejected as exc:
            reason = redact(exc.reason)  # redacted by ExportRejected already; kept so if that changes
            report.update(status="rejected", reason=reason)
            if not self._claim(key, sha256, report):
                return None
            logger.warning("Export rejected", extra={**log_context, "reason": reason})
            metrics.add_metric(name="ImportsRejected", unit="Count", value=1)
            return self._file_away(key, sha256, report, data)

        report["status"] = "processed"
        if not self._claim(key, sha256, report):
            return None
        # Read again: an attempt taken over may have stored more since ``previous`` was read.
        added, known = self._store_tokens(reader, sha256, Checkpoint.of(self.store.get_import(sha256)))
        summary = _redacted(reader.summary())
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
        # Rows with a valid token, new or already stored (the report's tokens_valid).
        metrics.add_metric(name="RowsAccepted", unit="Count", value=int(summary["tokens_valid"]))
        outcome = self._file_away(key, sha256, report, data)
        if added and self.on_tokens_added:
            self.on_tokens_added(added)
        return outcome

    # ---- steps ---------------------------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _GONE:
                return None
            raise
        body = obj["Body"]
        # Read at most one byte past the limit: enough to know the file is too large.
        data: bytes = body.read(self.limits.max_archive_bytes + 1)
        body.close()
        return data

    def _store_tokens(self, reader: ExportReader, import_id: str, checkpoint: Checkpoint) -> tuple[int, int]:
        """Store the file's tokens from its checkpoint on; (added, already known) in all attempts."""
        added, known = checkpoint.added, checkpoint.known
        if checkpoint.tokens:
            logger.info(
                "Continuing an import from its checkpoint",
                extra={
                    "import_id": import_id,
                    "tokens_stored": checkpoint.tokens,
                    "chunks": checkpoint.chunks,
                },
            )
        now = self.clock()
        position = 0  # tokens of the file passed so far, in the file's order
        for batch in reader.batches(WRITE_BATCH):
            skip = min(len(batch), max(0, checkpoint.tokens - position))
            position += skip
            if skip == len(batch):
                continue
            result = self.store.add_tokens(
                [
                    NewToken(
                        token=t.token, qr_token=t.qr_token, metadata=t.metadata, qr_png=t.qr_png, row=t.row
                    )
                    for t in batch[skip:]
                ],
                import_id=import_id,
                now=now,
                checkpoint_at=position,
            )
            position += len(batch) - skip
            added += len(result.added)
            known += len(result.known)
        return added, known

    def _base_report(self, key: str, sha256: str, size: int, started: str) -> dict[str, Any]:
        return {
            "import_id": sha256,
            "source_key": redact(key),
            "size_bytes": size,
            "started_at": started,
            "tokens_added": 0,
            "tokens_already_known": 0,
        }

    def _destination(self, key: str, sha256: str, status: str) -> tuple[str, str]:
        prefix = REJECTED_PREFIX if status == "rejected" else PROCESSED_PREFIX
        name = _SAFE_NAME.sub("_", redact(posixpath.basename(key))) or "export"
        day = self.clock()[:10]
        base = f"{prefix}{day}/{sha256[:16]}-{name}"
        return base, f"{base}.report.json"

    def _file_away(
        self,
        key: str,
        sha256: str,
        report: dict[str, Any],
        data: bytes,
        *,
        record: bool = True,
        write_report: bool = True,
    ) -> ImportOutcome | None:
        """Write the report, move the file beside it, record the outcome; the file leaves incoming/ last.

        ``record=False`` files away without touching the import record: a duplicate upload, or the
        end of an import whose record is already complete (its report names the destination; with
        ``write_report=False`` that report, written before the record, is left as it is).

        None when the file is gone and its import is recorded: another delivery filed it.
        """
        status = report.get("status", "processed")
        if not report.get("destination_key"):
            destination, report_key = self._destination(key, sha256, status)
            report.update(destination_key=destination, report_key=report_key)
        report.setdefault("finished_at", self.clock())
        destination, report_key = report["destination_key"], report["report_key"]
        if write_report:
            self._put_report(report_key, report)
        try:
            self.s3.copy_object(
                Bucket=self.bucket, Key=destination, CopySource={"Bucket": self.bucket, "Key": key}
            )
        except ClientError as exc:
            if _code(exc) not in _GONE:
                raise
            if self._import_finished(sha256):
                self._already_handled(key, sha256, "the file was moved by another delivery")
                return None
            # Gone, yet not filed by an import: keep the bytes this delivery holds beside the report.
            self.s3.put_object(Bucket=self.bucket, Key=destination, Body=data)
        if record:
            self.store.finish_import(sha256, _record_summary(report), self.clock())
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:  # S3 deletes a missing key without error; stores that do not are fine
            if _code(exc) not in _GONE:
                raise
        return ImportOutcome(
            status=status,
            sha256=sha256,
            destination_key=destination,
            report_key=report_key,
            tokens_added=int(report.get("tokens_added", 0)) if record else 0,
            report=report,
        )

    def _claim(self, key: str, sha256: str, report: dict[str, Any]) -> bool:
        """Take this import before writing anything for it; False when another delivery has it.

        The claim is the import's report key, created only if it does not exist (``If-None-Match:
        *``) with a placeholder that the finished report replaces. Exactly one of two deliveries
        running together creates it; the other waits for the import record to be finished and is
        then "already handled", or sees the holder's checkpoint move and leaves the import to it. A
        record that neither finishes nor moves for ``claim_wait_seconds`` belonged to an attempt
        that stopped after its claim (a crash, a timeout): this delivery takes over.
        """
        destination, report_key = self._destination(key, sha256, report["status"])
        report.update(destination_key=destination, report_key=report_key)
        placeholder = {**report, "status": "processing", "note": "the import is being filed"}
        try:
            self._put_report(report_key, placeholder, if_none_match=True)
            return True
        except ClientError as exc:
            if _code(exc) not in _CLAIMED:
                raise
        why = self._wait_for_holder(sha256)
        if why:
            self._already_handled(key, sha256, why)
            return False
        logger.info(
            "Taking over an import whose earlier attempt stopped",
            extra={"key": redact(key), "import_id": sha256},
        )
        return True

    def _put_report(self, report_key: str, report: dict[str, Any], *, if_none_match: bool = False) -> None:
        body = json.dumps(report, indent=2, sort_keys=True, default=str, ensure_ascii=False).encode()
        self.s3.put_object(
            Bucket=self.bucket,
            Key=report_key,
            Body=body,
            ContentType="application/json; charset=utf-8",
            **({"IfNoneMatch": "*"} if if_none_match else {}),
        )

    def _import_finished(self, sha256: str) -> bool:
        record = self.store.get_import(sha256)
        return record is not None and record.get("status") in FINISHED

    def _wait_for_holder(self, sha256: str) -> str | None:
        """Why the import is left to the delivery that claimed it (it finished, or its checkpoint
        moved: it is alive), or None when its record did neither for ``claim_wait_seconds``."""
        first = Checkpoint.of(self.store.get_import(sha256))
        deadline = time.monotonic() + self.claim_wait_seconds
        pause = 0.05
        while True:
            why = holder_verdict(first, self.store.get_import(sha256))
            if why or time.monotonic() >= deadline:
                return why
            self.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _already_handled(self, key: str, sha256: str, why: str) -> None:
        # Not an error: S3 delivers events at least once, and two deliveries may run together.
        logger.info(
            "Object already handled by another delivery",
            extra={"key": redact(key), "import_id": sha256, "why": why},
        )


def holder_verdict(first: Checkpoint, record: Mapping[str, Any] | None) -> str | None:
    """Why a delivery that found its import claimed leaves it to the holder, given the checkpoint
    when it began to wait and the import record now; None while nothing says the holder is alive.

    The checkpoint is the heartbeat: only the holder writes it, one chunk of tokens at a time.
    """
    if record is not None and record.get("status") in FINISHED:
        return "another delivery finished its import"
    if Checkpoint.of(record).chunks > first.chunks:
        return "another delivery is storing its tokens"
    return None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _redacted(value: Any) -> Any:
    """Every string in a JSON-like value redacted (the reader redacts its summary; this makes sure)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


def _record_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the import record keeps: the report without the per-row list (that stays in S3)."""
    kept = {k: v for k, v in report.items() if k not in {"problems", "ignored_entries", "columns"}}
    # DynamoDB takes Decimal, not float: a JSON round trip makes every number storable.
    summary: dict[str, Any] = json.loads(json.dumps(kept, default=str), parse_float=Decimal)
    return summary
