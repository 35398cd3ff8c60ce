"""The embedded AWS: a moto server (S3, DynamoDB, SQS, SSM, ...) in this process, on one port.

Two differences from moto's own ``ThreadedMotoServer``: it binds in the caller's thread (a taken port
raises at once), and it applies one DynamoDB request at a time, as DynamoDB applies each request
atomically.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
import requests
from moto.server import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    ThreadedMotoServer,
    create_backend_app,
)
from moto.sqs.models import sqs_backends
from werkzeug.serving import make_server

from tokenflow_local import sqs_long_poll
from tokenflow_local.processes import port_error
from tokenflow_local.resources import ACCOUNT_ID, REGION

# Any credentials do for moto; fixed ones keep a developer's real ones out of the local stack.
SECRET_ENV = {"AWS_ACCESS_KEY_ID": "tokenflow-local", "AWS_SECRET_ACCESS_KEY": "tokenflow-local"}


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

    def __init__(self, host: str, port: int, middleware: Callable[[Any], Any] | None = None) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self.middleware = middleware  # wraps the WSGI app (aws_process: its control routes)

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def start(self) -> None:
        app: Any = _SerialisedRequests(DomainDispatcherApplication(create_backend_app))
        if self.middleware is not None:
            app = self.middleware(app)
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

    def reset(self) -> None:
        """Empty every backend: moto's state lives in this process and outlives the server."""
        requests.post(f"{self.url}/moto-api/reset", timeout=10)

    # What the stack asks of its embedded AWS beyond the AWS APIs; the same answers from
    # ``aws_process.AwsProcess``, where moto runs in a process of its own.

    def messages(self, queue_name: str) -> list[Any]:
        return queue_messages(queue_name)

    def add_messages(self, queue_name: str, messages: list[Any]) -> None:
        add_queue_messages(queue_name, messages)

    def interrupt_receives(self) -> None:
        """End every waiting long poll now (the stack is stopping)."""
        sqs_long_poll.interrupt()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout=10)


def queue_messages(queue_name: str) -> list[Any]:
    """The queue's messages as this process's moto holds them (a ReceiveMessage would count as a
    receive and hide them)."""
    queue = sqs_backends[ACCOUNT_ID][REGION].queues.get(queue_name)
    if queue is None:
        return []
    with queue._messages_lock:
        return list(queue._messages)


def add_queue_messages(queue_name: str, messages: list[Any]) -> None:
    """Put saved messages back into the queue as they were (receive counts, visibility, times)."""
    queue = sqs_backends[ACCOUNT_ID][REGION].queues[queue_name]
    with queue._messages_lock:
        queue._messages.extend(messages)
        queue._messages_lock.notify_all()


def client(service: str, endpoint_url: str) -> Any:
    """A boto3 client of the embedded AWS (what a user or a test would use)."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=SECRET_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRET_ENV["AWS_SECRET_ACCESS_KEY"],
    )
