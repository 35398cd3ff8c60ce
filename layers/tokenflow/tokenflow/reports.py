"""Import reports as ingest left them in the exports bucket (the API shows them whole)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from tokenflow import aws

MAX_REPORT_BYTES = 5_000_000


class S3Reports:
    def __init__(self, bucket: str, s3: Any | None = None) -> None:
        self.bucket = bucket
        self._s3 = s3

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = aws.client("s3")
        return self._s3

    def read_report(self, key: str) -> dict[str, Any] | None:
        """The report at ``key``, or None when it is gone (lifecycle rules expire old reports)."""
        if not key.endswith(".report.json"):
            return None
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "AccessDenied"}:
                return None
            raise
        report = json.loads(body.read(MAX_REPORT_BYTES))
        return report if isinstance(report, dict) else None
