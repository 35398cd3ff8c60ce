"""A small local API Gateway: HTTP requests in, HTTP API (payload 2.0) events to the handlers, answers out.

The routes are read from template.yaml's ``HttpApi`` events, so the gateway sends each path to the
function the template sends it to (``/webhooks/particle`` to the webhook, the rest to the API), as
``sam local start-api`` would. There is no IAM check here: the local stack listens on 127.0.0.1 only.

Concurrent requests run concurrently, as Lambda runs them: "For each concurrent request, Lambda
provisions a separate instance of your execution environment ... until you reach your account's
concurrency limit" (1,000 by default; AWS Lambda developer guide, "Understanding Lambda function
scaling", https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html). Each execution
environment (``Environments``) is a copy of the handler module of its own (``lambda_runtime.load_handler``
with an instance name) serving one request at a time; a new one is made (a cold start) only when every
existing one is busy, up to the function's ``ReservedConcurrentExecutions`` in template.yaml, or else
``LOCAL_MAX_CONCURRENCY`` (this machine's stand-in for the account limit: beyond a few, more Python
threads only share the same cores). A request that finds them all busy waits for one, where Lambda
would run it at once (or throttle it, at a reserved concurrency).
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tokenflow_local import lambda_runtime, resources

LOCAL_MAX_CONCURRENCY = 8  # execution environments per function without a reserved concurrency
TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded")
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Route:
    method: str  # an HTTP method, or ANY
    path: str  # /webhooks/particle or /{proxy+}
    function: str  # directory under functions/

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def matches(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when this route takes the request, else None."""
        if self.method not in ("ANY", method):
            return None
        pattern = "^" + re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(self.path)) + "$"
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
        found = re.match(pattern, path)
        return found.groupdict() if found else None


def template_routes() -> list[Route]:
    """Every HttpApi event of every function in template.yaml, most specific first."""
    routes = []
    for logical in resources.resources_of_type("AWS::Serverless::Function"):
        function = resources.function_dir(logical)
        for props in resources.function_events(logical, "HttpApi"):
            routes.append(Route(str(props.get("Method", "ANY")).upper(), props["Path"], function))
    # API Gateway prefers exact paths to greedy ones, and a method to ANY.
    return sorted(routes, key=lambda r: ("+}" in r.path, r.method == "ANY", -len(r.path)))


def http_api_event(
    route: Route,
    params: dict[str, str],
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    ip: str,
) -> dict[str, Any]:
    """The event API Gateway HTTP API sends a Lambda proxy integration (payload format 2.0)."""
    parts = urlsplit(target)
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    content_type = headers.get("content-type", "")
    textual = not body or content_type.startswith(TEXT_TYPES)
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.key,
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route.key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": not textual,
    }
    if query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
    if params:
        event["pathParameters"] = params
    if body:
        event["body"] = body.decode("utf-8", "replace") if textual else base64.b64encode(body).decode()
    return event


class Environments:
    """The execution environments of one function: each runs one invocation at a time; a new one is
    made only when all are busy and fewer than ``limit`` exist."""

    def __init__(self, function: str, limit: int) -> None:
        self.function = function
        self.limit = max(1, limit)
        self._free: list[str] = []
        self._made = 0
        self._available = threading.Condition()

    def start(self) -> None:
        """Forget every environment and make the first one (fresh handler module)."""
        with self._available:
            self._free, self._made = [""], 1
        lambda_runtime.load_handler(self.function, fresh=True)

    def invoke(self, event: dict[str, Any]) -> Any:
        instance = self._acquire()
        try:
            return lambda_runtime.invoke(self.function, event, instance=instance)
        finally:
            with self._available:
                self._free.append(instance)
                self._available.notify()

    @property
    def made(self) -> int:
        """How many environments exist (the most invocations that have run at once)."""
        return self._made

    def _acquire(self) -> str:
        with self._available:
            while not self._free:
                if self._made < self.limit:
                    instance = f"env{self._made}"
                    self._made += 1
                    break
                self._available.wait()
            else:
                return self._free.pop()
        # A cold start, outside the lock: the others keep serving meanwhile.
        lambda_runtime.load_handler(self.function, fresh=True, instance=instance)
        return instance


def reserved_concurrency(function: str) -> int | None:
    """The ReservedConcurrentExecutions template.yaml gives ``functions/<function>`` (None: none)."""
    for logical in resources.resources_of_type("AWS::Serverless::Function"):
        if resources.function_dir(logical) == function:
            value = (
                resources.template()["Resources"][logical]
                .get("Properties", {})
                .get("ReservedConcurrentExecutions")
            )
            return value if isinstance(value, int) else None
    return None


class Gateway:
    """Serves the template's HTTP API routes on ``host:port`` (port 0: any free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 3000, max_concurrency: int | None = None) -> None:
        """``max_concurrency``: environments per function when the template reserves none (default
        ``LOCAL_MAX_CONCURRENCY``; 1 serves one request at a time, as the tests' stacks do)."""
        self.host = host
        self.requested_port = port
        self.routes = template_routes()
        limit = max_concurrency or LOCAL_MAX_CONCURRENCY
        self.environments = {
            r.function: Environments(r.function, reserved_concurrency(r.function) or limit)
            for r in self.routes
        }
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Gateway:
        for environments in self.environments.values():  # nothing cached from an earlier stack
            environments.start()
        self._server = ThreadingHTTPServer((self.host, self.requested_port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            params = route.matches(method, path)
            if params is not None:
                return route, params
        return None

    def invoke(self, route: Route, event: dict[str, Any]) -> dict[str, Any]:
        return self.environments[route.function].invoke(event)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                method = self.command
                path = urlsplit(self.path).path
                found = gateway.route(method, path)
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._reply(413, JSON, b'{"message":"Request too large"}')
                    return
                body = self.rfile.read(length) if length else b""
                if found is None:
                    self._reply(404, JSON, b'{"message":"Not Found"}')
                    return
                route, params = found
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
                event = http_api_event(
                    route, params, method, self.path, headers, body, self.client_address[0]
                )
                try:
                    answer = gateway.invoke(route, event)
                except Exception:  # a handler crash is a 500, as API Gateway answers it
                    self._reply(500, JSON, b'{"message":"Internal Server Error"}')
                    raise
                self._answer(answer)

            def _answer(self, answer: dict[str, Any]) -> None:
                data = answer.get("body") or ""
                payload = base64.b64decode(data) if answer.get("isBase64Encoded") else data.encode()
                headers = {k.lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
                for name, values in (answer.get("multiValueHeaders") or {}).items():
                    headers[name.lower()] = ",".join(str(v) for v in values)
                headers.setdefault("content-type", "application/json")
                self._reply(int(answer.get("statusCode", 200)), headers, payload, answer.get("cookies") or [])

            def _reply(
                self, status: int, headers: dict[str, str], payload: bytes, cookies: list[str] | None = None
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name not in ("content-length", "connection"):
                        self.send_header(name, value)
                for cookie in cookies or []:
                    self.send_header("set-cookie", cookie)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # requests are logged by the handlers themselves

        return Handler
