"""The sample events under events/ (the ones ``sam local invoke -e`` takes) and running a function's
real handler on an event, as Lambda would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenflow_local import lambda_runtime

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``events/<name>`` (for example ``"api/get-summary.json"``), free to change."""
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def invoke(function: str, event: dict[str, Any]) -> Any:
    """``functions/<function>/app.py``'s handler on ``event`` in a new container: its module loaded
    anew, as on a cold start (``lambda_runtime.invoke`` reuses the one loaded before)."""
    lambda_runtime.load_handler(function, fresh=True)
    return lambda_runtime.invoke(function, event)
