"""The composition root: the one place that builds what a function uses, once per container.

A Lambda execution environment imports its handler once and then serves many invocations, so the
settings, the AWS clients, the store, the Particle client, the assign queue, the sweep trigger, the
clock and the services built from them are made once, at their first use, and kept. Handlers only
parse their event, ask this module for a service and shape the answer:

    wiring.importer(bucket)   ingest           wiring.sweeper()    sweep
    wiring.assigner()         assign           wiring.fleet()      api
    wiring.lifecycle()        api, webhook     wiring.settings()   what a handler itself reads

``Services`` is that graph. Each part is built when first asked for, from the parts it needs, and
a part given to the constructor is used instead of building it; so a test builds the same graph
with its fakes (``Services(store=..., particle=..., clock=...)``), and ``install()`` makes the
handlers use it. ``reset()`` forgets everything cached for the process: the graph, the settings,
the AWS clients and the Powertools Parameters caches (tests and the local stack switch endpoints,
credentials and environment between cases).

Nothing costly is imported here: each service module is imported by the builder that needs it, so
a handler's import pays only for what it names itself (bench/README.md, cold start). The local
stack runs every function in one process, where they share this graph as they share the clients;
every part is safe to share between threads (boto3 clients, the Particle client's pacing, the
services hold no per-request state).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tokenflow import aws
from tokenflow import settings as _settings

if TYPE_CHECKING:
    from tokenflow.assign_queue import AssignQueue
    from tokenflow.assignment import Assigner
    from tokenflow.fleet import Fleet
    from tokenflow.ingest import Importer
    from tokenflow.lifecycle import Lifecycle
    from tokenflow.particle import ParticleClient
    from tokenflow.queue_once import OnceQueue
    from tokenflow.settings import Settings
    from tokenflow.store import Store
    from tokenflow.store.queue_marks import QueueMarks
    from tokenflow.sweep import Sweeper

T = TypeVar("T")

Clock = Callable[[], str]
"""The time now as the table stores it: UTC, ISO 8601, milliseconds, ``Z`` (``utc_now``)."""

SweepTrigger = Callable[[str], None]
"""Starts a sweep for the given reason (asynchronously; never fails the caller)."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Services:
    """What the functions use, each part built once at its first use (thread-safe)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock = utc_now,
        store: Store | None = None,
        particle: ParticleClient | None = None,
        assign_queue: AssignQueue | None = None,
        sweep_trigger: SweepTrigger | None = None,
    ) -> None:
        self.settings = settings if settings is not None else _settings.settings()
        self.clock = clock
        given = {"store": store, "particle": particle, "assign_queue": assign_queue}
        self._parts: dict[str, Any] = {name: part for name, part in given.items() if part is not None}
        if sweep_trigger is not None:
            self._parts["sweep_trigger"] = sweep_trigger
        self._lock = threading.RLock()  # re-entrant: a service's builder asks for its parts

    def _part(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
            part: T = self._parts[name]
            return part

    # ---- adapters ------------------------------------------------------------------------------

    def store(self) -> Store:
        def build() -> Store:
            from tokenflow.store import Store

            self.settings.require("table_name")
            return Store(self.settings.table_name)

        return self._part("store", build)

    def particle(self) -> ParticleClient:
        def build() -> ParticleClient:
            from tokenflow.particle import ParticleClient

            self.settings.require("particle_product")
            return ParticleClient.from_settings(self.settings)

        return self._part("particle", build)

    def assign_queue(self) -> AssignQueue:
        def build() -> AssignQueue:
            from tokenflow.assign_queue import AssignQueue

            self.settings.require("assign_queue_url")
            return AssignQueue(self.settings.assign_queue_url)

        return self._part("assign_queue", build)

    def queue_marks(self) -> QueueMarks:
        """Which devices have a message waiting in the assign queue (the worker removes its mark)."""

        def build() -> QueueMarks:
            from tokenflow.store.queue_marks import QueueMarks

            return QueueMarks(self.store().db)

        return self._part("queue_marks", build)

    def once_queue(self) -> OnceQueue:
        """The assign queue as the sweep and the status reports use it: one message per device of
        work (tokenflow.queue_once)."""

        def build() -> OnceQueue:
            from tokenflow.queue_once import OnceQueue

            return OnceQueue(self.assign_queue(), self.queue_marks(), clock=self.clock)

        return self._part("once_queue", build)

    def sweep_trigger(self) -> SweepTrigger | None:
        """How a function starts the sweep function; None where none is configured."""

        def build() -> SweepTrigger | None:
            function_name = self.settings.sweep_function_name
            if not function_name:
                return None

            def trigger(reason: str) -> None:
                from tokenflow import triggers

                triggers.request_sweep(function_name, reason)

            return trigger

        return self._part("sweep_trigger", build)

    # ---- services ------------------------------------------------------------------------------

    def importer(self, bucket: str) -> Importer:
        """Ingest: the exports of ``bucket`` into the store, a sweep after tokens were added."""

        def build() -> Importer:
            from tokenflow.ingest import Importer

            trigger = self.sweep_trigger()
            return Importer(
                self.store(),
                bucket,
                on_tokens_added=(lambda count: trigger(f"import added {count} tokens")) if trigger else None,
                clock=self.clock,
            )

        return self._part(f"importer:{bucket}", build)

    def sweeper(self) -> Sweeper:
        def build() -> Sweeper:
            from tokenflow.sweep import Sweeper

            return Sweeper(
                self.store(),
                self.particle(),
                self.once_queue(),
                now=lambda: datetime.fromisoformat(self.clock()),
                pass_interval=self.settings.sweep_pass_interval,
                backlog=self.assign_queue().backlog,
                seconds_per_message=self.settings.particle_rate_window / self.settings.particle_rate_limit,
            )

        return self._part("sweeper", build)

    def assigner(self) -> Assigner:
        def build() -> Assigner:
            from tokenflow.assignment import Assigner

            return Assigner(
                self.store(),
                self.particle(),
                max_attempts=self.settings.max_delivery_attempts,
                clock=self.clock,
            )

        return self._part("assigner", build)

    def lifecycle(self) -> Lifecycle:
        """Operator actions and status reports. The Particle client is made at its first use (only a
        transfer needs it), and only where a product is configured or a client was given."""

        def build() -> Lifecycle:
            from tokenflow.lifecycle import Lifecycle

            has_particle = "particle" in self._parts or bool(self.settings.particle_product)
            return Lifecycle(
                self.store(),
                self.once_queue(),
                clock=self.clock,
                request_sweep=self.sweep_trigger(),
                products=self.particle if has_particle else None,
            )

        return self._part("lifecycle", build)

    def fleet(self) -> Fleet:
        def build() -> Fleet:
            from tokenflow.fleet import Fleet
            from tokenflow.reports import S3Reports

            bucket = self.settings.exports_bucket
            has_particle = "particle" in self._parts or bool(self.settings.particle_product)
            return Fleet(
                self.store(),
                low_stock_threshold=self.settings.low_stock_threshold,
                reports=S3Reports(bucket) if bucket else None,
                serials=self.particle if has_particle else None,  # made at the first serial search
            )

        return self._part("fleet", build)


# ---- the container's graph -------------------------------------------------------------------------

_current: Services | None = None
_current_lock = threading.Lock()


def services() -> Services:
    """The graph of this container, made at the first call (from the environment's settings)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Services()
        return _current


def install(graph: Services) -> Services:
    """Make the handlers use ``graph`` from now on (a test's graph, with its fakes); returns it."""
    global _current
    with _current_lock:
        _current = graph
    return graph


def reset() -> None:
    """Forget everything cached for this process: the graph, the settings, the AWS clients and the
    Powertools Parameters caches. The next use builds them again from the environment as it is."""
    global _current
    with _current_lock:
        _current = None
    _settings.settings.cache_clear()
    aws.reset()
    # The Parameters utility imports boto3; where it was never imported, nothing is cached.
    parameters = sys.modules.get("aws_lambda_powertools.utilities.parameters")
    if parameters is not None:
        # Drops the default providers: their cached values and their SSM client, bound to the
        # endpoint of its time. The next read makes a new one.
        parameters.clear_caches()


def settings() -> Settings:
    return services().settings


def clock() -> Clock:
    return services().clock


def store() -> Store:
    return services().store()


def importer(bucket: str) -> Importer:
    return services().importer(bucket)


def sweeper() -> Sweeper:
    return services().sweeper()


def assigner() -> Assigner:
    return services().assigner()


def lifecycle() -> Lifecycle:
    return services().lifecycle()


def fleet() -> Fleet:
    return services().fleet()


def queue_marks() -> QueueMarks:
    return services().queue_marks()
