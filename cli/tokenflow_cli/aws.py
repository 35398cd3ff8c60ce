"""The AWS side of the CLI: credentials and region, the stack's outputs, the upload to the exports bucket."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from tokenflow_cli.client import CliError

API_REGION_RE = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com")
INCOMING_PREFIX = "incoming/"


def region_for(explicit: str | None, session: boto3.session.Session, api_url: str | None = None) -> str:
    """--region, then AWS_REGION / AWS_DEFAULT_REGION, the profile's region, then the API URL's region."""
    region = explicit or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    region = region or session.region_name
    if not region and api_url:
        match = API_REGION_RE.search(api_url)
        region = match.group(1) if match else None
    if not region:
        raise CliError("no AWS region: pass --region or set AWS_REGION")
    return region


def stack_outputs(session: boto3.session.Session, stack: str, endpoint: str | None) -> dict[str, str]:
    """The CloudFormation stack's outputs (ApiUrl, ExportsBucketName, ...) by key."""
    client = session.client("cloudformation", endpoint_url=endpoint)
    try:
        stacks = client.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        raise CliError(f"cannot read stack {stack}: {message}") from None
    if not stacks:
        raise CliError(f"stack {stack} not found")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def file_sha256(path: Path) -> str:
    """The import id: ingest names an import by the SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload(
    session: boto3.session.Session,
    endpoint: str | None,
    path: Path,
    bucket: str,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Upload ``path`` to ``s3://bucket/incoming/<name>``; the object key.

    ``progress`` is called with each chunk's byte count, from boto3's transfer threads.
    """
    # S3 notification suffix filters are case-sensitive: "export.ZIP" would never be imported.
    key = INCOMING_PREFIX + path.stem + path.suffix.lower()
    client: Any = session.client("s3", endpoint_url=endpoint)
    try:
        client.upload_file(str(path), bucket, key, Callback=progress)
    except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
        raise CliError(f"upload to s3://{bucket}/{key} failed: {exc}") from None
    return key
