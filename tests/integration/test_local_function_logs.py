"""Each function's log lines on the local runtime carry that function's own name, as they do in
Lambda, where each function runs in a process of its own: here every function shares one process and
``tokenflow.observability``'s one Logger, so the keys ``inject_lambda_context`` appends (function_name,
function_arn, request id) must stay with the invocation that appended them
(``lambda_runtime._PerInvocationLogFormat``)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from tokenflow.observability import logger
from tokenflow_local import lambda_runtime

# Two handlers as the project's functions are written: the package's one Logger, the context injected.
HANDLER = """
import threading
from tokenflow.observability import logger

BARRIER = None  # set by the test: both invocations are inside their handler before either logs


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event, context):
    BARRIER.wait(timeout=10)
    logger.info("working", extra={"step": event["step"]})
    BARRIER.wait(timeout=10)
    return {"ok": True}
"""


class Lines(logging.Handler):
    """The JSON lines the Powertools formatter writes, collected."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(HANDLER)
    monkeypatch.setattr(lambda_runtime, "FUNCTIONS", tmp_path)
    names = {"alpha": "tokenflow-local-AlphaFunction", "beta": "tokenflow-local-BetaFunction"}
    monkeypatch.setattr(lambda_runtime, "deployed_names", names)
    return tmp_path


def test_concurrent_invocations_log_under_their_own_function_names(functions: Path) -> None:
    barrier = threading.Barrier(2)
    for name in ("alpha", "beta"):
        lambda_runtime.load_handler(name, fresh=True).BARRIER = barrier
    lines = Lines()
    lines.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(lines)  # the Logger's own logging.Logger: every line it writes
    try:
        threads = [
            threading.Thread(
                target=lambda_runtime.invoke, args=(name, {"step": name}), kwargs={"timeout": 20}
            )
            for name in ("alpha", "beta")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        logger._logger.removeHandler(lines)
    working = {line["step"]: line for line in lines.lines if line.get("message") == "working"}
    assert set(working) == {"alpha", "beta"}
    for step, line in working.items():
        # Each line names its own function, as Lambda's context names it (the deployed name).
        assert line["function_name"] == lambda_runtime.deployed_names[step]
        assert line["function_arn"].endswith(f":function:{lambda_runtime.deployed_names[step]}")
    assert working["alpha"]["function_request_id"] != working["beta"]["function_request_id"]
