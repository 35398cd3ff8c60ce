"""The sweep's lease and page cursor: one item (``keys.Keys.sweep_state``).

- lease: ``lease_owner`` and ``lease_until`` (milliseconds since the epoch). A run takes it with a
  conditional write that holds only when no lease is set or the one set has expired, so two sweeps
  never list at once; a run that died (a Lambda timeout, a crash) leaves a lease that expires by
  itself at the end of the time that run had, and the next run takes it over.
- cursor: ``pass_id``, ``next_page`` (the first Particle page not yet handled), ``pages_done``,
  ``started_at``. It is moved after every page, under the lease, so a run that stops (its time
  budget, or an error) is continued from the page it had reached, never from page 1. A finished
  pass is kept as ``last_pass_*`` and the cursor is removed: the next run starts a new pass.
- pace: a new pass starts only once ``min_interval_ms`` have gone by since the last one started
  (the schedule's period), unless one was asked for (``new_pass_requested``: an import added tokens
  while a pass was under way, or since the last one); a run that finds it too early lists nothing.
  While the assign queue still holds the last pass's devices, the next pass waits (``hold_ms``:
  ``HOLD_PERIODS`` intervals, or longer when the devices the last pass queued take longer to serve:
  a 100,000-device first pass takes about 53 minutes at Particle's limit): listing the fleet again
  would only find them already queued. The hold counts from the last pass's start, so it is the
  time of that pass's whole backlog, not of what is left of it: a backlog read 34 minutes into a
  100,000-device pass is 34,000 messages, whose own time (34 minutes, twice over) is already
  behind the pass's start, and a rule on it alone started the next pass then.
  Without it, every run after a finished pass listed the whole fleet again: the local stack's
  schedule, ingest's and the status reports' sweeps started pass after pass while the devices of
  the first were still being served (2.2 listings of a 10,000-device fleet in one benchmark run).

Every write is one UpdateItem on the one item (the sweep's role: dynamodb:UpdateItem on the table);
taking the lease is one, and starting a new pass one more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenflow.store.codec import from_item, to_item
from tokenflow.store.keys import Keys
from tokenflow.store.table import Table

# A backlog in the assign queue holds a new pass back for at least this many pass intervals, and at
# most that or the time the backlog takes to be served (``tokenflow.sweep``): a queue that never
# empties (a paused stack, a device whose writes keep failing) must not stop the reconciliation for
# good.
HOLD_PERIODS = 3


@dataclass(frozen=True)
class SweepCursor:
    """Where the pass this run holds the lease for stands."""

    pass_id: str
    next_page: int
    pages_done: int
    started_at: str
    # The owner of the expired lease this run took over (None: the lease was free).
    took_over_from: str | None = None
    # No pass is under way and the last one started less than the interval ago: the run holds the
    # lease but has nothing to list (``pass_id`` is empty).
    resting: bool = False
    # How many devices the last finished pass queued (0: none, or no pass has finished).
    last_pass_queued: int = 0


class SweepState:
    def __init__(self, db: Table) -> None:
        self.db = db

    def acquire(
        self,
        owner: str,
        now_ms: int,
        lease_ms: int,
        new_pass_id: str,
        now: str,
        *,
        min_interval_ms: int = 0,
        request_new_pass: bool = False,
        hold_ms: int = 0,
        hold_ms_per_last_queued: float = 0.0,
    ) -> SweepCursor | None:
        """Take the lease until ``now_ms + lease_ms`` and answer the cursor; None when another run
        holds an unexpired lease.

        When no pass is under way, a new one starts at page 1 if the last one started at least
        ``min_interval_ms`` ago, or a new pass was asked for (``request_new_pass``, now or by an
        earlier run); else the cursor is ``resting``. ``hold_ms`` (the devices the last pass queued
        are still being served, for about that long) rests it too, unless a new pass was asked for
        or the last one started ``hold_ms`` ago; with ``hold_ms_per_last_queued``, at least that
        much per device the last pass queued (``last_pass_queued``): the time its whole backlog
        takes, counted like ``hold_ms`` from the last pass's start. ``request_new_pass`` while a
        pass is under way is kept for when it ends: the pass after it starts at once.
        """
        values: dict[str, Any] = {":now": now_ms, ":owner": owner, ":until": now_ms + lease_ms}
        update = "SET lease_owner = :owner, lease_until = :until"
        if request_new_pass:
            update += ", new_pass_requested = :yes"
            values[":yes"] = True
        answer = self.db.update_if(
            Keys.sweep_state(),
            ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :now",
            UpdateExpression=update,
            ExpressionAttributeValues=to_item(values),
            ReturnValues="ALL_OLD",
        )
        if answer is None:
            return None
        old = from_item(answer.get("Attributes") or {})
        previous = old.get("lease_owner")  # released leases are removed: one still set had expired
        took_over_from = str(previous) if previous else None
        last_queued = int(old.get("last_pass_queued") or 0)
        if old.get("pass_id"):
            return SweepCursor(
                pass_id=str(old["pass_id"]),
                next_page=int(old.get("next_page", 1)),
                pages_done=int(old.get("pages_done", 0)),
                started_at=str(old.get("started_at", now)),
                took_over_from=took_over_from,
                last_pass_queued=last_queued,
            )
        asked = request_new_pass or bool(old.get("new_pass_requested"))
        last = _epoch_ms(str(old.get("last_pass_started_at") or ""))
        if not asked and min_interval_ms > 0 and last is not None:
            since = now_ms - last
            if hold_ms > 0:  # a backlog: the last pass's own devices count, not only those left
                hold_ms = max(hold_ms, int(hold_ms_per_last_queued * last_queued))
            if since < max(min_interval_ms, hold_ms):
                return SweepCursor("", 0, 0, now, took_over_from, resting=True, last_pass_queued=last_queued)
        self._update(
            "SET pass_id = :pass, next_page = :one, pages_done = :zero, started_at = :at "
            "REMOVE new_pass_requested",
            "lease_owner = :owner",
            {":pass": new_pass_id, ":one": 1, ":zero": 0, ":at": now, ":owner": owner},
        )
        return SweepCursor(new_pass_id, 1, 0, now, took_over_from, last_pass_queued=last_queued)

    def advance(self, owner: str, pass_id: str, next_page: int, devices: int, queued: int) -> bool:
        """Record one page handled; False when this run no longer holds the lease (then it stops)."""
        return self._update(
            "SET next_page = :next ADD pages_done :one, devices_seen :devices, devices_queued :queued",
            "lease_owner = :owner AND pass_id = :pass",
            {
                ":next": next_page,
                ":one": 1,
                ":devices": devices,
                ":queued": queued,
                ":owner": owner,
                ":pass": pass_id,
            },
        )

    def finish_pass(self, owner: str, pass_id: str, now: str) -> bool:
        """The pass listed its last page: keep it as the last pass and drop the cursor."""
        return self._update(
            "SET last_pass_id = pass_id, last_pass_started_at = started_at, last_pass_finished_at = :now, "
            "last_pass_pages = pages_done, last_pass_devices = if_not_exists(devices_seen, :zero), "
            "last_pass_queued = if_not_exists(devices_queued, :zero) "
            "REMOVE pass_id, next_page, pages_done, started_at, devices_seen, devices_queued",
            "lease_owner = :owner AND pass_id = :pass",
            {":now": now, ":zero": 0, ":owner": owner, ":pass": pass_id},
        )

    def release(self, owner: str) -> bool:
        """Give the lease back (the cursor stays); False when it was no longer this run's."""
        return self._update("REMOVE lease_owner, lease_until", "lease_owner = :owner", {":owner": owner})

    def get(self) -> dict[str, Any] | None:
        """The item as plain values (None: no sweep has run yet)."""
        return self.db.get(Keys.sweep_state())

    def _update(self, update: str, condition: str, values: dict[str, Any]) -> bool:
        answer = self.db.update_if(
            Keys.sweep_state(),
            ConditionExpression=condition,
            UpdateExpression=update,
            ExpressionAttributeValues=to_item(values),
        )
        return answer is not None


def _epoch_ms(moment: str) -> int | None:
    """Milliseconds since the epoch of a time in the table's format (ISO 8601, ``Z``); None when
    there is none, or it cannot be read (no pass then holds the next one back)."""
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
