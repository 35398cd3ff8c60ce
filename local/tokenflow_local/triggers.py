"""What starts the functions on the local stack, as the template's event sources start them on AWS.

- S3 notifications: S3 pushes them to Lambda. moto sends the bucket's notifications itself (its
  ``send_event``, with the filters the stack recorded from the template, ``stack_record``) but would
  run the function in Docker; ``S3PushNotifications`` hands each one to the local function instead,
  the moment the object is stored (no listing, no polling). ``S3Notifications`` (listing the prefix)
  stays for a moto that cannot be hooked;
- the schedule: a tick every ``interval`` seconds (a timer: the thread sleeps in between);
- the SQS event source mapping: ``MaximumConcurrency`` pollers, each with its own copy of the handler
  module (its own execution environment), receiving batches of ``BatchSize`` with long polling
  (``WaitTimeSeconds``, as Lambda's pollers do: ``sqs_long_poll``), so an idle queue costs one
  receive per poller per 20 s.

Each runs as a ``Loop``: a background thread calling one step, again at once while it finds work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from tokenflow_local import lambda_runtime, sqs_long_poll
from tokenflow_local.lambda_runtime import FunctionError

log = logging.getLogger(__name__)


class Loop:
    """A background thread running ``step`` every ``interval`` seconds until stopped; a step that
    returns something truthy (it found work) is run again without waiting."""

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
        if self._thread.is_alive():
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


class S3Notifications:
    """The S3 event notifications of one bucket for one function, by listing: ``step()`` submits an
    ObjectCreated event for every object matching a (prefix, suffix) filter that is new or changed
    (its ETag or LastModified) since the last step."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        filters: list[tuple[str, str]],
        submit: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.filters = filters
        self.submit = submit
        self._seen: dict[str, tuple[str, str]] = {}

    def step(self) -> bool:
        present: dict[str, tuple[str, str]] = {}
        paginator = self.s3.get_paginator("list_objects_v2")
        for prefix in {prefix for prefix, _ in self.filters}:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if not any(key.startswith(p) and key.endswith(s) for p, s in self.filters):
                        continue
                    version = (obj["ETag"], obj["LastModified"].isoformat())
                    present[key] = version
                    if self._seen.get(key) != version:
                        self.submit(lambda_runtime.s3_put_event(self.bucket, key, obj["Size"]))
        # An object that left the prefix and comes back (the same file dropped again) is new again.
        self._seen = present
        return False  # listing again at once would find nothing new: wait the interval


class S3PushNotifications:
    """The bucket notifications moto sends to Lambda functions, delivered to local ones.

    ``register(function_arn, submit)`` makes every notification moto sends to that function ARN
    (the bucket's notification configuration decides which objects notify, as in S3) go to
    ``submit`` (the function's asynchronous invocation queue), in the request that stored the object.
    Notifications to other ARNs go on to moto's own Lambda, as before.
    """

    _targets: ClassVar[dict[str, Callable[[dict[str, Any]], Any]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _original: ClassVar[Callable[..., Any] | None] = None

    @classmethod
    def install(cls) -> None:
        from moto.s3 import notifications

        with cls._lock:
            if cls._original is not None:
                return
            cls._original = notifications._invoke_awslambda

            def invoke(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
                target = cls._targets.get(fn_arn)
                if target is None:
                    assert cls._original is not None
                    cls._original(account_id, event_body, fn_arn, region_name)
                    return
                try:
                    target(event_body)
                except Exception:  # S3 stores the object whatever the notification does
                    log.exception("S3 notification to %s failed", fn_arn)

            notifications._invoke_awslambda = invoke

    @classmethod
    def register(cls, function_arn: str, submit: Callable[[dict[str, Any]], Any]) -> None:
        cls.install()
        with cls._lock:
            cls._targets[function_arn] = submit

    @classmethod
    def unregister(cls, function_arn: str) -> None:
        with cls._lock:
            cls._targets.pop(function_arn, None)


def schedule_loop(
    submit: Callable[[dict[str, Any]], Any],
    interval: float,
    errors: list[FunctionError],
    name: str = "sweep-schedule",
) -> Loop:
    """A schedule tick every ``interval`` seconds (never sooner, whatever the submit answers)."""

    def tick() -> bool:
        submit(lambda_runtime.schedule_event())
        return False

    return Loop(name, tick, interval, errors)


def sqs_pollers(
    sqs: Any,
    queue_url: str,
    function: str,
    *,
    batch_size: int,
    concurrency: int,
    retry_delay: int,
    interval: float,
    errors: list[FunctionError],
    wait_seconds: int = 20,
) -> list[Loop]:
    """The SQS event source mapping of ``functions/<function>``: ``concurrency`` pollers, each
    invoking its own copy of the handler (``lambda_runtime.poll_once``) and long-polling the queue
    for ``wait_seconds`` (``WaitTimeSeconds``; 20, SQS's longest, as Lambda's pollers wait) when it is
    empty, so a poller sleeps in the receive until a message arrives. A poll that fails (the stack
    is stopping) waits ``interval`` before the next."""
    sqs_long_poll.install()
    sqs_long_poll.resume()
    loops = []
    for n in range(concurrency):
        instance = f"w{n}"
        lambda_runtime.load_handler(function, fresh=True, instance=instance)

        def poll(instance: str = instance) -> bool:
            lambda_runtime.poll_once(
                sqs,
                queue_url,
                function,
                batch_size=batch_size,
                retry_delay=retry_delay,
                instance=instance,
                wait_seconds=wait_seconds,
            )
            return True  # the receive itself waited for work: poll again at once

        loops.append(Loop(f"{function}-{instance}", poll, interval, errors))
    return loops
