"""Put devices into a state directly through the lifecycle rules (the same writes the services make)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenflow import rules
from tokenflow.model import TokenRef
from tokenflow.store import Store
from tokenflow.tokens import fingerprint, mask


def claim(
    store: Store, device_id: str, tid: str, token: str, now: str, fields: Mapping[str, Any] = {}
) -> None:
    """A new device takes an available token (pending)."""
    ref = TokenRef(tid, fingerprint(token), mask(token))
    store.apply(rules.claim(device_id, None, ref, fields, now), now)


def deliver(store: Store, device_id: str, tid: str, now: str) -> None:
    """A pending device's Ledger write landed (delivered)."""
    store.apply(rules.deliver(device_id, "pending", tid, now), now)


def waiting(store: Store, device_id: str, now: str) -> None:
    """A new device found no token (waiting)."""
    store.apply(rules.record_waiting(device_id, {}, now), now)
