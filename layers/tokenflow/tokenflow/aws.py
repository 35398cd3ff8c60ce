"""One boto3 client or resource per service, created lazily and reused across invocations.

boto3 reads ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) by itself, so the same code
talks to AWS in Lambda and to the embedded moto server of the local stack.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10)


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)


def reset() -> None:
    """Forget every client (tests switch endpoints and credentials between cases)."""
    client.cache_clear()
