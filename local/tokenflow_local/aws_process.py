"""The embedded AWS in a process of its own: moto on the machine's second core.

Every part of the local stack runs in one Python process, and one process uses one core at a time
(the GIL). moto's own work (DynamoDB transactions, expression parsing, answer formatting) is about
half of the stack's CPU at 1,000 devices, so ``make run`` starts moto in a child process
(``python -m tokenflow_local.aws_process``): the functions, the gateway, the simulators and the fleet
keep one core, moto gets the other. The functions reach it over HTTP exactly as before (they never
called it any other way); what the stack did to moto in-process it now asks through a few control
routes under ``/_tokenflow/`` that only this server answers:

- ``POST /_tokenflow/sqs/interrupt``: end every waiting long poll (``sqs_long_poll.interrupt``, the
  stack is stopping);
- ``GET`` / ``PUT /_tokenflow/sqs/messages?queue=<name>``: a queue's messages as moto holds them, and
  back (``persistence``: a ReceiveMessage would count as a receive and hide them), pickled (this code
  to this code, over 127.0.0.1);
- ``PUT /_tokenflow/s3/lambda-targets``: ``{"<function arn>": "<Lambda endpoint URL>"}``: the
  bucket notifications moto sends to that function go to the local Lambda Invoke API as an
  asynchronous invocation (``X-Amz-Invocation-Type: Event``), which is how S3 invokes a function
  (in-process, ``triggers.S3PushNotifications`` hands them to the function's queue instead).

The same patches as in-process (``moto_speedups``, ``sqs_long_poll``, one DynamoDB request at a
time) are applied in the child. It ends when the parent closes its standard input (``stop()``, or
the parent dying in any way), so no moto outlives its stack. ``AwsProcess`` (the parent's side)
answers what ``embedded_aws.MotoServer`` answers, so the stack and ``persistence`` use either.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote

import requests

from tokenflow_local.processes import PortInUse

log = logging.getLogger(__name__)

CONTROL = "/_tokenflow/"
READY_TIMEOUT_S = 60.0  # importing moto on a loaded machine takes a few seconds


# ---- the child ----------------------------------------------------------------------------------


class _Control:
    """WSGI middleware: the control routes, everything else to moto."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lambda_targets: dict[str, str] = {}  # function ARN -> Lambda endpoint URL

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(CONTROL):
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        status, payload = self._route(method, path[len(CONTROL) :], query, body)
        start_response(status, [("Content-Length", str(len(payload)))])
        return [payload]

    def _route(self, method: str, route: str, query: dict[str, str], body: bytes) -> tuple[str, bytes]:
        from tokenflow_local import embedded_aws, sqs_long_poll

        if route == "sqs/interrupt" and method == "POST":
            sqs_long_poll.interrupt()
            return "204 No Content", b""
        if route == "sqs/messages" and method == "GET":
            return "200 OK", pickle.dumps(embedded_aws.queue_messages(query["queue"]))
        if route == "sqs/messages" and method == "PUT":
            saved = pickle.loads(body)  # noqa: S301 (the parent's own pickle, over 127.0.0.1)
            embedded_aws.add_queue_messages(query["queue"], saved)
            return "204 No Content", b""
        if route == "s3/lambda-targets" and method == "PUT":
            self.lambda_targets.update(json.loads(body))
            return "204 No Content", b""
        return "404 Not Found", b""

    def invoke_lambda(self, account_id: str, event_body: Any, fn_arn: str, region_name: str) -> bool:
        """Send a bucket notification to a registered function's Invoke API; False: not ours."""
        url = self.lambda_targets.get(fn_arn)
        if url is None:
            return False
        try:
            requests.post(
                f"{url}/2015-03-31/functions/{quote(fn_arn, safe='')}/invocations",
                data=json.dumps(event_body),
                headers={"X-Amz-Invocation-Type": "Event"},
                timeout=10,
            ).raise_for_status()
        except requests.RequestException:  # S3 stores the object whatever the notification does
            log.exception("S3 notification to %s failed", fn_arn)
        return True


def _forward_notifications(control: _Control) -> None:
    from moto.s3 import notifications

    original = notifications._invoke_awslambda

    def invoke(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        if not control.invoke_lambda(account_id, event_body, fn_arn, region_name):
            original(account_id, event_body, fn_arn, region_name)

    notifications._invoke_awslambda = invoke


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokenflow_local.aws_process")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from tokenflow_local import moto_speedups, sqs_long_poll
    from tokenflow_local.embedded_aws import MotoServer

    moto_speedups.install()
    sqs_long_poll.install()
    sqs_long_poll.resume()
    controls: list[_Control] = []

    def middleware(app: Any) -> _Control:
        controls.append(_Control(app))
        return controls[0]

    server = MotoServer(args.host, args.port, middleware=middleware)
    try:
        server.start()
    except PortInUse as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 2
    _forward_notifications(controls[0])
    print(json.dumps({"port": server.get_host_and_port()[1]}), flush=True)
    # From here on nothing may write to the pipe the parent stopped reading: stdout goes to stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdin.read()  # until the parent closes it (stop(), or the parent is gone)
    sqs_long_poll.interrupt()
    server.stop()
    return 0


# ---- the parent's side --------------------------------------------------------------------------


class AwsProcess:
    """The embedded AWS in a child process; ``start()`` returns once it serves (PortInUse when its
    port is taken)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._process: subprocess.Popen[str] | None = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def get_host_and_port(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenflow_local.aws_process",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        answer: dict[str, Any] = {}
        ready = threading.Thread(target=lambda: answer.update(_first_line(self._process)), daemon=True)
        ready.start()
        ready.join(READY_TIMEOUT_S)
        if "error" in answer:
            self.stop()
            raise PortInUse(answer["error"])
        if "port" not in answer:
            self.stop()
            raise RuntimeError(f"the embedded AWS process did not start within {READY_TIMEOUT_S:.0f} s")
        self.port = int(answer["port"])

    def messages(self, queue_name: str) -> list[Any]:
        response = self._control("GET", "sqs/messages", params={"queue": queue_name})
        return list(pickle.loads(response.content))  # noqa: S301 (the child's own pickle)

    def add_messages(self, queue_name: str, messages: list[Any]) -> None:
        self._control("PUT", "sqs/messages", params={"queue": queue_name}, data=pickle.dumps(messages))

    def interrupt_receives(self) -> None:
        self._control("POST", "sqs/interrupt")

    def forward_notifications(self, function_arn: str, lambda_url: str) -> None:
        """Bucket notifications to ``function_arn`` go to the Lambda Invoke API at ``lambda_url``."""
        self._control("PUT", "s3/lambda-targets", data=json.dumps({function_arn: lambda_url}))

    def reset(self) -> None:
        """Nothing to empty: the process and its state end with ``stop()``."""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the child's signal to stop
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
        self._session.close()

    def _control(self, method: str, route: str, **kwargs: Any) -> requests.Response:
        response = self._session.request(method, f"{self.url}{CONTROL}{route}", timeout=60, **kwargs)
        response.raise_for_status()
        return response


def _first_line(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        return dict(json.loads(line)) if line else {}
    except ValueError:
        return {}


if __name__ == "__main__":
    raise SystemExit(main())
