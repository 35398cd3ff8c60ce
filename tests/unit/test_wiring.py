"""The composition root: one graph per container, parts given instead of built, and one reset (no I/O:
nothing here sends a request; clients and sessions are only made)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tokenflow import aws, ingest, triggers, wiring
from tokenflow.settings import ConfigurationError, Settings
from tokenflow.store import Store
from tokenflow_local.processes import forget_clients

NOW = "2026-11-29T10:00:00.000Z"
CONFIGURED = Settings(
    table_name="tokenflow-table",
    exports_bucket="tokenflow-exports",
    assign_queue_url="http://127.0.0.1:9/queue/assign",
    particle_api_url="http://127.0.0.1:9",
    particle_product="tokenflow-demo",
    max_delivery_attempts=7,
    low_stock_threshold=12,
)


class FakeParticle:
    def set_ledger_token(self, device_id: str, token: str) -> None:
        raise AssertionError("not called here")

    def clear_ledger_token(self, device_id: str, reason: str) -> None:
        raise AssertionError("not called here")


@pytest.fixture(autouse=True)
def fresh_container() -> Iterator[None]:
    wiring.reset()
    yield
    wiring.reset()


def test_every_service_of_a_container_shares_one_store_one_queue_and_one_particle_client() -> None:
    graph = wiring.Services(CONFIGURED)
    store, particle, queue = graph.store(), graph.particle(), graph.assign_queue()

    assert (store.table, queue.queue_url, particle.product) == (
        "tokenflow-table",
        "http://127.0.0.1:9/queue/assign",
        "tokenflow-demo",
    )
    sweeper, assigner, lifecycle, fleet = graph.sweeper(), graph.assigner(), graph.lifecycle(), graph.fleet()
    assert sweeper.store is assigner.store is lifecycle.store is fleet.store is store
    assert sweeper.particle is assigner.ledger is particle
    # One assign queue behind the one deduplicating queue the sweep and the lifecycle share.
    assert sweeper.queue is lifecycle.queue is graph.once_queue()
    assert graph.once_queue().queue is queue and graph.once_queue().marks.db is store.db
    assert assigner.max_attempts == 7 and fleet.low_stock_threshold == 12
    assert fleet.reports is not None and fleet.reports.bucket == "tokenflow-exports"
    # Built once: asking again answers the same objects.
    assert (graph.sweeper(), graph.assigner(), graph.lifecycle(), graph.fleet()) == (
        sweeper,
        assigner,
        lifecycle,
        fleet,
    )
    assert graph.importer("a") is graph.importer("a") is not graph.importer("b")
    assert graph.importer("b").bucket == "b" and graph.importer("b").store is store


def test_parts_given_to_the_graph_are_used_instead_of_built() -> None:
    store = Store("the-test-table")
    particle = FakeParticle()
    sent: list[str] = []
    # No table, queue or product configured: the given parts need none of them.
    graph = wiring.Services(
        Settings(),
        clock=lambda: NOW,
        store=store,
        particle=particle,  # type: ignore[arg-type]
        sweep_trigger=sent.append,
    )

    assigner = graph.assigner()
    assert assigner.store is store and assigner.ledger is particle and assigner.clock() == NOW
    importer = graph.importer("exports")
    assert importer.store is store and importer.clock() == NOW
    assert importer.on_tokens_added is not None
    importer.on_tokens_added(3)
    assert sent == ["import added 3 tokens"]
    with pytest.raises(ConfigurationError, match="ASSIGN_QUEUE_URL"):
        graph.lifecycle()  # the one part neither given nor configured


def test_a_missing_setting_is_named_when_the_part_that_needs_it_is_first_built() -> None:
    graph = wiring.Services(Settings())  # building the graph itself needs nothing

    with pytest.raises(ConfigurationError, match="TABLE_NAME"):
        graph.fleet()
    graph = wiring.Services(Settings(table_name="t"))
    with pytest.raises(ConfigurationError, match="PARTICLE_PRODUCT"):
        graph.assigner()
    with pytest.raises(ConfigurationError, match="ASSIGN_QUEUE_URL"):
        graph.lifecycle()


def test_a_sweep_is_triggered_only_where_a_sweep_function_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unconfigured = wiring.Services(CONFIGURED)
    assert unconfigured.sweep_trigger() is None
    assert unconfigured.importer("b").on_tokens_added is None
    assert unconfigured.lifecycle().request_sweep is None

    configured = wiring.Services(replace(CONFIGURED, sweep_function_name="tokenflow-sweep"))
    trigger = configured.sweep_trigger()
    assert trigger is not None and configured.lifecycle().request_sweep is trigger
    invoked: list[tuple[str, str]] = []
    monkeypatch.setattr(triggers, "request_sweep", lambda name, reason: invoked.append((name, reason)))
    importer = configured.importer("b")
    assert importer.on_tokens_added is not None
    importer.on_tokens_added(5)
    assert invoked == [("tokenflow-sweep", "import added 5 tokens")]


def test_the_clock_is_utc_iso_8601_with_milliseconds_and_drives_the_sweeper_too() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", wiring.utc_now())
    assert ingest.utc_now is wiring.utc_now  # still importable where the tests have always found it
    graph = wiring.Services(CONFIGURED, clock=lambda: NOW)
    assert graph.sweeper().now() == datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert graph.lifecycle().clock() == NOW


def test_reset_forgets_the_graph_the_settings_the_clients_and_the_parameter_caches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aws_lambda_powertools.utilities import parameters

    monkeypatch.setenv("TABLE_NAME", "first")
    store = wiring.store()
    assert store.table == "first" and wiring.store() is store and wiring.fleet().store is store
    monkeypatch.setenv("TABLE_NAME", "second")
    assert wiring.store() is store  # once per container: the environment is read once
    sqs = aws.client("sqs")
    parameters.base.DEFAULT_PROVIDERS["ssm"] = parameters.SSMProvider()

    wiring.reset()

    assert wiring.store().table == "second" and wiring.settings().table_name == "second"
    assert aws.client("sqs") is not sqs
    assert parameters.base.DEFAULT_PROVIDERS == {}


def test_the_handlers_use_an_installed_graph_until_the_local_stack_forgets_it() -> None:
    graph = wiring.install(wiring.Services(CONFIGURED, clock=lambda: NOW))
    assert wiring.services() is graph and wiring.lifecycle() is graph.lifecycle()
    assert wiring.clock()() == NOW

    forget_clients()

    assert wiring.services() is not graph
