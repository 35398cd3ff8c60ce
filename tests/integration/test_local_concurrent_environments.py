"""Concurrent HTTP API invocations in the local runtime each see their own event.

The local gateway runs concurrent requests in execution environments of their own, all in one
process; Powertools' event handler keeps the event it resolves on its ``BaseRouter`` class. A
webhook invocation that read another's event would handle that device's report and answer its own
device 2xx (that device, answered, reports no more and stays "delivered"). The test holds one
invocation after its resolve started until a second one, in another environment, has resolved, so
the interleaving is the same on every run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tokenflow_local import lambda_runtime
from tokenflow_local.gateway import Route, http_api_event

HANDLER = """
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

app = APIGatewayHttpResolver()
started = None  # set by the test: threading.Event, the held invocation has begun
go_on = None  # set by the test: threading.Event, it may read its event


@app.post("/report")
def report():
    if app.current_event.json_body["device"] == "held":
        started.set()
        go_on.wait(5)
    # What the webhook does: read the body (again) and answer for the device it names.
    return {"device": app.current_event.json_body["device"], "ctx": app.lambda_context.function_name}


def lambda_handler(event, context):
    return app.resolve(event, context)
"""

ROUTE = Route("POST", "/report", "reporter")


def _event(device: str) -> dict[str, Any]:
    body = json.dumps({"device": device}).encode()
    return http_api_event(
        ROUTE, {}, "POST", "/report", {"content-type": "application/json"}, body, "127.0.0.1"
    )


@pytest.fixture
def environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    (tmp_path / "reporter").mkdir()
    (tmp_path / "reporter" / "app.py").write_text(HANDLER)
    monkeypatch.setattr(lambda_runtime, "FUNCTIONS", tmp_path)
    started, go_on = threading.Event(), threading.Event()
    for instance in ("env0", "env1"):  # two execution environments, a module copy each
        module = lambda_runtime.load_handler("reporter", fresh=True, instance=instance)
        module.started, module.go_on = started, go_on
    return started, go_on


def test_an_invocation_reads_its_own_event_while_another_environment_resolves(
    environments: tuple[threading.Event, threading.Event],
) -> None:
    started, go_on = environments
    answers: dict[str, Any] = {}

    def held() -> None:
        answers["held"] = lambda_runtime.invoke("reporter", _event("held"), instance="env0", timeout=10)

    thread = threading.Thread(target=held)
    thread.start()
    try:
        assert started.wait(5)
        other = lambda_runtime.invoke("reporter", _event("other"), instance="env1", timeout=10)
    finally:
        go_on.set()
        thread.join(10)

    assert json.loads(other["body"])["device"] == "other"
    assert json.loads(answers["held"]["body"])["device"] == "held"  # not the other's event
    assert json.loads(answers["held"]["body"])["ctx"] == "reporter"
