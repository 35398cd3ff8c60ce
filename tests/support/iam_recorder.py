"""pytest plugin: records every AWS call the functions make during the tests, and checks at the end of
the session that each one is allowed by that function's own role (``least_privilege``).

How a call is recorded: a botocore event hook (``provide-client-params``, emitted by every client
before it builds a request, with the caller's own parameters) is added to botocore's built-in
handlers, so every session created afterwards (``tokenflow.aws``'s clients, Powertools' SSM
provider, the tests' own clients) carries it; moto hooks itself in the same way. A call counts
as a function's when a frame of ``functions/<name>/app.py`` is on the calling thread's stack: the
handler (or its module code at import) is running, whether a test called ``lambda_handler``
directly, through ``lambda_runtime.invoke``, or the local stack ran it in a background thread.
Calls made by the tests themselves, the CLI or the local stack's plumbing are not a function's
and are not recorded. ``after-call`` adds what an answer implies (a GetObject answered 404 needs
``s3:ListBucket``).

Under ``pytest -n 2`` each worker writes its recordings to a directory the controller created; the
controller (or the only process) combines them in ``pytest_sessionfinish``, evaluates them, fails
the session on any denied call and prints the summary. When the whole suite ran and passed,
docs/iam.md is rewritten from the result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from botocore import handlers

from tests.support import sam_template
from tests.support.iam_actions import Attribution, UnmappedCall, accesses, not_found_needs_list_bucket

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = str(ROOT / "functions") + os.sep
DOC = ROOT / "docs" / "iam.md"
RECORD_DIR_ENV = "TOKENFLOW_IAM_RECORDS"
CONTEXT_KEY = "tokenflow_iam"

_lock = threading.Lock()
_calls: dict[tuple[Any, ...], dict[str, Any]] = {}  # one entry per distinct permission use
_unmapped: set[str] = set()
_acting_as: ContextVar[str | None] = ContextVar("tokenflow_iam_acting_as", default=None)
_listeners: list[list[dict[str, Any]]] = []  # capture() blocks in progress


@contextmanager
def acting_as(function: str) -> Iterator[None]:
    """Attribute calls made in this block to ``functions/<function>`` (for tests that call the
    functions' code without their handler on the stack)."""
    token = _acting_as.set(function)
    try:
        yield
    finally:
        _acting_as.reset(token)


@contextmanager
def capture() -> Iterator[list[dict[str, Any]]]:
    """Every permission use recorded inside the block (as ``Call`` JSON), duplicates included, and
    kept out of the session's recording: the tests of the check make calls no function makes."""
    seen: list[dict[str, Any]] = []
    with _lock:
        _listeners.append(seen)
    try:
        yield seen
    finally:
        with _lock:
            _listeners.remove(seen)


# Calls Lambda itself makes with the function's execution role, which the local stack makes in these
# functions of lambda_runtime: the SQS event source mapping's polling ("Lambda needs the following
# permissions to manage messages in your Amazon SQS queue: sqs:ReceiveMessage, sqs:DeleteMessage,
# sqs:GetQueueAttributes", https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html)
# and an OnFailure destination's send ("Lambda uses the function's execution role to send the
# record", https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html).
_LAMBDA_SERVICE_FRAMES = {"poll_once", "send"}
# The local poller returns failed records at once with ChangeMessageVisibility; Lambda lets their
# visibility timeout run out instead, so that call is the emulation's, not a permission Lambda needs.
_LAMBDA_SERVICE_SKIPS = {"ChangeMessageVisibility", "ChangeMessageVisibilityBatch"}
_RUNTIME_FILE = str(ROOT / "local" / "tokenflow_local" / "lambda_runtime.py")


def current_function() -> tuple[str, bool] | None:
    """The function whose role a call on this thread runs under, and whether Lambda's own service
    (not the function's code) makes it."""
    forced = _acting_as.get()
    if forced:
        return forced, False
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(FUNCTIONS) and code.co_filename.endswith(os.sep + "app.py"):
            return Path(code.co_filename).parent.name, False
        if code.co_filename == _RUNTIME_FILE and code.co_name in _LAMBDA_SERVICE_FRAMES:
            function = frame.f_locals.get("function")
            if isinstance(function, str):
                return function, True
        frame = frame.f_back
    return None


@cache
def _template_facts() -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]], dict[str, Any]]:
    sam = sam_template.load()
    defaults = {name: spec.get("Default") for name, spec in sam.get("Parameters", {}).items()}
    by_type: dict[str, list[str]] = {}
    names: dict[str, Any] = {}
    name_properties = ("BucketName", "QueueName", "TableName", "FunctionName")
    for name, spec in sam["Resources"].items():
        by_type.setdefault(spec["Type"], []).append(name)
        props = spec.get("Properties", {})
        for prop in name_properties:
            if prop in props:
                names[name] = props[prop]
    globals_env = sam.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    envs = {}
    for spec in sam["Resources"].values():
        if spec["Type"] == "AWS::Serverless::Function":
            props = spec.get("Properties", {})
            directory = str(props.get("CodeUri", "")).rstrip("/").rsplit("/", 1)[-1]
            envs[directory] = {**globals_env, **props.get("Environment", {}).get("Variables", {})}
    return envs, defaults, by_type, names


@cache
def _service_queues() -> dict[str, dict[str, str | None]]:
    """Per function: the queue of its SQS event and of its OnFailure destination (logical ids)."""
    out: dict[str, dict[str, str | None]] = {}
    for spec in sam_template.load()["Resources"].values():
        if spec["Type"] != "AWS::Serverless::Function":
            continue
        props = spec.get("Properties", {})
        directory = str(props.get("CodeUri", "")).rstrip("/").rsplit("/", 1)[-1]
        events = [e.get("Properties", {}) for e in props.get("Events", {}).values() if e.get("Type") == "SQS"]
        destination = props.get("EventInvokeConfig", {}).get("DestinationConfig", {}).get("OnFailure", {})
        out[directory] = {
            "event": _target(events[0].get("Queue")) if events else None,
            "destination": _target(destination.get("Destination")),
        }
    return out


def _target(value: Any) -> str | None:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        arg = value["Fn::GetAtt"]
        return str(arg.split(".")[0] if isinstance(arg, str) else arg[0])
    return None


def attribution(function: str) -> Attribution:
    envs, defaults, by_type, names = _template_facts()
    return Attribution(envs.get(function, {}), defaults, by_type, names)


def _test_name() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "outside a test").rsplit(" (", 1)[0]


def _record(function: str, operation: str, found: list[Any]) -> None:
    test = _test_name()
    with _lock:
        for access in found:
            call = {"function": function, "operation": operation, "access": access.to_json(), "test": test}
            if _listeners:  # a capture() block takes its calls out of the session's recording
                for seen in _listeners:
                    seen.append(call)
                continue
            key = (function, operation, access)
            entry = _calls.get(key)
            if entry is None or test < entry["test"]:
                _calls[key] = call


def _on_params(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    found_function = current_function()
    if found_function is None:
        return
    function, by_lambda = found_function
    if by_lambda and model.name in _LAMBDA_SERVICE_SKIPS:
        return
    service = model.service_model.service_name
    operation = f"{service}.{model.name}"
    try:
        found = accesses(service, model.name, params, attribution(function))
    except UnmappedCall as exc:
        with _lock:
            _unmapped.add(f"{function}: {exc} (no IAM mapping in tests/support/iam_actions.py)")
        return
    if by_lambda:
        # Lambda's own calls go to the queue the template wires to the function: the SQS event's
        # queue for the poller, the OnFailure destination for a send.
        wired = _service_queues().get(function, {})
        target = wired.get("destination" if model.name == "SendMessage" else "event")
        found = [dataclasses.replace(a, logical=target) if a.kind == "queue" else a for a in found]
    context[CONTEXT_KEY] = (function, operation, dict(params))
    _record(function, operation, found)


def _on_after_call(http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
    seen = context.get(CONTEXT_KEY)
    if seen is None:
        return
    function, operation, params = seen
    if operation in {"s3.GetObject", "s3.HeadObject"} and http_response.status_code == 404:
        _record(function, operation, [not_found_needs_list_bucket(model.name, params, attribution(function))])


def install() -> None:
    """Add the hooks to every botocore session created from now on (idempotent)."""
    for spec in (("provide-client-params", _on_params), ("after-call", _on_after_call)):
        if spec not in handlers.BUILTIN_HANDLERS:
            handlers.BUILTIN_HANDLERS.append(spec)


def recorded() -> dict[str, Any]:
    with _lock:
        return {"calls": list(_calls.values()), "unmapped": sorted(_unmapped)}


def clear() -> None:
    with _lock:
        _calls.clear()
        _unmapped.clear()


install()


# ---- the pytest side ---------------------------------------------------------------------------


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config):
        # Workers are started after this and inherit the variable.
        os.environ[RECORD_DIR_ENV] = tempfile.mkdtemp(prefix="tokenflow-iam-")


def _dump(name: str) -> None:
    directory = os.environ.get(RECORD_DIR_ENV)
    if directory and os.path.isdir(directory):
        (Path(directory) / f"{name}.json").write_text(json.dumps(recorded()))


def _whole_suite(session: pytest.Session) -> bool:
    """Every test of tests/ was selected (no -k/-m, no path narrower than tests/)."""
    config = session.config
    if config.option.keyword or config.option.markexpr or config.option.deselect:
        return False
    args = [Path(a.split("::")[0]).resolve() for a in config.args] or [ROOT / "tests"]
    return all(a in {ROOT, ROOT / "tests"} for a in args)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _is_worker(config):
        _dump(config.workerinput["workerid"])  # type: ignore[attr-defined]
        return
    _dump("main")
    directory = os.environ.pop(RECORD_DIR_ENV, None)
    if not directory:
        return
    from tests.support.least_privilege import evaluate, load_calls, markdown, summary

    calls, unmapped = load_calls(sorted(Path(directory).glob("*.json")))
    shutil.rmtree(directory, ignore_errors=True)
    if not calls and not unmapped:
        return
    report = evaluate(calls, unmapped=unmapped)
    text = summary(report)
    if report.failed:
        text = "Calls the functions' roles do not allow:\n" + report.failure_text() + "\n\n" + text
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif exitstatus == 0 and _whole_suite(session):
        rendered = markdown(report)
        if not DOC.exists() or DOC.read_text() != rendered:
            DOC.parent.mkdir(exist_ok=True)
            DOC.write_text(rendered)
            text += f"\n  {DOC.relative_to(ROOT)} rewritten"
    config.stash[_REPORT] = text


_REPORT = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    text = config.stash.get(_REPORT, None)
    if text:
        terminalreporter.section("least privilege")
        terminalreporter.write_line(text)
