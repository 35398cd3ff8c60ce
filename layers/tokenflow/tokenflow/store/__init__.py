"""The DynamoDB repository, by aggregate; ``Store`` is its one entry point.

- ``keys``: the table's key layout, index names and listing cursors (the only module that knows them);
- ``codec``: items between DynamoDB attribute values and plain Python;
- ``table``: the client, the random source and the call counts the aggregates share;
- ``tokens``, ``devices``, ``imports``, ``counters``: each aggregate's reads and writes;
- ``transactions``: TransactWriteItems with retries, and ``apply``, which carries out a rule's plan
  (``tokenflow.rules``) as one guarded transaction.

``Store`` keeps every method the handlers, services, tests and benchmarks call, each handing over
to its aggregate module; the names imported from ``tokenflow.store`` stay importable from here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tokenflow.model import DEVICE_STATES, TOKEN_STATES, Changed, Plan
from tokenflow.store import counters, devices, imports, transactions
from tokenflow.store import tokens as _tokens
from tokenflow.store.codec import from_item, to_attr, to_item
from tokenflow.store.counters import STATS_SHARDS, counter_deltas
from tokenflow.store.imports import RECENT_IMPORTS_KEPT
from tokenflow.store.keys import (
    AVAILABLE_PARTITION,
    IMPORTS_PARTITION,
    INDEX_AVAILABLE,
    INDEX_BY_QR,
    INDEX_BY_STATE,
    Keys,
)
from tokenflow.store.queue_marks import QueueMarks
from tokenflow.store.shapes import PlainItem, RawItem, Request
from tokenflow.store.table import StoreCalls, Table
from tokenflow.store.tokens import AddTokensResult, NewToken
from tokenflow.store.transactions import MAX_TRANSACTION_BYTES, MAX_TRANSACTION_ITEMS, TransactionCancelled

__all__ = [
    "AVAILABLE_PARTITION",
    "DEVICE_STATES",
    "IMPORTS_PARTITION",
    "INDEX_AVAILABLE",
    "INDEX_BY_QR",
    "INDEX_BY_STATE",
    "MAX_TRANSACTION_BYTES",
    "MAX_TRANSACTION_ITEMS",
    "RECENT_IMPORTS_KEPT",
    "STATS_SHARDS",
    "TOKEN_STATES",
    "AddTokensResult",
    "Changed",
    "Keys",
    "NewToken",
    "Store",
    "StoreCalls",
    "TransactionCancelled",
    "counter_deltas",
    "from_item",
    "to_attr",
    "to_item",
]


class Store:
    """Every read and write of the table goes through here."""

    def __init__(
        self,
        table_name: str,
        client: Any | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        max_conflict_retries: int = 8,
    ) -> None:
        self.table = table_name
        self.db = Table(table_name, client, rng=rng, sleep=sleep, max_conflict_retries=max_conflict_retries)

    @property
    def client(self) -> Any:
        return self.db.client

    @property
    def calls(self) -> StoreCalls:
        """DynamoDB calls made through this store, per operation."""
        return self.db.calls

    # ---- transactions and counters -------------------------------------------------------------

    def transact(self, items: Sequence[Request]) -> None:
        """TransactWriteItems with retries; TransactionCancelled (per-item codes) when a condition fails."""
        transactions.transact(self.db, items)

    def apply(self, plan: Plan, now: str, *, unmark: str | None = None) -> None:
        """Carry out a rule's plan as one guarded transaction; Changed when an item moved meanwhile.
        ``unmark``: a device whose queued mark the same transaction removes (``queue_marks``)."""
        transactions.apply(self.db, plan, now, unmark=unmark)

    def counter_update(self, deltas: Mapping[str, int], shard: int | None = None) -> Request:
        """One transaction item that applies ``deltas`` to a (random) counter shard."""
        return counters.counter_update(self.db, deltas, shard)

    def summary(self) -> dict[str, Any]:
        """Every counter shard and the recent imports in one BatchGetItem, summed."""
        return counters.summary(self.db)

    def activity(self, now: datetime, hours: int) -> list[dict[str, Any]]:
        """Tokens assigned and confirmed per hour over the last ``hours`` hours, oldest first."""
        return counters.activity(self.db, now, hours)

    # ---- tokens --------------------------------------------------------------------------------

    def add_tokens(
        self, tokens: Sequence[NewToken], import_id: str, now: str, *, checkpoint_at: int | None = None
    ) -> AddTokensResult:
        """Store tokens that are not stored yet; never touch one that is (whatever its state).
        With ``checkpoint_at``, each transaction also records the import's checkpoint."""
        return _tokens.add_tokens(self.db, tokens, import_id, now, checkpoint_at=checkpoint_at)

    def get_token(self, tid: str, *, with_image: bool = False) -> PlainItem | None:
        return _tokens.get_token(self.db, tid, with_image=with_image)

    def get_tokens(self, tids: Sequence[str]) -> dict[str, PlainItem]:
        """Token items by id, without the AuthToken or the QR image: one BatchGetItem per 100 ids."""
        return _tokens.get_tokens(self.db, tids)

    def find_token_by_qr(self, qr_token: str) -> str | None:
        """The token id whose QR token this is, or None."""
        return _tokens.find_token_by_qr(self.db, qr_token)

    def get_token_secret(self, tid: str) -> str:
        """The AuthToken itself: only for the Ledger write and the one reveal route."""
        return _tokens.get_token_secret(self.db, tid)

    def available_candidates(
        self, limit: int = 5, *, from_random_point: bool = False
    ) -> list[tuple[str, str]]:
        """A few available tokens as (token id, token), from a random shard of the index (from a
        random point of it with ``from_random_point``)."""
        return _tokens.available_candidates(self.db, limit, from_random_point=from_random_point)

    def history(self, tid: str) -> list[PlainItem]:
        return _tokens.history(self.db, tid)

    # ---- devices -------------------------------------------------------------------------------

    def get_device(self, device_id: str) -> PlainItem | None:
        return devices.get_device(self.db, device_id)

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, PlainItem]:
        """Device items by id, one BatchGetItem per 100 ids."""
        return devices.get_devices(self.db, device_ids)

    def devices_in_state(
        self, state: str, limit: int = 100, cursor: Mapping[str, Any] | None = None
    ) -> tuple[list[str], RawItem | None]:
        """Device ids in one state, a page at a time (no scan)."""
        return devices.devices_in_state(self.db, state, limit, cursor)

    def note_attempt(self, device_id: str, token_tid: str, error: str, now: str) -> None:
        """Note a failed Ledger write that will be retried (no state change)."""
        devices.note_attempt(self.db, device_id, token_tid, error, now)

    def note_clear_attempt(self, device_id: str, error: str, now: str) -> None:
        """Note a failed write of the cleared state (the device stays ``clearing``)."""
        devices.note_clear_attempt(self.db, device_id, error, now)

    def note_redelivery(self, device_id: str, token_tid: str, now: str) -> None:
        devices.note_redelivery(self.db, device_id, token_tid, now)

    def queued_at(self, device_id: str) -> str | None:
        """When the device's waiting message was sent (None: no queued mark)."""
        return QueueMarks(self.db).queued_at(device_id)

    def unmark_queued(self, device_id: str, queued_at: str) -> bool:
        """Remove the device's queued mark set at ``queued_at`` (``queue_marks.QueueMarks.unmark``)."""
        return QueueMarks(self.db).unmark(device_id, queued_at)

    # ---- imports -------------------------------------------------------------------------------

    def get_import(self, sha256: str) -> PlainItem | None:
        return imports.get_import(self.db, sha256)

    def begin_import(self, sha256: str, source_key: str, size: int, now: str) -> None:
        """Record that a file is being imported (first attempt, or again after an interrupted one)."""
        imports.begin_import(self.db, sha256, source_key, size, now)

    def finish_import(self, sha256: str, summary: Mapping[str, Any], now: str) -> None:
        """Store the outcome of an import and list it among the recent ones."""
        imports.finish_import(self.db, sha256, summary, now)

    def list_imports(
        self, limit: int = 20, cursor: Mapping[str, Any] | None = None
    ) -> tuple[list[PlainItem], RawItem | None]:
        """One page of import records, newest first, and the next page's start."""
        return imports.list_imports(self.db, limit, cursor)

    def trim_recent_imports(self) -> None:
        """Keep the recent-imports item small."""
        imports.trim_recent_imports(self.db)
