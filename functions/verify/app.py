"""Schedule -> check in Blynk that confirmed devices are live (tokenflow.liveness)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenflow import liveness
from tokenflow.observability import logger, metrics, tracer

# Left in hand when the pass stops for time: one Blynk read (10 s read timeout, retries with
# backoff) and the cursor's write must still fit before Lambda stops the function.
RESERVE_SECONDS = 20.0


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.info("Verification started", extra={"trigger": event.get("detail-type", "schedule")})

    def remaining() -> float:
        return context.get_remaining_time_in_millis() / 1000 - RESERVE_SECONDS

    result = liveness.verifier().run(remaining)
    return {
        "pages": result.pages,
        "devices": result.devices,
        "checked": result.checked,
        "checks": result.checks,
        "errors": result.errors,
        "walk_complete": result.walk_complete,
    }
