"""Run the functions' handlers the way Lambda does, without Lambda: load, build events, poll SQS,
queue asynchronous invocations, answer the Invoke API.

The local stack and the tests use this to call the real, unchanged handlers with the events AWS
would send: an S3 notification, a schedule tick, a batch of SQS messages (with receive counts and
partial batch failures honoured as the SQS event source mapping honours them). ``AsyncFunction`` is
Lambda's asynchronous invocation (a queue, retries, an OnFailure destination) and ``LambdaEndpoint``
its Invoke API, which the functions' own ``lambda.invoke`` reaches through ``AWS_ENDPOINT_URL_LAMBDA``.
(Over the usual size: the invocation, its limits and the three ways Lambda invokes share one model
of an invocation, which splitting would duplicate.)

Each invocation runs under its function's ``Timeout`` from template.yaml, as Lambda runs it: "The
amount of time in seconds that Lambda allows a function to run before stopping it" (the Lambda API's
FunctionConfiguration ``Timeout``, https://docs.aws.amazon.com/lambda/latest/api/API_FunctionConfiguration.html;
a stopped invocation is logged as "Task timed out after N seconds" and counts as an error). The
handler runs in a worker thread; when it is still running at its Timeout the invocation fails with
``FunctionTimeout`` (an SQS batch returns to the queue whole, an asynchronous event is retried) and
the thread is abandoned: Python cannot stop a thread, so what it does afterwards is the stand-in for
work that Lambda would have cut off; the environment's next invocation gets a fresh copy of the
handler module, as Lambda resets the environment. The context answers the time left
(``get_remaining_time_in_millis``) and the template's ``MemorySize``; the process's peak resident
memory is logged with each overrun.
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import logging
import queue
import re
import resource as rusage
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus, unquote

from tokenflow_local import resources
from tokenflow_local.processes import port_error

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


@dataclass
class LambdaContext:
    """What Powertools reads from a Lambda context object."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = ""
    invoked_function_arn: str = ""
    log_stream_name: str = "local"
    timeout_s: float = 300.0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = (
            self.invoked_function_arn
            or f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_s - time.monotonic()) * 1000))


class FunctionTimeout(Exception):
    """The invocation ran past its function's Timeout (Lambda: "Task timed out after N seconds")."""


# Lambda's defaults when neither the function nor the Globals set them (3 s, 128 MB).
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MEMORY_MB = 128


@cache
def function_limits() -> dict[str, tuple[float, int]]:
    """Per function directory (functions/<name>): its Timeout in seconds and MemorySize in MB, from
    template.yaml (the function's own, else the Globals', else Lambda's defaults)."""
    doc = resources.template()
    defaults = doc.get("Globals", {}).get("Function", {})
    limits = {}
    for logical_id, spec in doc["Resources"].items():
        if spec.get("Type") != "AWS::Serverless::Function":
            continue
        props = spec.get("Properties", {})
        timeout = props.get("Timeout", defaults.get("Timeout", DEFAULT_TIMEOUT_S))
        memory = props.get("MemorySize", defaults.get("MemorySize", DEFAULT_MEMORY_MB))
        limits[resources.function_dir(logical_id)] = (
            float(timeout) if isinstance(timeout, int | float) else DEFAULT_TIMEOUT_S,
            int(memory) if isinstance(memory, int) else DEFAULT_MEMORY_MB,
        )
    return limits


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports ru_maxrss in kilobytes). The local
    stack runs every function in one process, so it bounds any one invocation's use from above."""
    return rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss / 1024


_metrics_flush_lock = threading.RLock()

# The metric set's writers, serialised with the flushes (a flush clears the set: an RLock).
_METRIC_WRITERS = ("add_metric", "add_dimension", "add_dimensions", "add_metadata", "clear_metrics")


def _serialise_metric_flushes() -> None:
    """Make Powertools' metric flush atomic across the functions and the concurrent invocations
    this process runs.

    In Lambda each execution environment has a process of its own; here every function and every
    concurrent invocation (the gateway's environments, the SQS pollers) runs in one process, and
    Powertools keeps one metric set for all ``Metrics`` instances. One handler's flush could then
    empty the set between another's "is there anything" check and its serialisation, which raises
    "Must contain at least one metric", or another handler could add a metric while a flush walks
    the set ("dictionary changed size during iteration"). Holding one lock over each flush and each
    change to the set keeps them apart; what a flush carries may still mix invocations' metrics
    (local only)."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    flush = AmazonCloudWatchEMFProvider.flush_metrics
    if getattr(flush, "_serialised", False):
        return

    def serialised(self: Any, raise_on_empty_metrics: bool = False) -> None:
        with _metrics_flush_lock:
            flush(self, raise_on_empty_metrics)

    serialised._serialised = True  # type: ignore[attr-defined]
    AmazonCloudWatchEMFProvider.flush_metrics = serialised  # type: ignore[method-assign]
    for name in _METRIC_WRITERS:
        setattr(
            AmazonCloudWatchEMFProvider, name, _under_metrics_lock(getattr(AmazonCloudWatchEMFProvider, name))
        )


def _under_metrics_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _metrics_flush_lock:
            return method(*args, **kwargs)

    return locked


# functions/<name> -> the function's name as AWS knows it (what the context's function_name and
# ARN carry); the running stack registers its deployment's names, else the directory name is used.
deployed_names: dict[str, str] = {}


def register_function_names(names: dict[str, str]) -> None:
    """Name each function's invocations after the deployment's function (``LocalStack`` does this)."""
    deployed_names.clear()
    deployed_names.update(names)


# Each invocation's own Powertools log keys (formatter id -> keys), set fresh for every invocation.
_invocation_log_keys: contextvars.ContextVar[dict[int, dict[str, Any]]] = contextvars.ContextVar(
    "tokenflow_local_invocation_log_keys"
)


class _PerInvocationLogFormat:
    """``LambdaPowertoolsFormatter.log_format`` (the keys every log line carries), per invocation.

    In Lambda each function has a process of its own, so the one ``Logger`` of ``tokenflow`` (and
    the keys ``inject_lambda_context`` appends to it: function_name, function_arn, request id, cold
    start) belongs to one function. Here every function shares the process and that Logger, and
    concurrent invocations would overwrite each other's keys: an assign line could carry the
    webhook's function_name. Inside an invocation (``invoke``) the formatter reads and writes a copy
    of its keys private to that invocation; outside any, the shared keys, as before.
    """

    def __get__(self, formatter: Any, owner: type | None = None) -> Any:
        if formatter is None:
            return self
        base = formatter.__dict__["_tokenflow_log_format"]
        keys = _invocation_log_keys.get(None)
        if keys is None:
            return base
        mine = keys.get(id(formatter))
        if mine is None:
            mine = keys[id(formatter)] = dict(base)
        return mine

    def __set__(self, formatter: Any, value: Any) -> None:
        keys = _invocation_log_keys.get(None)
        if keys is None or "_tokenflow_log_format" not in formatter.__dict__:
            formatter.__dict__["_tokenflow_log_format"] = value
        else:
            keys[id(formatter)] = value


def _isolate_log_keys() -> None:
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    if isinstance(LambdaPowertoolsFormatter.__dict__.get("log_format"), _PerInvocationLogFormat):
        return
    # Formatters built before the patch keep their keys: move them behind the descriptor.
    import gc

    existing = []
    for candidate in gc.get_objects():
        try:
            if isinstance(candidate, LambdaPowertoolsFormatter):
                existing.append(candidate)
        except ReferenceError:  # a weak proxy whose object is gone: not a formatter
            continue
    LambdaPowertoolsFormatter.log_format = _PerInvocationLogFormat()  # type: ignore[assignment]
    for formatter in existing:
        if "log_format" in formatter.__dict__:
            formatter.__dict__["_tokenflow_log_format"] = formatter.__dict__.pop("log_format")


# The event and context of the HTTP API invocation running in this thread's context
# (_isolate_resolver_events).
_resolver_event: contextvars.ContextVar[Any] = contextvars.ContextVar("tokenflow_local_resolver_event")
_resolver_context: contextvars.ContextVar[Any] = contextvars.ContextVar("tokenflow_local_resolver_context")


def _isolate_resolver_events() -> None:
    """Give each invocation its own ``app.current_event`` and ``app.lambda_context``.

    Powertools' event handler keeps the event being resolved on the ``BaseRouter`` class
    (``BaseRouter.current_event = ...`` in ``ApiGatewayResolver.resolve``), which is one per
    process. In Lambda an execution environment is a process running one invocation at a time; here
    the gateway's concurrent environments share one process, so a webhook invocation could read the
    event of another one started after it: it would handle that device's report twice and answer
    its own device 2xx without handling its report (the device, answered, reports no more). The
    resolver's instances now read the event their own invocation resolves (a context variable: each
    invocation runs in a context of its own, ``invoke``); outside any, the class's, as before.
    """
    from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver, BaseRouter
    from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

    if getattr(ApiGatewayResolver.resolve, "_per_invocation", False):
        return
    resolve = ApiGatewayResolver.resolve

    def per_invocation_resolve(self: Any, event: Any, context: Any) -> Any:
        raw = event.raw_event if isinstance(event, BaseProxyEvent) else event
        _resolver_event.set(self._to_proxy_event(raw))
        _resolver_context.set(context)
        return resolve(self, event, context)

    per_invocation_resolve._per_invocation = True  # type: ignore[attr-defined]

    def event_of(self: Any) -> Any:
        return _resolver_event.get(BaseRouter.__dict__.get("current_event"))

    def set_event(self: Any, value: Any) -> None:
        _resolver_event.set(value)

    def context_of(self: Any) -> Any:
        return _resolver_context.get(BaseRouter.__dict__.get("lambda_context"))

    def set_context(self: Any, value: Any) -> None:
        _resolver_context.set(value)

    ApiGatewayResolver.resolve = per_invocation_resolve  # type: ignore[method-assign]
    ApiGatewayResolver.current_event = property(event_of, set_event)  # type: ignore[assignment]
    ApiGatewayResolver.lambda_context = property(context_of, set_context)  # type: ignore[assignment]


def load_handler(name: str, *, fresh: bool = False, instance: str = "") -> ModuleType:
    """Import ``functions/<name>/app.py`` under a module name of its own (every handler file is app.py).

    ``instance`` loads another copy with its own module state, as each concurrent Lambda execution
    environment has: handler modules keep per-invocation state (a batch processor, caches) that two
    threads must not share.
    """
    module_name = f"tokenflow_function_{name}" + (f"__{instance}" if instance else "")
    if module_name in sys.modules and not fresh:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler for function {name}")
    _serialise_metric_flushes()
    _isolate_log_keys()
    _isolate_resolver_events()
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def invoke(name: str, event: dict[str, Any], *, instance: str = "", timeout: float | None = None) -> Any:
    """Run the handler of ``functions/<name>`` on ``event`` within its Timeout (``timeout``: another,
    for tests); FunctionTimeout when it overruns, else its answer or its exception."""
    module = load_handler(name, instance=instance)
    handler = module.lambda_handler
    limit, memory = function_limits().get(name, (DEFAULT_TIMEOUT_S, DEFAULT_MEMORY_MB))
    limit = limit if timeout is None else timeout
    context = LambdaContext(
        function_name=deployed_names.get(name, name), memory_limit_in_mb=memory, timeout_s=limit
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        _invocation_log_keys.set({})  # this invocation's own log keys (_PerInvocationLogFormat)
        try:
            outcome["answer"] = handler(event, context)
        except BaseException as exc:  # handed to the caller, as Lambda reports a function error
            outcome["error"] = exc

    # The caller's context variables go with it (what a test attributes its calls to).
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(run,), name=f"invoke-{name}", daemon=True
    )
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        log.error(
            "%s: Task timed out after %.2f seconds (peak RSS of the process %.0f MB, MemorySize %d MB)",
            name,
            limit,
            peak_rss_mb(),
            memory,
        )
        # Lambda resets an execution environment whose invocation crashed or timed out ("Failures
        # during the Invoke phase", https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html):
        # the next invocation starts in a fresh one. The abandoned thread still runs in this copy of
        # the module, so the next invocation of this environment loads another copy rather than
        # share the module state (a batch processor, the resolver's current event) with it.
        if sys.modules.get(module.__name__) is module:
            del sys.modules[module.__name__]
        raise FunctionTimeout(f"Task timed out after {limit:.2f} seconds")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("answer")


def s3_put_event(bucket: str, key: str, size: int = 0) -> dict[str, Any]:
    """An S3 ObjectCreated:Put notification; the key is URL-encoded as S3 encodes it."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "tokenflow-local",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "sequencer": uuid.uuid4().hex[:16],
                    },
                },
            }
        ]
    }


def sqs_event(queue_arn: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", "0"),
                    "SenderId": "local",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def poll_once(
    sqs: Any,
    queue_url: str,
    function: str,
    *,
    batch_size: int = 10,
    retry_delay: int = 0,
    instance: str = "",
    timeout: float | None = None,
    wait_seconds: int = 0,
) -> int:
    """One poll of the SQS event source: receive a batch (long-polling up to ``wait_seconds`` for
    one, as the event source mapping's pollers do), invoke, delete what succeeded.

    Failed records (``batchItemFailures``, or all of them when the handler raised) become visible
    again after ``retry_delay`` seconds, as the queue's visibility timeout would make them; except
    those whose visibility the handler set itself (``ChangeMessageVisibility``: a device handed back
    for a while), which keep it, as on AWS, where the event source mapping leaves a failed message's
    visibility alone. Returns the number of messages handled (0: the queue was empty).
    """
    answer = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=batch_size,
        AttributeNames=["All"],
        WaitTimeSeconds=wait_seconds,
    )
    messages = answer.get("Messages", [])
    if not messages:
        return 0
    arn = _queue_arns.get(queue_url)
    if arn is None:  # a queue's ARN never changes: asked once, not once per batch
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        arn = _queue_arns[queue_url] = attributes["QueueArn"]
    _watch_visibility_changes()
    try:
        result = invoke(function, sqs_event(arn, messages), instance=instance, timeout=timeout) or {}
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
    except Exception:  # the whole batch returns to the queue, as with Lambda
        failed = {m["MessageId"] for m in messages}
    with _handed_back_lock:
        kept = {m["MessageId"] for m in messages if m["ReceiptHandle"] in _handed_back}
        _handed_back.difference_update(m["ReceiptHandle"] for m in messages)
    done = [m for m in messages if m["MessageId"] not in failed]
    for start in range(0, len(done), 10):
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                for n, m in enumerate(done[start : start + 10])
            ],
        )
    for m in messages:
        if m["MessageId"] in failed and m["MessageId"] not in kept:
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=retry_delay
            )
    return len(messages)


_queue_arns: dict[str, str] = {}

# Receipt handles whose visibility a function changed itself (seen through its SQS client).
_handed_back: set[str] = set()
_handed_back_lock = threading.Lock()


def _note_visibility_change(params: dict[str, Any], **_: Any) -> None:
    with _handed_back_lock:
        _handed_back.add(str(params.get("ReceiptHandle")))


def _watch_visibility_changes() -> None:
    """Note every ChangeMessageVisibility the functions' shared SQS client sends (``tokenflow.aws``;
    registered once per client, which tests and the stack make anew after switching endpoints)."""
    from tokenflow import aws

    aws.client("sqs").meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibility",
        _note_visibility_change,
        unique_id="tokenflow-local-handed-back",
    )


def schedule_event() -> dict[str, Any]:
    return {"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}


# ---- asynchronous invocations -------------------------------------------------------------------


@dataclass
class FunctionError:
    function: str
    error: str
    at: float = field(default_factory=time.time)


_WAKE: Any = {"tokenflow-local": "wake"}  # put on a function's queue by stop(): not an event


class AsyncFunction:
    """One function's asynchronous invocations (S3 notifications, schedules, ``InvocationType=Event``).

    Lambda queues such events and runs them with up to ``MaximumRetryAttempts`` retries, then hands
    the event to the ``OnFailure`` destination. Here one worker thread per function does the same
    (one worker: the sweep's reserved concurrency of 1, and enough for ingest locally).
    """

    def __init__(
        self,
        name: str,
        function_name: str,
        *,
        retries: int,
        retry_delay: float,
        on_failure: Callable[[dict[str, Any], Exception], None] | None,
        errors: list[FunctionError],
        coalesce: bool = False,
    ) -> None:
        self.name = name  # functions/<name>/app.py
        self.function_name = function_name  # as AWS would name it (FunctionName in Invoke)
        self.retries = retries
        self.retry_delay = retry_delay
        self.on_failure = on_failure
        self.errors = errors
        self.coalesce = coalesce
        self.invocations = 0
        self._jobs: queue.Queue[dict[str, Any]] = queue.Queue()
        self._run_lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name=f"fn-{name}", daemon=True)

    def start(self) -> None:
        load_handler(self.name, fresh=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._jobs.put(_WAKE)
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def submit(self, event: dict[str, Any]) -> bool:
        """Queue an event; a coalescing function drops it when one is already waiting (same work)."""
        if self.coalesce and any(job is not _WAKE for job in list(self._jobs.queue)):
            return False
        self._idle.clear()
        self._jobs.put(event)
        return True

    def call(self, event: dict[str, Any]) -> Any:
        """A synchronous invocation (``RequestResponse``), sharing the function's concurrency."""
        with self._run_lock:
            self.invocations += 1
            return invoke(self.name, event)

    @property
    def idle(self) -> bool:
        return self._idle.is_set() and all(job is _WAKE for job in list(self._jobs.queue))

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Blocks until an event (or stop()'s wake-up) arrives: an idle function costs nothing.
            event = self._jobs.get()
            if event is _WAKE:
                continue
            self._idle.clear()
            self._run_event(event)
            if self._jobs.empty():
                self._idle.set()

    def _run_event(self, event: dict[str, Any]) -> None:
        for attempt in range(self.retries + 1):
            try:
                self.call(event)
                break
            except Exception as exc:
                log.exception("%s failed (attempt %d)", self.function_name, attempt + 1)
                self.errors.append(FunctionError(self.name, f"{type(exc).__name__}: {exc}"))
                if attempt == self.retries:
                    if self.on_failure:
                        self.on_failure(event, exc)
                elif self._stop.wait(self.retry_delay):
                    break


def sqs_failure_destination(
    sqs: Any, queue_url: str, function: str
) -> Callable[[dict[str, Any], Exception], None]:
    """An ``OnFailure`` destination on an SQS queue: what Lambda sends there once retries run out, in
    short (the invocation record's ``requestContext``, ``requestPayload`` and ``responsePayload``)."""

    def send(event: dict[str, Any], exc: Exception) -> None:
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=json.dumps(
                {
                    "requestContext": {"condition": "RetriesExhausted", "functionArn": function},
                    "requestPayload": event,
                    "responsePayload": {"errorType": type(exc).__name__, "errorMessage": str(exc)},
                }
            ),
        )

    return send


# ---- the Invoke API ---------------------------------------------------------------------------------


class LambdaEndpoint:
    """The Lambda Invoke API (``POST /2015-03-31/functions/{name}/invocations``) for the local functions.

    Ingest starts a sweep with ``lambda.invoke(InvocationType="Event")``; boto3 sends that here when
    ``AWS_ENDPOINT_URL_LAMBDA`` names this server, so the function code stays as it runs on AWS.
    """

    def __init__(self, host: str, port: int, functions: dict[str, AsyncFunction]) -> None:
        self.functions = functions  # by FunctionName
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as exc:
            raise port_error("The local Lambda endpoint", host, port, exc) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lambda-endpoint", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                payload = b"" if body is None else json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = INVOKE_PATH.match(self.path.split("?")[0])
                if not match:
                    self._answer(404, {"message": "unknown route"}, {"x-amzn-ErrorType": "UnknownOperation"})
                    return
                # FunctionName may be a name, a partial or a full ARN (optionally with a qualifier).
                name = unquote(match["name"])
                if name.startswith("arn:"):
                    name = name.split(":")[6]
                function = endpoint.functions.get(name.split(":")[0])
                if function is None:
                    self._answer(
                        404,
                        {"Type": "User", "message": f"Function not found: {name}"},
                        {"x-amzn-ErrorType": "ResourceNotFoundException"},
                    )
                    return
                try:
                    event = json.loads(raw) if raw else {}
                except ValueError:
                    self._answer(
                        400,
                        {"Type": "User", "message": "Could not parse request body into json"},
                        {"x-amzn-ErrorType": "InvalidRequestContentException"},
                    )
                    return
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                if kind == "DryRun":
                    self._answer(204, None)
                elif kind == "Event":
                    function.submit(event)
                    self._answer(202, None)
                else:
                    try:
                        result = function.call(event)
                    except Exception as exc:
                        self._answer(
                            200,
                            {"errorMessage": str(exc), "errorType": type(exc).__name__},
                            {"X-Amz-Function-Error": "Unhandled"},
                        )
                    else:
                        self._answer(200, result)

        return Handler
