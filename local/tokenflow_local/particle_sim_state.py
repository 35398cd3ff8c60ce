"""The Particle simulator's ground floor: the state every room of it shares, under one lock.

``SimState`` holds the product's identity (name, id, org, the access token the API accepts), the
product's fleet as the cloud knows it (``fleet``: device id -> the device fields of Particle's product
device API) and the cloud's Ledger instances (``ledgers``: (prefix, ledger, device id) -> data and
times). The rooms build on it, each a subclass of the one below:

- ``particle_sim_device_os``: what each device itself holds (its flash copies, its sync queue, online
  and reboot), as Device OS keeps it;
- ``particle_sim_cloud``: the product's fleet and the cloud API routes (devices, Ledger instances);
- ``particle_sim_faults``: faults, the rate limiter and the request counters in front of the routes;
- ``particle_sim_control``: the simulator's own knobs under ``/_sim/``;
- ``particle_sim``: ``ParticleSimulator`` with its HTTP server (``particle_sim_http``) and ``main``.

Also the two values every room speaks in: ``Answer`` (status, headers, JSON body) and ``DROP``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

DEFAULT_LEDGER = "blynk-tokens-c2d"

# What ``handle`` returns to drop the connection without an answer (a lost response).
DROP = -1

Answer = tuple[int, dict[str, str], Any]


def now_iso() -> str:
    """Wall time as Particle's API writes it (ISO 8601, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimState:
    """The product, its fleet and the cloud's Ledger instances; ``lock`` guards all of it."""

    def __init__(
        self,
        *,
        product: str,
        product_id: int,
        org: str,
        access_token: str,
    ) -> None:
        self.product = product
        self.product_id = product_id
        self.org = org
        self.access_token = access_token
        self.lock = threading.RLock()
        self.fleet: dict[str, dict[str, Any]] = {}
        self.ledgers: dict[tuple[str, str, str], dict[str, Any]] = {}  # (prefix, ledger, device)
