"""The whole Tokenflow stack on one machine: embedded AWS, the Particle simulator, the functions wired as
template.yaml wires them, the HTTP API and a fleet of simulated devices. No AWS account, no Docker.

What runs where (all on 127.0.0.1):

- a moto server (S3, DynamoDB, SQS, SSM) with the table, bucket, queues and SecureString parameters
  built from template.yaml's own definitions;
- the Particle Cloud simulator with the product's fleet;
- the functions, unchanged, in background threads, triggered as on AWS:
  * ingest: by every new object under ``incoming/`` that matches the template's S3 filters (moto
    drops S3 notifications, so a poller lists the prefix and sends the notification Lambda would get),
    invoked asynchronously with the template's retries and failure queue;
  * sweep: by the schedule (a short interval here instead of ``SweepSchedule``) and by ingest's own
    ``lambda.invoke(InvocationType="Event")``, which reaches a small local Lambda Invoke endpoint
    (``AWS_ENDPOINT_URL_LAMBDA``); one sweep at a time, as its reserved concurrency of 1 makes it;
  * assign: fed by SQS pollers (the event source mapping: the template's batch size and maximum
    concurrency, receive counts, visibility and the redrive policy to the dead-letter queue);
  * api: behind the local HTTP gateway (API Gateway HTTP API v2 events);
- simulated devices that read their Ledger and post the status event to the webhook route.

Everything stops with ``stop()`` (or the context manager), and the process environment is restored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import boto3
import requests
from moto.server import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    ThreadedMotoServer,
    create_backend_app,
)
from werkzeug.serving import make_server

from tokenflow_local import lambda_runtime, moto_speedups, resources
from tokenflow_local.particle_sim import ParticleSimulator

log = logging.getLogger("tokenflow_local.stack")

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
SECRET_ENV = {"AWS_ACCESS_KEY_ID": "tokenflow-local", "AWS_SECRET_ACCESS_KEY": "tokenflow-local"}
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


class PortInUse(RuntimeError):
    """A server of the stack could not listen on its port."""


def port_error(what: str, host: str, port: int, exc: OSError, option: str = "") -> PortInUse:
    hint = f" or choose another one with {option}" if option else ""
    return PortInUse(
        f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}. Stop whatever uses port {port}{hint}."
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ---- embedded AWS ---------------------------------------------------------------------------------


class _SerialisedRequests:
    """WSGI middleware: one DynamoDB request at a time.

    DynamoDB applies each request (a TransactWriteItems above all) atomically; moto does not serialise
    concurrent requests, so two assign workers could both pass the same condition and claim one token.
    Serialising requests (not the workers) restores what the real service guarantees and leaves every
    interleaving between requests to the threads.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self.lock:
                return list(self.app(environ, start_response))  # finish the answer inside the lock
        return self.app(environ, start_response)


class MotoServer(ThreadedMotoServer):
    """moto's threaded server, but binding in the caller's thread so a taken port raises at once.

    (ThreadedMotoServer binds in its own thread: on a taken port the error stays in that thread and
    ``start()`` waits forever.)
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)

    def start(self) -> None:
        app = _SerialisedRequests(DomainDispatcherApplication(create_backend_app))
        try:
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
        except OSError as exc:
            raise port_error(
                "The embedded AWS (moto)", self._ip_address, self._port, exc, "--aws-port"
            ) from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        self._server_ready_event.set()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout=10)


# ---- functions --------------------------------------------------------------------------------------


@dataclass
class FunctionError:
    function: str
    error: str
    at: float = field(default_factory=time.time)


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
        lambda_runtime.load_handler(self.name, fresh=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def submit(self, event: dict[str, Any]) -> bool:
        """Queue an event; a coalescing function drops it when one is already waiting (same work)."""
        if self.coalesce and self._jobs.qsize() > 0:
            return False
        self._idle.clear()
        self._jobs.put(event)
        return True

    def call(self, event: dict[str, Any]) -> Any:
        """A synchronous invocation (``RequestResponse``), sharing the function's concurrency."""
        with self._run_lock:
            self.invocations += 1
            return lambda_runtime.invoke(self.name, event)

    @property
    def idle(self) -> bool:
        return self._idle.is_set() and self._jobs.empty()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._jobs.get(timeout=0.2)
            except queue.Empty:
                self._idle.set()
                continue
            self._idle.clear()
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


class _Loop:
    """A background thread running ``step`` every ``interval`` seconds until stopped."""

    def __init__(
        self, name: str, step: Callable[[], Any], interval: float, errors: list[FunctionError]
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.errors = errors
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = bool(self.step())
            except Exception as exc:
                log.exception("%s failed", self.name)
                self.errors.append(FunctionError(self.name, f"{type(exc).__name__}: {exc}"))
            if not busy:
                self._stop.wait(self.interval)


class LambdaEndpoint:
    """The Lambda Invoke API (``POST /2015-03-31/functions/{name}/invocations``) for the local functions.

    Ingest starts a sweep with ``lambda.invoke(InvocationType="Event")``; boto3 sends that here when
    ``AWS_ENDPOINT_URL_LAMBDA`` names this server, so the function code stays as it runs on AWS.
    """

    def __init__(self, host: str, port: int, functions: dict[str, AsyncFunction]) -> None:
        self.functions = functions
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


# ---- the stack ---------------------------------------------------------------------------------------


class LocalStack:
    """Start with ``start()`` (or ``with LocalStack(...) as stack``); every port 0 picks a free one."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        aws_port: int = 4566,
        api_port: int = 3000,
        particle_port: int = 4000,
        lambda_port: int = 0,
        devices: int = 25,
        quarantined: int = 1,
        denied: int = 0,
        devices_per_page: int = 10,
        stack_name: str = "tokenflow-local",
        sweep_interval: float = 5.0,
        poll_interval: float = 0.5,
        retry_delay: int = 2,
        simulate_devices: bool = True,
        device_interval: float = 0.5,
        device_first_retry: float = 2.0,
        device_max_retry: float = 30.0,
        particle_token: str | None = None,
    ) -> None:
        self.host = host
        self.ports = {"aws": aws_port, "api": api_port, "particle": particle_port, "lambda": lambda_port}
        self.fleet_size = devices
        self.quarantined = quarantined
        self.denied = denied
        self.devices_per_page = devices_per_page
        self.stack_name = stack_name
        self.sweep_interval = sweep_interval
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.simulate_devices = simulate_devices
        self.device_interval = device_interval
        self.device_first_retry = device_first_retry
        self.device_max_retry = device_max_retry
        self.particle_token = particle_token or f"sim-{secrets.token_hex(12)}"
        self.webhook_secret = secrets.token_urlsafe(24)  # new every run, as an operator would choose
        self.errors: list[FunctionError] = []
        self.parameters = resources.parameter_defaults()
        self.bucket = self._resolve(resources.resource("ExportsBucket")["BucketName"])
        self.table = f"{stack_name}-Table"
        self.queues: dict[str, str] = {}  # logical id -> url
        self._refs: dict[str, str] = {"Table": self.table, "ExportsBucket": self.bucket}
        self._attrs: dict[tuple[str, str], str] = {
            ("Table", "Arn"): f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{self.table}",
            ("ExportsBucket", "Arn"): f"arn:aws:s3:::{self.bucket}",
        }
        for logical in resources.resources_of_type("AWS::Serverless::Function"):
            self._refs[logical] = f"{stack_name}-{logical}"
        self.functions: dict[str, AsyncFunction] = {}
        self.moto: MotoServer | None = None
        self.simulator: ParticleSimulator | None = None
        self.lambda_endpoint: LambdaEndpoint | None = None
        self.gateway: Any = None
        self.fleet: Any = None
        self._loops: list[_Loop] = []
        self._saved_env: dict[str, str | None] = {}
        self._seen_objects: dict[str, tuple[str, str]] = {}
        self._started = False

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def aws_url(self) -> str:
        return f"http://{self.host}:{self.ports['aws']}"

    @property
    def particle_url(self) -> str:
        return f"http://{self.host}:{self.ports['particle']}"

    @property
    def api_url(self) -> str | None:
        return f"http://{self.host}:{self.ports['api']}" if self.gateway else None

    @property
    def function_names(self) -> dict[str, str]:
        """functions/<name> -> the function's name as AWS would know it."""
        return {
            resources.function_dir(logical): self._refs[logical]
            for logical in resources.resources_of_type("AWS::Serverless::Function")
        }

    def client(self, service: str) -> Any:
        """A boto3 client of the embedded AWS (what a user or a test would use)."""
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name=REGION,
            aws_access_key_id=SECRET_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=SECRET_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        self._started = True
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto_speedups.install()
        self._check_ports()
        self.moto = MotoServer(self.host, self.ports["aws"])
        self.moto.start()
        self.ports["aws"] = self.moto.get_host_and_port()[1]

        try:
            self.simulator = ParticleSimulator(
                self.host,
                self.ports["particle"],
                access_token=self.particle_token,
                max_per_page=self.devices_per_page,
            )
        except OSError as exc:
            raise port_error(
                "The Particle simulator", self.host, self.ports["particle"], exc, "--particle-port"
            ) from exc
        self.ports["particle"] = self.simulator.port
        self.simulator.add_devices(self.fleet_size, quarantined=self.quarantined, denied=self.denied)
        self.simulator.start()
        self.parameters.update(ParticleProduct=self.simulator.product, ParticleApiUrl=self.simulator.url)

        self._create_resources()
        self._build_functions()
        self.lambda_endpoint = LambdaEndpoint(self.host, self.ports["lambda"], self._by_function_name())
        self.ports["lambda"] = int(self.lambda_endpoint.url.rsplit(":", 1)[1])
        self.lambda_endpoint.start()
        self._set_environment()
        for function in self.functions.values():
            function.start()
        self._start_triggers()
        self._start_gateway()
        if self.simulate_devices and self.api_url:
            self._start_devices()

    def stop(self) -> None:
        """Stop every thread and server (safe to call twice, or after a failed start)."""
        if not self._started:
            return
        self._started = False
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                self.fleet.stop()
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                self.gateway.stop()
        for loop in self._loops:
            loop.stop()
        for loop in self._loops:
            loop.join()
        self._loops.clear()
        for function in self.functions.values():
            function.stop()
        if self.lambda_endpoint is not None:
            self.lambda_endpoint.stop()
        if self.simulator is not None:
            with contextlib.suppress(Exception):
                self.simulator.stop()
        if self.moto is not None:
            # moto's state lives in this process: leave it empty for whatever runs next here.
            with contextlib.suppress(Exception):
                requests.post(f"{self.aws_url}/moto-api/reset", timeout=10)
            self.moto.stop()
        self._restore_environment()

    def _check_ports(self) -> None:
        """Fail before starting anything when a fixed port is taken (a clear message, no half stack)."""
        options = {"aws": "--aws-port", "api": "--api-port", "particle": "--particle-port", "lambda": ""}
        names = {
            "aws": "The embedded AWS (moto)",
            "api": "The HTTP API gateway",
            "particle": "The Particle simulator",
            "lambda": "The local Lambda endpoint",
        }
        for key, port in self.ports.items():
            if not port:
                continue
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, port))
                except OSError as exc:
                    raise port_error(names[key], self.host, port, exc, options[key]) from exc

    # ---- resources -----------------------------------------------------------------------------

    def _resolve(self, value: Any) -> Any:
        """A template value with its intrinsics replaced by this stack's parameters and resources."""
        if isinstance(value, dict) and len(value) == 1:
            ((kind, arg),) = value.items()
            if kind == "Ref":
                return self._ref(arg)
            if kind == "Fn::GetAtt":
                logical, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self._attrs[(logical, attr)]
            if kind == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

                def sub(match: re.Match[str]) -> str:
                    name = match.group(1)
                    if name in extra:
                        return str(self._resolve(extra[name]))
                    if "." in name and not name.startswith("AWS::"):
                        logical, attr = name.split(".", 1)
                        return self._attrs[(logical, attr)]
                    return str(self._ref(name))

                return re.sub(r"\$\{([^}!]+)\}", sub, text)
        return value

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return getattr(self, "_refs", {})[name]

    def _create_resources(self) -> None:
        resources.create_table(self.client("dynamodb"), self.table)
        resources.create_bucket(self.client("s3"), self.bucket)
        sqs = self.client("sqs")
        pending = resources.resources_of_type("AWS::SQS::Queue")
        while pending:  # dead-letter queues before the queues that name them
            ready = [q for q in pending if all(d in self.queues for d in resources.queue_dependencies(q))]
            if not ready:
                raise RuntimeError(f"queues with unresolvable redrive targets: {pending}")
            for logical in ready:
                url, arn = resources.create_queue(sqs, logical, f"{self.stack_name}-{logical}", self._resolve)
                self.queues[logical] = url
                self._refs[logical] = url
                self._attrs[(logical, "Arn")] = arn
                self._attrs[(logical, "QueueName")] = url.rsplit("/", 1)[1]
                pending.remove(logical)
        resources.put_secure_parameters(
            self.client("ssm"),
            {
                self.parameters["ParticleTokenParameter"]: self.particle_token,
                self.parameters["WebhookSecretParameter"]: self.webhook_secret,
            },
        )

    def environment(self) -> dict[str, str]:
        """The variables the functions read: the template's, resolved, plus the local endpoints."""
        env: dict[str, str] = {}
        for logical in resources.resources_of_type("AWS::Serverless::Function"):
            for name, value in resources.environment(logical).items():
                env[name] = str(self._resolve(value))
        env.update(
            # One process runs every function: one service name for the logs of all of them.
            POWERTOOLS_SERVICE_NAME="tokenflow-local",
            POWERTOOLS_TRACE_DISABLED="true",  # no X-Ray daemon here
            AWS_ENDPOINT_URL=self.aws_url,
            AWS_ENDPOINT_URL_LAMBDA=self.lambda_endpoint.url if self.lambda_endpoint else "",
            AWS_DEFAULT_REGION=REGION,
            AWS_REGION=REGION,
            AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
            **SECRET_ENV,
        )
        return env

    def _set_environment(self) -> None:
        env = self.environment()
        for name in [*env, "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
            self._saved_env.setdefault(name, os.environ.get(name))
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(env)
        forget_clients()

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        forget_clients()

    # ---- functions and their triggers ----------------------------------------------------------

    def _build_functions(self) -> None:
        failure_queue = None
        ingest_props = resources.resource("IngestFunction")
        invoke_config = ingest_props.get("EventInvokeConfig", {})
        destination = invoke_config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if destination:
            target = destination.get("Fn::GetAtt", "")
            logical = target.split(".")[0] if isinstance(target, str) else target[0]
            failure_queue = self.queues.get(logical)
        sqs = self.client("sqs")

        def dead_letter(event: dict[str, Any], exc: Exception) -> None:
            if failure_queue:  # what Lambda sends to an OnFailure destination, in short
                sqs.send_message(
                    QueueUrl=failure_queue,
                    MessageBody=json.dumps(
                        {
                            "requestContext": {"condition": "RetriesExhausted", "functionArn": "ingest"},
                            "requestPayload": event,
                            "responsePayload": {"errorType": type(exc).__name__, "errorMessage": str(exc)},
                        }
                    ),
                )

        names = self.function_names
        self.functions["ingest"] = AsyncFunction(
            "ingest",
            names["ingest"],
            retries=int(invoke_config.get("MaximumRetryAttempts", 2)),
            retry_delay=self.retry_delay,
            on_failure=dead_letter,
            errors=self.errors,
        )
        self.functions["sweep"] = AsyncFunction(
            "sweep",
            names["sweep"],
            retries=0,  # the schedule's RetryPolicy: the next tick does the same work
            retry_delay=self.retry_delay,
            on_failure=None,
            errors=self.errors,
            coalesce=True,
        )

    def _by_function_name(self) -> dict[str, AsyncFunction]:
        return {f.function_name: f for f in self.functions.values()}

    def _start_triggers(self) -> None:
        filters = resources.s3_key_filters("IngestFunction")
        s3 = self.client("s3")

        def watch_incoming() -> bool:
            prefixes = {prefix for prefix, _ in filters}
            present: dict[str, tuple[str, str]] = {}
            for prefix in prefixes:
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                    for obj in page.get("Contents", []):
                        key = obj["Key"]
                        if not any(key.startswith(p) and key.endswith(s) for p, s in filters):
                            continue
                        version = (obj["ETag"], obj["LastModified"].isoformat())
                        present[key] = version
                        if self._seen_objects.get(key) != version:
                            self.functions["ingest"].submit(
                                lambda_runtime.s3_put_event(self.bucket, key, obj["Size"])
                            )
            # An object that left incoming/ and comes back (the same file dropped again) is new again.
            self._seen_objects = present
            return False

        self._loops.append(_Loop("s3-notifications", watch_incoming, self.poll_interval, self.errors))
        self._loops.append(
            _Loop(
                "sweep-schedule",
                lambda: self.functions["sweep"].submit(lambda_runtime.schedule_event()) and False,
                self.sweep_interval,
                self.errors,
            )
        )
        sqs_events = resources.function_events("AssignFunction", "SQS")
        batch = int(self._resolve(sqs_events[0].get("BatchSize", 10))) if sqs_events else 10
        concurrency = (
            int(self._resolve(sqs_events[0].get("ScalingConfig", {}).get("MaximumConcurrency", 2)))
            if sqs_events
            else 2
        )
        queue_url = self.queues["AssignQueue"]
        sqs = self.client("sqs")
        for n in range(concurrency):
            instance = f"w{n}"
            lambda_runtime.load_handler("assign", fresh=True, instance=instance)

            def poll(instance: str = instance) -> bool:
                return (
                    lambda_runtime.poll_once(
                        sqs,
                        queue_url,
                        "assign",
                        batch_size=batch,
                        retry_delay=self.retry_delay,
                        instance=instance,
                    )
                    > 0
                )

            self._loops.append(_Loop(f"assign-{instance}", poll, self.poll_interval, self.errors))
        for loop in self._loops:
            loop.start()

    def _start_gateway(self) -> None:
        try:
            from tokenflow_local import gateway as gateway_module
        except ImportError:
            log.warning("No local gateway (tokenflow_local.gateway): the HTTP API is not served")
            return
        if not (lambda_runtime.FUNCTIONS / "api" / "app.py").exists():
            log.warning("No api function: the HTTP API is not served")
            return
        # A fresh copy of the handler module: nothing cached from an earlier stack in this process.
        lambda_runtime.load_handler("api", fresh=True)
        self.gateway = _make_gateway(gateway_module, self.host, self.ports["api"])
        self.ports["api"] = _gateway_port(self.gateway, self.ports["api"])

    def _start_devices(self) -> None:
        from tokenflow_local.devices import DeviceFleet

        assert self.simulator is not None and self.api_url
        self.fleet = DeviceFleet(
            self.simulator.url,
            f"{self.api_url}/webhooks/particle",
            self.webhook_secret,
            ledger=str(self.parameters.get("LedgerName") or "blynk-tokens-c2d"),
            interval=self.device_interval,
            first_retry=self.device_first_retry,
            max_retry=self.device_max_retry,
        )
        self.fleet.start()

    # ---- waiting (tests and the run script) -----------------------------------------------------

    def idle(self) -> bool:
        """No queued function work: the ingest and sweep queues are empty and the assign queue drained."""
        if not all(f.idle for f in self.functions.values()):
            return False
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queues["AssignQueue"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            attrs["ApproximateNumberOfMessages"] == "0"
            and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
        )


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; its value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or 'the stack'}")
        time.sleep(interval)


def forget_clients() -> None:
    """Drop every cached client and secret, so the functions see the current endpoints and values."""
    from aws_lambda_powertools.utilities.parameters import base

    from tokenflow import aws
    from tokenflow.settings import settings

    aws.reset()
    settings.cache_clear()
    for provider in list(base.DEFAULT_PROVIDERS.values()):
        with contextlib.suppress(Exception):
            provider.clear_cache()
    base.DEFAULT_PROVIDERS.clear()


def _make_gateway(module: Any, host: str, port: int) -> Any:
    """Start the local gateway (tokenflow_local.gateway) on ``host:port``."""
    gateway = module.Gateway(host=host, port=port)
    try:
        gateway.start()
    except OSError as exc:
        raise port_error("The HTTP API gateway", host, port, exc, "--api-port") from exc
    return gateway


def _gateway_port(gateway: Any, default: int) -> int:
    port = getattr(gateway, "port", None)
    return int(port) if port else default


@contextlib.contextmanager
def running(**options: Any) -> Iterator[LocalStack]:
    with LocalStack(**options) as stack:
        yield stack
