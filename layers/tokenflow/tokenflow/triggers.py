"""How one function asks another to run: an asynchronous Lambda invocation.

Ingest asks for a sweep as soon as an import adds tokens, so waiting devices are served at once
instead of at the next scheduled sweep. The local stack answers the same Lambda Invoke API.
"""

from __future__ import annotations

import json
from typing import Any

from tokenflow import aws
from tokenflow.observability import logger

# The reason ingest gives (``wiring.Services.importer``): tokens were added, so the waiting devices
# of every page may be served now; the sweep starts a new pass for it (``Sweeper.resume``).
AFTER_IMPORT = "import added"


# The reason the API gives when an operator asks to assign a device the table does not know yet
# (``Lifecycle.assign_now``): somebody is waiting for that device, so the pass starts now.
OPERATOR_ASKED = "assign requested for an unknown device"


def asks_for_new_pass(event: dict[str, Any]) -> bool:
    """Whether a sweep invocation asks for a new pass now, rather than at the schedule's pace.

    Yes for an import that added tokens, for an operator's request through the API, and for a direct
    invocation by hand (``aws lambda invoke``: an event that is neither the schedule's nor one of
    Tokenflow's own), since whoever runs the sweep by hand wants a pass. No for the schedule
    (EventBridge's ``Scheduled Event``) and for the automatic requests (status reports from unknown
    devices), which keep the pace of one pass per schedule period.
    """
    if event.get("detail-type") == "Scheduled Event":
        return False
    if event.get("source") == "tokenflow":
        reason = str(event.get("reason", ""))
        return reason.startswith(AFTER_IMPORT) or reason == OPERATOR_ASKED
    return True


def request_sweep(function_name: str, reason: str) -> None:
    """Start the sweep function asynchronously; a failure is logged, never fatal (the schedule catches up)."""
    if not function_name:
        return
    try:
        aws.client("lambda").invoke(
            FunctionName=function_name,
            InvocationType="Event",
            Payload=json.dumps({"source": "tokenflow", "reason": reason}).encode(),
        )
    except Exception:  # the scheduled sweep will do the same work a little later
        logger.exception("Could not start a sweep", extra={"function": function_name})
