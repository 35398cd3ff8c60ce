"""Fixtures shared by every test: in-process moto for AWS, the table and bucket built from template.yaml."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from tokenflow import wiring
from tokenflow.store import Store
from tokenflow_local import moto_speedups, sqs_long_poll
from tokenflow_local.resources import create_bucket, create_table

# Records the functions' AWS calls and checks them against their roles at the end (docs/iam.md).
pytest_plugins = ["tests.support.iam_recorder"]

TABLE = "tokenflow-test"
BUCKET = "tokenflow-test-exports"

# Never reach a real account, whatever the machine has configured.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_NAMESPACE="Tokenflow",
    POWERTOOLS_SERVICE_NAME="tokenflow-tests",
)
moto_speedups.install()
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)


@pytest.fixture
def aws_mock() -> Iterator[None]:
    wiring.reset()  # the clients, settings and services of the code under test are made inside the mock
    with mock_aws():
        yield
    wiring.reset()


@pytest.fixture
def dynamodb(aws_mock: None):
    client = boto3.client("dynamodb")
    create_table(client, TABLE)
    return client


@pytest.fixture
def s3(aws_mock: None):
    client = boto3.client("s3")
    create_bucket(client, BUCKET)
    return client


@pytest.fixture
def store(dynamodb) -> Store:
    return Store(TABLE, dynamodb)


@pytest.fixture
def local_sqs(aws_mock: None) -> Iterator[object]:
    """An SQS client on moto as the local stack runs it (``tokenflow_local.sqs_long_poll``
    installed for the test, unless it already was)."""
    was_installed = sqs_long_poll.installed()
    sqs_long_poll.install()
    try:
        yield boto3.client("sqs", region_name="us-east-1")
    finally:
        if not was_installed:
            sqs_long_poll.uninstall()
