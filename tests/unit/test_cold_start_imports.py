"""What a handler's import leaves for later: X-Ray, the Parameters utility, the OpenAPI models, boto3
and requests.

Each case runs in a fresh interpreter: what matters is what ``import app`` puts in ``sys.modules``,
and the X-Ray patches are process-wide. bench/bench_cold_start.py measures the times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws_lambda_powertools import Tracer

from tokenflow.observability import tracing_enabled

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ["ingest", "sweep", "assign", "api", "webhook"]
WATCHED = [
    "aws_xray_sdk",
    "aws_lambda_powertools.utilities.parameters",
    "aws_lambda_powertools.event_handler.openapi.models",
    "pydantic",
    "boto3",
    "requests",
]
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def _environment(function_dir: Path, *, in_lambda: bool) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERTOOLS_", "AWS_", "LAMBDA_", "_X_AMZN")) and key != "PYTHONPATH"
    }
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        POWERTOOLS_SERVICE_NAME="tokenflow-tests",
        PYTHONPATH=os.pathsep.join([str(ROOT / "layers" / "tokenflow"), str(function_dir)]),
    )
    if in_lambda:
        env.update(LAMBDA_TASK_ROOT=str(function_dir), _X_AMZN_TRACE_ID=TRACE_HEADER)
    else:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def _run(code: str, env: dict[str, str], cwd: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("in_lambda", [True, False], ids=["tracing-on", "tracing-off"])
@pytest.mark.parametrize("handler", HANDLERS)
def test_handler_import_leaves_xray_parameters_boto3_and_requests_for_later_and_openapi_to_the_api(
    handler: str, in_lambda: bool
) -> None:
    folder = ROOT / "functions" / handler
    code = f"import json, sys, app; print(json.dumps({{m: m in sys.modules for m in {WATCHED!r}}}))"
    loaded = _run(code, _environment(folder, in_lambda=in_lambda), folder)

    assert loaded["aws_xray_sdk"] is False
    assert loaded["aws_lambda_powertools.utilities.parameters"] is False
    # Only the operator API validates requests and serves an OpenAPI description.
    assert loaded["aws_lambda_powertools.event_handler.openapi.models"] is (handler == "api")
    assert loaded["pydantic"] is (handler == "api")
    # The first DynamoDB item or Particle call imports them (tokenflow.store.codec, tokenflow.particle).
    assert loaded["boto3"] is False
    assert loaded["requests"] is False


TRACED_HANDLER = """
import json, sys
from tokenflow.observability import LazyTracer

tracer = LazyTracer()

@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event, context):
    import botocore.client
    return {"answer": event["n"] * 2, "botocore_patched": hasattr(botocore.client, "_xray_enabled")}

facts = {"enabled": tracer.enabled, "xray_after_decoration": "aws_xray_sdk" in sys.modules}

# Record what the X-Ray SDK would send to the daemon (imported only now, after the check above).
from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter

sent = []

class Recording(UDPEmitter):
    def send_entity(self, entity):
        sent.append(json.loads(entity.serialize()))

xray_recorder.configure(emitter=Recording())
facts["first"] = lambda_handler({"n": 21}, None)
facts["second"] = lambda_handler({"n": 1}, None)
facts["subsegments"] = [
    {"name": s["name"], "annotations": s.get("annotations", {}), "metadata": s.get("metadata", {})}
    for s in sent
]
print(json.dumps(facts))
"""


def test_tracer_is_built_at_the_first_invocation_and_traces_it_where_tracing_is_on(tmp_path: Path) -> None:
    facts = _run(TRACED_HANDLER, _environment(tmp_path, in_lambda=True), tmp_path)

    assert facts["enabled"] is True
    assert facts["xray_after_decoration"] is False
    # botocore was patched before the handler's body ran: its AWS calls are traced from the first one.
    assert facts["first"] == {"answer": 42, "botocore_patched": True}
    assert facts["second"] == {"answer": 2, "botocore_patched": True}
    handler_segments = [s for s in facts["subsegments"] if s["name"] == "## lambda_handler"]
    assert [s["annotations"]["ColdStart"] for s in handler_segments] == [True, False]
    assert all(s["annotations"]["Service"] == "tokenflow-tests" for s in handler_segments)
    # capture_response=False is passed through: no answer is kept in the trace.
    assert all("lambda_handler response" not in json.dumps(s["metadata"]) for s in handler_segments)


def test_a_disabled_tracer_leaves_the_handler_as_it_is(tmp_path: Path) -> None:
    code = """
import json, sys
from tokenflow.observability import LazyTracer
tracer = LazyTracer()
def handler(event, context):
    return event
def failing(event, context):
    raise KeyError("no")
wrapped = tracer.capture_lambda_handler(handler)
bare = tracer.capture_lambda_handler(capture_response=False)(failing)
try:
    bare({}, None)
    raised = None
except KeyError as exc:
    raised = str(exc)
print(json.dumps({"enabled": tracer.enabled, "same": wrapped is handler and bare is failing,
                  "answer": wrapped({"a": 1}, None), "raised": raised,
                  "xray": "aws_xray_sdk" in sys.modules}))
"""
    facts = _run(code, _environment(tmp_path, in_lambda=False), tmp_path)

    assert facts == {"enabled": False, "same": True, "answer": {"a": 1}, "raised": "'no'", "xray": False}


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LAMBDA_TASK_ROOT": "/var/task"},
        {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"},
        {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"},
        {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"},
        {"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"},
        {"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"},
        {"POWERTOOLS_TRACE_DISABLED": "false"},
    ],
)
def test_tracing_is_on_exactly_where_powertools_would_trace(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    # Powertools' own decision (a private helper, read here so that an upgrade that changes the
    # rules fails this test rather than silently tracing where Powertools would not).
    assert tracing_enabled() is (not Tracer._is_tracer_disabled())
    assert tracing_enabled(env) is tracing_enabled()
