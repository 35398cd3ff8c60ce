"""The circuit breaker of assignment: a stack-wide pause while Particle says the configuration is wrong.

A 401 (the access token), a 403 (its scopes on the product or the Ledger) or a 404 that is the
Ledger's rather than a device's (``rules.configuration_error``) would fail every device the same
way. Without a breaker each device was retried, then parked as ``failed``, and fixing the
configuration did not bring them back. With it:

- the first such answer pauses the stack (``trip``: one item, ``store.pause``, with the reason and
  since when; the ``AssignmentPaused`` metric raises the alarm), and the batch stops: its devices
  stay as they are (pending or waiting, never failed) and their messages go back to the queue;
- every later batch first asks ``check``: while the stack is paused it makes one cheap probe call
  (one product device of one page, then one Ledger instance of one page); when both answer the pause
  is cleared and the batch is served, else the batch goes back to the queue untouched.

So replacing the token (or creating the Ledger) is all an operator does: the next batch resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from tokenflow.observability import logger, metrics
from tokenflow.particle import ParticleError
from tokenflow.store import Store
from tokenflow.store import pause as pause_item

# How long a message waits in the queue while the stack is paused, before its batch probes again.
# Each return counts one receive toward the queue's maxReceiveCount; 10 minutes gives an operator
# close to an hour (5 receives) before a message moves to the dead-letter queue.
PAUSED_RECHECK_SECONDS = 600


class Probe(Protocol):
    def iter_device_pages(self, per_page: int = 100) -> Any: ...

    def list_ledger_instances(self, per_page: int = 100) -> Any: ...


class Breaker:
    def __init__(self, store: Store, particle: Probe, clock: Callable[[], str]) -> None:
        self.store = store
        self.particle = particle
        self.clock = clock

    def current(self) -> dict[str, str] | None:
        """The pause (``reason``, ``since``), or None."""
        return pause_item.get_pause(self.store.db)

    def check(self) -> dict[str, str] | None:
        """Before a batch: None when it may be served (no pause, or a probe just cleared one); the
        pause when it holds (the probe failed too)."""
        paused = self.current()
        if paused is None:
            return None
        try:
            # The cheapest calls that cover what a pause can be about: the token and the product
            # (a device listing of one), the Ledger (an instance listing of one).
            next(iter(self.particle.iter_device_pages(per_page=1)), None)
            next(iter(self.particle.list_ledger_instances(per_page=1)), None)
        except ParticleError as exc:
            metrics.add_metric(name="AssignmentPaused", unit="Count", value=1)
            logger.warning(
                "Assignment stays paused: the probe failed",
                extra={"reason": paused["reason"], "since": paused["since"], "probe": type(exc).__name__},
            )
            return paused
        if pause_item.clear_pause(self.store.db, self.clock()):
            logger.info("Assignment resumed: the probe succeeded", extra={"paused_since": paused["since"]})
        metrics.add_metric(name="AssignmentResumed", unit="Count", value=1)
        return None

    def trip(self, reason: str) -> dict[str, str]:
        """Pause the stack (kept as it is when paused already); returns the pause in force."""
        now = self.clock()
        if pause_item.set_pause(self.store.db, reason, now):
            logger.error("Assignment paused: the configuration is wrong", extra={"reason": reason})
        metrics.add_metric(name="AssignmentPaused", unit="Count", value=1)
        return self.current() or {"reason": reason, "since": now}
