"""Point the functions' handlers, run in this process, at a test's moto and Particle simulator."""

from __future__ import annotations

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
