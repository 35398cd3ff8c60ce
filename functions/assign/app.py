"""SQS assign queue -> give each device its token and write its Ledger (tokenflow.assignment).

Partial batch responses: a record that must be retried goes back to the queue alone (the record
handler raises; Powertools' BatchProcessor reports it in ``batchItemFailures``, and raises
BatchProcessingError when every record failed, which returns the whole batch:
https://docs.powertools.aws.dev/lambda/python/latest/utilities/batch/).

Within a time budget: the invocation never waits past its remaining time less ``BUDGET_MARGIN_S``
(the Particle client's deadline). A device that must wait longer (a large ``Retry-After``, the
rate limit's turn) goes back to the queue invisible for that wait (``ChangeMessageVisibility``), and
so do the records left when the budget is spent: the batch is handed back, never lost to a Lambda
timeout.

Circuit breaker (tokenflow.breaker): when Particle says the configuration is wrong (401, 403, a
missing Ledger) the stack pauses and the rest of the batch goes back untouched, without calling
Particle again; while paused, each batch first makes one probe call and resumes when it succeeds.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenflow import rules, wiring
from tokenflow.assignment import AssignRequest, Deferred, Paused
from tokenflow.breaker import PAUSED_RECHECK_SECONDS, Breaker
from tokenflow.observability import logger, metrics, tracer

# Left when the budget ends: one Particle request's connect and read timeouts (3.05 + 10 s) and the
# DynamoDB writes that record its outcome, so the record in flight at the deadline still finishes.
BUDGET_MARGIN_S = 20.0
# Records left when the budget is spent come back almost at once, to a fresh invocation.
OUT_OF_TIME_DELAY_S = 1

processor = BatchProcessor(event_type=EventType.SQS)
# Per batch, not per container: the deadline, and the pause if the stack is (or became) paused.
_state: dict[str, Any] = {}


def handle_record(record: SQSRecord) -> str:
    paused = _state.get("paused")
    if paused:
        _hand_back(record, PAUSED_RECHECK_SECONDS)
        raise Paused(f"skipped: assignment is paused ({paused['reason']})")
    remaining = _state["deadline"] - time.monotonic()
    if remaining <= 0:
        _hand_back(record, OUT_OF_TIME_DELAY_S)
        raise Deferred("skipped: this invocation's time budget is spent", OUT_OF_TIME_DELAY_S)
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
        # Handled, the device's queued mark is gone (with its claim or delivery, else after it): a
        # later need of the device may queue it again (tokenflow.queue_once).
        return wiring.assigner().assign(request, receive_count)
    except Deferred as deferred:
        logger.info(
            "Device handed back to the queue: its wait outlives this invocation",
            extra={"device_id": request.device_id, "delay_s": deferred.delay},
        )
        _hand_back(record, deferred.delay)
        raise
    except Paused as paused_now:
        _state["paused"] = _breaker().trip(paused_now.reason)
        _hand_back(record, PAUSED_RECHECK_SECONDS)
        raise


def _breaker() -> Breaker:
    services = wiring.services()
    return Breaker(services.store(), services.particle(), services.clock)


def _hand_back(record: SQSRecord, delay: int) -> None:
    """Make the message visible again after ``delay`` seconds, whatever the queue's visibility
    timeout; the record is then reported failed, so Lambda leaves it in the queue.

    A failed record otherwise waits the queue's whole visibility timeout (set to six times the
    function's Timeout, as https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html advises)."""
    queue = wiring.services().assign_queue()
    queue.sqs.change_message_visibility(
        QueueUrl=queue.queue_url,
        ReceiptHandle=record.receipt_handle,
        VisibilityTimeout=rules.visibility_delay(delay),
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _state.clear()
    _state["deadline"] = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - BUDGET_MARGIN_S
    particle = wiring.services().particle()
    # The batch's claims share one query for candidate tokens (Assigner.batch).
    with particle.deadline(_state["deadline"]), wiring.assigner().batch(len(event.get("Records") or [])):
        _state["paused"] = _breaker().check()
        return process_partial_response(
            event=event, record_handler=handle_record, processor=processor, context=context
        )
