"""What starts the functions on the local stack, as the template's event sources start them on AWS.

- S3 notifications: moto drops them, so a poller lists the function's notification prefixes and
  submits, for each new or changed object that matches the template's filters, the notification
  Lambda would get;
- the schedule: a tick every ``interval`` seconds (a short one here instead of ``SweepSchedule``);
- the SQS event source mapping: ``MaximumConcurrency`` pollers, each with its own copy of the handler
  module (its own execution environment), receiving batches of ``BatchSize``.

Each runs as a ``Loop``: a background thread calling one step, again at once while it finds work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from tokenflow_local import lambda_runtime
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
) -> list[Loop]:
    """The SQS event source mapping of ``functions/<function>``: ``concurrency`` pollers, each
    invoking its own copy of the handler (``lambda_runtime.poll_once``), at once again after a
    non-empty batch, else after ``interval``."""
    loops = []
    for n in range(concurrency):
        instance = f"w{n}"
        lambda_runtime.load_handler(function, fresh=True, instance=instance)

        def poll(instance: str = instance) -> bool:
            handled = lambda_runtime.poll_once(
                sqs, queue_url, function, batch_size=batch_size, retry_delay=retry_delay, instance=instance
            )
            return handled > 0

        loops.append(Loop(f"{function}-{instance}", poll, interval, errors))
    return loops
