"""Schedule or post-import trigger -> continue the sweep's pass over the product's devices and queue
those that need a token (tokenflow.sweep): under a lease, from its cursor, within this invocation's
remaining time; a new pass at most once per schedule period, or at once after an import."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenflow import triggers, wiring
from tokenflow.observability import logger, metrics, tracer
from tokenflow.particle import ParticleAuthError


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.info(
        "Sweep started", extra={"trigger": event.get("reason") or event.get("detail-type", "schedule")}
    )
    try:
        result = wiring.sweeper().resume(context, new_pass=triggers.asks_for_new_pass(event))
    except ParticleAuthError:
        metrics.add_metric(name="ParticleAuthFailures", unit="Count", value=1)
        logger.error("Particle refused the access token; the sweep stopped (its cursor is kept)")
        raise
    return {
        "pages": result.pages,
        "devices": result.devices,
        "queued": result.queued,
        "already_queued": result.already_queued,
        "available_tokens": result.available_tokens,
        "pass_id": result.pass_id,
        "first_page": result.first_page,
        "next_page": result.next_page,
        "stopped": result.stopped,
    }
