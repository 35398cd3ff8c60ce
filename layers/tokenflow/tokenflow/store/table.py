"""The table as the aggregates reach it: one client, one random source, and every call counted.

``Table`` is what the aggregate modules (tokens, devices, imports, counters, transactions) share;
the ``Store`` facade owns one. ``StoreCalls`` counts the DynamoDB calls per operation (the cost
tests and the benchmarks read it as ``Store.calls``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenflow import aws
from tokenflow.store.codec import from_item
from tokenflow.store.shapes import PlainItem, RawItem, Request

# BatchGetItem reads at most 100 keys per call.
BATCH_GET_KEYS = 100


@dataclass
class StoreCalls:
    """DynamoDB calls made through this store, per operation (benchmarks and cost tests read it)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str) -> None:
        self.counts[operation] = self.counts.get(operation, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def writes(self) -> int:
        return sum(
            n for op, n in self.counts.items() if op in {"TransactWriteItems", "PutItem", "UpdateItem"}
        )


class Table:
    """One DynamoDB table through one (lazily made) client."""

    def __init__(
        self,
        name: str,
        client: Any | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        max_conflict_retries: int = 8,
    ) -> None:
        self.name = name
        self._client = client
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.max_conflict_retries = max_conflict_retries
        self.calls = StoreCalls()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    def call(self, operation: str, **kwargs: Any) -> Request:
        """One DynamoDB call, counted."""
        self.calls.add(operation)
        # The client is untyped (aws.client): every low-level call answers a dict.
        method: Callable[..., Request] = {
            "TransactWriteItems": self.client.transact_write_items,
            "GetItem": self.client.get_item,
            "PutItem": self.client.put_item,
            "UpdateItem": self.client.update_item,
            "Query": self.client.query,
            "BatchGetItem": self.client.batch_get_item,
        }[operation]
        return method(**kwargs)

    def get(self, key: RawItem, **kwargs: Any) -> PlainItem | None:
        """One item by key, read consistently, as plain values (None: absent)."""
        item = self.call("GetItem", TableName=self.name, Key=key, ConsistentRead=True, **kwargs).get("Item")
        return from_item(item) if item else None

    def batch_get(self, keys: Sequence[RawItem]) -> list[PlainItem]:
        """Items by key, one BatchGetItem per 100 keys (unprocessed keys asked for again)."""
        found: list[PlainItem] = []
        for start in range(0, len(keys), BATCH_GET_KEYS):
            batch = list(keys[start : start + BATCH_GET_KEYS])
            request = {self.name: {"Keys": batch, "ConsistentRead": True}}
            while request:
                answer = self.call("BatchGetItem", RequestItems=request)
                found.extend(from_item(raw) for raw in answer.get("Responses", {}).get(self.name, []))
                request = answer.get("UnprocessedKeys") or {}
        return found
