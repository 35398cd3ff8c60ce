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

from botocore.exceptions import ClientError

from tokenflow import aws
from tokenflow.store.codec import from_item
from tokenflow.store.shapes import PlainItem, RawItem, Request

# BatchGetItem reads at most 100 keys per call.
BATCH_GET_KEYS = 100
# BatchWriteItem writes at most 25 items per call
# (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html).
BATCH_WRITE_ITEMS = 25
# Unprocessed keys are asked for again at most this many times per batch, with jittered backoff:
# "If DynamoDB returns any unprocessed items, you should retry the batch operation on those items.
# However, we strongly recommend that you use an exponential backoff algorithm" (BatchGetItem, API
# reference: https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html).
# Full jitter (a random pause up to the exponential cap) keeps workers that were throttled together
# from coming back together (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
MAX_UNPROCESSED_RETRIES = 8
UNPROCESSED_BACKOFF_BASE = 0.05  # seconds: the cap of the first pause, doubled per attempt
UNPROCESSED_BACKOFF_CAP = 2.0  # seconds: no single pause longer than this


class UnprocessedKeysError(Exception):
    """BatchGetItem (or BatchWriteItem) still left keys (items) unprocessed after every retry (the
    table is throttled)."""


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
            n
            for op, n in self.counts.items()
            if op in {"TransactWriteItems", "PutItem", "UpdateItem", "BatchWriteItem"}
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
        max_unprocessed_retries: int = MAX_UNPROCESSED_RETRIES,
    ) -> None:
        self.name = name
        self._client = client
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.max_conflict_retries = max_conflict_retries
        self.max_unprocessed_retries = max_unprocessed_retries
        self.calls = StoreCalls()
        # ``available`` partitions this process found empty, and when (monotonic seconds): claims
        # draw among the others first (tokens.available_candidates).
        self.empty_partitions: dict[str, float] = {}

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
            "BatchWriteItem": self.client.batch_write_item,
        }[operation]
        return method(**kwargs)

    def update_if(self, key: RawItem, **kwargs: Any) -> Request | None:
        """One conditional UpdateItem: its answer, or None when its condition did not hold (another
        writer got there first: an expected outcome, not an error); any other failure raises."""
        try:
            return self.call("UpdateItem", TableName=self.name, Key=key, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise

    def get(self, key: RawItem, **kwargs: Any) -> PlainItem | None:
        """One item by key, read consistently, as plain values (None: absent)."""
        item = self.call("GetItem", TableName=self.name, Key=key, ConsistentRead=True, **kwargs).get("Item")
        return from_item(item) if item else None

    def batch_get(self, keys: Sequence[RawItem], *, projection: Sequence[str] = ()) -> list[PlainItem]:
        """Items by key, one BatchGetItem per 100 keys; only the ``projection`` attributes when given.

        Unprocessed keys (DynamoDB answers part of a batch when throttled or over 16 MB) are asked
        for again after a jittered exponential pause, at most ``max_unprocessed_retries`` times;
        then UnprocessedKeysError, rather than a loop that keeps a throttled table busy.
        """
        found: list[PlainItem] = []
        for start in range(0, len(keys), BATCH_GET_KEYS):
            batch = list(keys[start : start + BATCH_GET_KEYS])
            request: Request = {self.name: {"Keys": batch, "ConsistentRead": True}}
            if projection:
                request[self.name]["ProjectionExpression"] = ", ".join(f"#{a}" for a in projection)
                request[self.name]["ExpressionAttributeNames"] = {f"#{a}": a for a in projection}
            retries = 0
            while request:
                answer = self.call("BatchGetItem", RequestItems=request)
                found.extend(from_item(raw) for raw in answer.get("Responses", {}).get(self.name, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                if retries == self.max_unprocessed_retries:
                    left = len(request.get(self.name, {}).get("Keys", []))
                    raise UnprocessedKeysError(
                        f"BatchGetItem left {left} of {len(batch)} keys unprocessed after "
                        f"{retries + 1} attempts (the table is throttled)"
                    )
                retries += 1
                cap = min(UNPROCESSED_BACKOFF_CAP, UNPROCESSED_BACKOFF_BASE * 2 ** (retries - 1))
                self.sleep(cap * self.rng.random())
        return found

    def batch_write(self, requests: Sequence[Request]) -> None:
        """Write requests (``{"PutRequest": ...}`` or ``{"DeleteRequest": ...}``), one BatchWriteItem
        per 25; unprocessed items are sent again with the same jittered backoff as ``batch_get``
        (BatchWriteItem answers ``UnprocessedItems`` when throttled, and the API reference asks for
        an exponential backoff there too), then UnprocessedKeysError.

        No condition and no transaction: each item is written as given, whatever is there. Only for
        items whose last writer may win (see ``queue_marks.QueueMarks.put``).
        """
        for start in range(0, len(requests), BATCH_WRITE_ITEMS):
            request: Request = {self.name: list(requests[start : start + BATCH_WRITE_ITEMS])}
            retries = 0
            while True:
                answer = self.call("BatchWriteItem", RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
                if not request:
                    break
                if retries == self.max_unprocessed_retries:
                    raise UnprocessedKeysError(
                        f"BatchWriteItem left {len(request.get(self.name, []))} items unprocessed after "
                        f"{retries + 1} attempts (the table is throttled)"
                    )
                retries += 1
                cap = min(UNPROCESSED_BACKOFF_CAP, UNPROCESSED_BACKOFF_BASE * 2 ** (retries - 1))
                self.sleep(cap * self.rng.random())
