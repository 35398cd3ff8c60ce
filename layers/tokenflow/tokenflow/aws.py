"""One boto3 client per service, created lazily and reused across invocations.

boto3 reads ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) by itself, so the same code
talks to AWS in Lambda and to the embedded moto server of the local stack.

boto3 and botocore are imported by the first ``client()`` call, not by importing this module: they
are most of a handler's import time (about 170 ms on the project's machine, bench/README.md), and
a function's import should not pay for them before it knows it will call AWS. ``warm()`` creates
clients ahead of time where that is off the request path (a SnapStart snapshot, provisioned
concurrency).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.config import Config


@cache
def _config() -> Config:
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10)


@cache
def client(service: str) -> Any:
    import boto3

    # boto3-stubs types client() per service name literal; this one takes any service.
    return boto3.session.Session().client(service, config=_config())  # type: ignore[call-overload]


def warm(*services: str) -> None:
    """Create these clients now rather than at their first use."""
    for service in services:
        client(service)


def reset() -> None:
    """Forget every client (tests switch endpoints and credentials between cases)."""
    client.cache_clear()
