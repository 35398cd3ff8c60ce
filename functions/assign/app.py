"""SQS assign queue -> give each device its token and write its Ledger (tokenflow.assignment).

Partial batch responses: a record that must be retried goes back to the queue alone. When Particle
refuses the access token (401) the rest of the batch is returned untouched, without calling
Particle again: retrying cannot help until an operator replaces the token (the alarm says so).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenflow import queue_once, wiring
from tokenflow.assignment import AssignRequest, AuthFailure
from tokenflow.observability import logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)
# Per batch, not per container: whether Particle refused the access token earlier in this batch.
_state: dict[str, Any] = {}


def handle_record(record: SQSRecord) -> str:
    if _state.get("auth_failed"):
        raise AuthFailure("skipped: Particle refused the access token earlier in this batch")
    try:
        request = AssignRequest.from_message(json.loads(record.body))
    except (ValueError, TypeError) as exc:
        # A malformed message can never succeed: log it and let it go rather than loop to the DLQ.
        logger.error(
            "Dropping a malformed assign request", extra={"message_id": record.message_id, "error": str(exc)}
        )
        return "malformed"
    receive_count = int(record.attributes.approximate_receive_count or 1)
    try:
        outcome = wiring.assigner().assign(request, receive_count)
        # Handled: a later need of the device may queue it again (tokenflow.queue_once).
        queue_once.handled(wiring.queue_marks(), json.loads(record.body))
        return outcome
    except AuthFailure:
        _state["auth_failed"] = True
        raise


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _state["auth_failed"] = False
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
