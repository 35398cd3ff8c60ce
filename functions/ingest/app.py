"""S3 ObjectCreated under incoming/ -> import the Blynk token export (tokenflow.ingest)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenflow import wiring
from tokenflow.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    outcomes = []
    for record in event.records:
        # S3 event keys are URL-encoded ("incoming/Blynk+export.zip"); the object's real key is not.
        key = unquote_plus(record.s3.get_object.key)
        outcome = wiring.importer(record.s3.bucket.name).ingest(key)
        if outcome:
            outcomes.append(
                {
                    "import_id": outcome.sha256,
                    "status": outcome.status,
                    "tokens_added": outcome.tokens_added,
                    "report_key": outcome.report_key,
                }
            )
    return {"imports": outcomes}
