"""Make moto's DynamoDB calls atomic for concurrency tests.

DynamoDB applies each request (a TransactWriteItems above all) atomically; in-process moto does not
serialise concurrent requests, so two threads can both pass the same condition. Wrapping the client
in one lock per call restores request-level atomicity while leaving every interleaving *between*
requests (the races Tokenflow must survive) to the threads.
"""

from __future__ import annotations

import threading
from typing import Any


class AtomicClient:
    def __init__(self, client: Any, lock: threading.Lock | None = None) -> None:
        self._client = client
        self._lock = lock or threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("get_waiter"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call
