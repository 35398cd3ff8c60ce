"""States, errors and value types of Tokenflow's domain. Imports nothing from AWS.

The state diagram (also in DESIGN.md):

Token::

    available --claim--> assigned --deliver--> delivered --confirm--> confirmed
        ^                    |                     |  ^                  |
        |                    |                     |  +----mismatch------+
        +--(replacement's token, never in a Ledger)+
    assigned/delivered/confirmed --transfer--> assigned (to the new holder)
    delivered/confirmed --(replacement's token, was in a Ledger)--> released   (terminal, never reused)
    any but revoked --revoke--> revoked                                         (terminal)

Device::

    (new) --claim--> pending --deliver--> delivered --confirm--> confirmed
    (new) --no token--> waiting --claim--> pending
    pending --retries run out--> failed --deliver (retry)--> delivered
    confirmed --mismatch--> delivered (its token is written again)
    holding --token revoked--> clearing(revoked) --cleared state written--> waiting
    holding --token moved away--> clearing(transferred) --cleared state written--> retired
    waiting/retired/clearing/holding --receives a transferred token--> pending
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOKEN_STATES = ("available", "assigned", "delivered", "confirmed", "released", "revoked")
DEVICE_STATES = ("waiting", "pending", "delivered", "confirmed", "failed", "clearing", "retired")
# A device in one of these states holds a live token (its ``token_id``).
HOLDING_STATES = ("pending", "delivered", "confirmed", "failed")
# A token in one of these states is bound to a device that holds it.
BOUND_TOKEN_STATES = ("assigned", "delivered", "confirmed")
# Why a device's Ledger is overwritten with the cleared state; the firmware reports it back.
CLEAR_REASONS = ("revoked", "transferred")
DEVICE_FIELDS = ("name", "serial_number", "platform_id")

Item = Mapping[str, Any]


class Refused(Exception):
    """A rule does not allow the change. ``kind``: ``conflict``, ``not_found`` or ``bad_request``."""

    def __init__(self, message: str, kind: str = "conflict") -> None:
        super().__init__(message)
        self.kind = kind


class Changed(Exception):
    """An item a rule read changed before its transaction ran: read again and decide anew."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} changed meanwhile")
        self.what = what


@dataclass(frozen=True)
class TokenRef:
    """A token as a device record names it: id (SHA-256 of the AuthToken), fingerprint, mask."""

    token_id: str
    fingerprint: str
    mask: str


@dataclass(frozen=True)
class ProductDevice:
    """What the Particle product says about a device (the lookup before a transfer)."""

    device_id: str
    quarantined: bool = False
    denied: bool = False
    name: str | None = None
    serial_number: str | None = None
    platform_id: int | None = None

    def fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in DEVICE_FIELDS if getattr(self, k) is not None}


@dataclass(frozen=True)
class Write:
    """One item's change in a transaction.

    ``before`` is the item as the rule saw it (None: it must not exist yet). ``guard`` says how the
    transaction checks that it is still so: ``version`` (the item's version attribute, so any change
    at all fails it) or ``state`` (the exact state and binding: used where the caller did not read the
    item, e.g. a claim from the index). ``values`` are set; a None value removes the attribute.
    """

    kind: str  # "token" or "device"
    id: str
    before: Item | None
    values: Mapping[str, Any]
    guard: str = "version"

    @property
    def state_before(self) -> str | None:
        return self.before.get("state") if self.before else None

    @property
    def state_after(self) -> str | None:
        state: str | None = self.values.get("state", self.state_before)
        return state


@dataclass(frozen=True)
class Event:
    """A line of a token's history (kept as its own item next to the token)."""

    token_id: str
    what: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FollowUp:
    """Work a transition leaves for the assign workers: ``deliver`` a token or ``clear`` a Ledger."""

    device_id: str
    action: str  # "deliver" or "clear"


@dataclass(frozen=True)
class Plan:
    """What a rule decided: the writes of one transaction, history, follow-up work, and the answer."""

    writes: tuple[Write, ...]
    events: tuple[Event, ...] = ()
    follow_ups: tuple[FollowUp, ...] = ()
    outcome: Mapping[str, Any] = field(default_factory=dict)

    def counter_deltas(self) -> dict[str, int]:
        """Per-state counter changes, derived from the writes (so they cannot disagree with them)."""
        deltas: dict[str, int] = {}
        for write in self.writes:
            before, after = write.state_before, write.state_after
            if before == after:
                continue
            prefix = "tokens" if write.kind == "token" else "devices"
            if before is not None:
                deltas[f"{prefix}_{before}"] = deltas.get(f"{prefix}_{before}", 0) - 1
            if after is not None:
                deltas[f"{prefix}_{after}"] = deltas.get(f"{prefix}_{after}", 0) + 1
        return {k: v for k, v in deltas.items() if v}
