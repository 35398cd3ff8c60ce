"""Point the functions' handlers, run in this process, at a test's moto and Particle simulator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import TABLE
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.stack import forget_clients

PARTICLE_TOKEN_PARAM = "/tokenflow/particle-token"


def configure_functions(
    monkeypatch: pytest.MonkeyPatch, sim: ParticleSimulator, queue_url: str, **environment: str
) -> None:
    """The Particle access token as a SecureString and the environment template.yaml gives sweep and
    assign (the test table, the assign queue, the simulator's product), plus ``environment``; the
    cached clients, settings and secrets are dropped so the handlers read this test's."""
    boto3.client("ssm").put_parameter(
        Name=PARTICLE_TOKEN_PARAM, Value=sim.access_token, Type="SecureString", Overwrite=True
    )
    for name, value in {
        "TABLE_NAME": TABLE,
        "ASSIGN_QUEUE_URL": queue_url,
        "PARTICLE_API_URL": sim.url,
        "PARTICLE_PRODUCT": sim.product,
        "PARTICLE_TOKEN_PARAM": PARTICLE_TOKEN_PARAM,
        **environment,
    }.items():
        monkeypatch.setenv(name, value)
    forget_clients()


@contextlib.contextmanager
def assign_function(monkeypatch: pytest.MonkeyPatch, dynamodb: Any) -> Iterator[dict[str, Any]]:
    """The assign handler, freshly loaded, against moto and a Particle simulator: the assign queue
    (visibility 720 s, as the template's), the simulator, and a Store on the test table."""
    from tokenflow.store import Store
    from tokenflow_local.lambda_runtime import load_handler

    with ParticleSimulator() as sim:
        sqs = boto3.client("sqs")
        queue = sqs.create_queue(QueueName="assign", Attributes={"VisibilityTimeout": "720"})["QueueUrl"]
        configure_functions(monkeypatch, sim, queue)
        load_handler("assign", fresh=True)
        yield {"sqs": sqs, "queue": queue, "sim": sim, "store": Store(TABLE, dynamodb)}


def sweep_queues_new_devices(stack: dict[str, Any], count: int) -> list[str]:
    """``count`` new devices in the product and a token for each; the sweep handler queues them all."""
    from tests.support.events import invoke, load_event
    from tests.support.factories import random_tokens

    ids: list[str] = stack["sim"].add_devices(count)
    stack["store"].add_tokens(random_tokens(count), import_id="i", now="t")
    assert invoke("sweep", load_event("sweep/scheduled.json"))["queued"] == {"new": count}
    return ids
