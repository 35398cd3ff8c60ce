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


def asks_for_new_pass(event: dict[str, Any]) -> bool:
    """Whether a sweep invocation comes from an import that added tokens."""
    return event.get("source") == "tokenflow" and str(event.get("reason", "")).startswith(AFTER_IMPORT)


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
