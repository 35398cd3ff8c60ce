"""The local runtime after an invocation overruns its Timeout: the environment starts fresh.

The overrunning handler keeps running in an abandoned thread (Python cannot stop it); Lambda resets
the environment of an invocation that timed out, so the next invocation there must not share the
handler module (its batch processor, its resolver's current event) with the abandoned one.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tokenflow_local import lambda_runtime
from tokenflow_local.lambda_runtime import FunctionTimeout, invoke

# Module state that one invocation leaves for the next in the same environment, as a handler's
# module-level objects (Powertools' BatchProcessor, APIGatewayHttpResolver.current_event) do.
HANDLER = """
import threading
import time

seen = []
release = threading.Event()


def lambda_handler(event, context):
    seen.append(event["n"])
    if event.get("slow"):
        release.wait(5)
    return {"seen": list(seen)}
"""


@pytest.fixture
def function_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "stateful").mkdir()
    (tmp_path / "stateful" / "app.py").write_text(HANDLER)
    monkeypatch.setattr(lambda_runtime, "FUNCTIONS", tmp_path)
    return tmp_path


def test_an_environment_whose_invocation_timed_out_serves_the_next_one_from_a_fresh_module(
    function_dir: Path,
) -> None:
    first = lambda_runtime.load_handler("stateful", fresh=True, instance="env0")
    try:
        with pytest.raises(FunctionTimeout):
            invoke("stateful", {"n": 1, "slow": True}, instance="env0", timeout=0.2)

        answer = invoke("stateful", {"n": 2}, instance="env0", timeout=5)

        assert answer == {"seen": [2]}  # not [1, 2]: the timed-out invocation's module is not reused
        assert first.seen == [1]  # the abandoned invocation keeps its own copy
    finally:
        first.release.set()
        for thread in threading.enumerate():
            if thread.name == "invoke-stateful":
                thread.join(10)


def test_an_environment_keeps_its_module_between_invocations_that_finish(function_dir: Path) -> None:
    # Lambda reuses a warm environment: module state carries over (what the reset above is not).
    lambda_runtime.load_handler("stateful", fresh=True, instance="env0")

    invoke("stateful", {"n": 1}, instance="env0", timeout=5)

    assert invoke("stateful", {"n": 2}, instance="env0", timeout=5) == {"seen": [1, 2]}
