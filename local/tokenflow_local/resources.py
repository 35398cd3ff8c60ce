"""Create the stack's resources on an AWS endpoint (moto) from template.yaml's own definitions.

Tests and the local stack both build the table, bucket and queues from here, so the key layout and
indexes they run against are the ones the template deploys: the two cannot drift.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class _TemplateLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form intrinsics (!Ref, !Sub ...) as plain values."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


@cache
def template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_TemplateLoader)  # noqa: S506 (SafeLoader subclass)


def resource(logical_id: str, path: Path = TEMPLATE) -> dict[str, Any]:
    return template(path)["Resources"][logical_id]["Properties"]


def table_definition(table_name: str, path: Path = TEMPLATE) -> dict[str, Any]:
    """CreateTable arguments for the template's table, under another name."""
    props = resource("Table", path)
    return {
        "TableName": table_name,
        "BillingMode": props["BillingMode"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"],
    }


def create_table(dynamodb: Any, table_name: str) -> None:
    dynamodb.create_table(**table_definition(table_name))
    dynamodb.get_waiter("table_exists").wait(TableName=table_name)


def create_bucket(s3: Any, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration=resource("ExportsBucket")["VersioningConfiguration"]
    )


# ---- resolving the template's values for a local stack ------------------------------------------

Resolver = Any  # Callable[[Any], Any]: turns a template value (maybe an intrinsic) into a concrete one


def parameter_defaults(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template's parameters with their defaults (None where a parameter has no default)."""
    return {name: spec.get("Default") for name, spec in template(path).get("Parameters", {}).items()}


def resources_of_type(kind: str, path: Path = TEMPLATE) -> list[str]:
    return [name for name, spec in template(path)["Resources"].items() if spec.get("Type") == kind]


def queue_attributes(logical_id: str, resolve: Resolver, path: Path = TEMPLATE) -> dict[str, str]:
    """CreateQueue attributes for one AWS::SQS::Queue of the template (redrive policy included).

    ``resolve`` turns the template's intrinsics (``!Ref MaxDeliveryAttempts``, ``!GetAtt Dlq.Arn``)
    into values: the caller knows the parameters and the resources it has created.
    """
    props = resource(logical_id, path)
    attributes: dict[str, str] = {}
    plain = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
    for name in plain:
        if name in props:
            attributes[name] = str(resolve(props[name]))
    if "SqsManagedSseEnabled" in props:
        attributes["SqsManagedSseEnabled"] = str(bool(resolve(props["SqsManagedSseEnabled"]))).lower()
    redrive = props.get("RedrivePolicy")
    if redrive:
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": resolve(redrive["deadLetterTargetArn"]),
                "maxReceiveCount": int(resolve(redrive["maxReceiveCount"])),
            }
        )
    return attributes


def queue_dependencies(logical_id: str, path: Path = TEMPLATE) -> list[str]:
    """Queues this queue's redrive policy names (they must exist first)."""
    target = resource(logical_id, path).get("RedrivePolicy", {}).get("deadLetterTargetArn")
    if isinstance(target, dict) and "Fn::GetAtt" in target:
        ref = target["Fn::GetAtt"]
        return [ref.split(".")[0] if isinstance(ref, str) else ref[0]]
    return []


def create_queue(sqs: Any, logical_id: str, queue_name: str, resolve: Resolver) -> tuple[str, str]:
    """Create one of the template's queues; returns (url, arn)."""
    url = sqs.create_queue(QueueName=queue_name, Attributes=queue_attributes(logical_id, resolve))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def put_secure_parameters(ssm: Any, values: dict[str, str]) -> None:
    """The SecureString parameters an operator creates once before deploying (see the README)."""
    for name, value in values.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def function_events(logical_id: str, kind: str, path: Path = TEMPLATE) -> list[dict[str, Any]]:
    """The ``Events`` of one function of a given type (S3, SQS, ScheduleV2 ...): their properties."""
    events = resource(logical_id, path).get("Events", {})
    return [spec.get("Properties", {}) for spec in events.values() if spec.get("Type") == kind]


def s3_key_filters(logical_id: str, path: Path = TEMPLATE) -> list[tuple[str, str]]:
    """(prefix, suffix) of every S3 notification of a function."""
    filters = []
    for props in function_events(logical_id, "S3", path):
        rules = props.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        named = {r["Name"].lower(): r["Value"] for r in rules}
        filters.append((named.get("prefix", ""), named.get("suffix", "")))
    return filters


def function_dir(logical_id: str, path: Path = TEMPLATE) -> str:
    """The directory under functions/ a function's CodeUri names."""
    code = resource(logical_id, path).get("CodeUri", "")
    return code.rstrip("/").rsplit("/", 1)[-1] or logical_id


def environment(logical_id: str, path: Path = TEMPLATE) -> dict[str, Any]:
    """A function's environment variables: the Globals' merged with its own (unresolved)."""
    doc = template(path)
    merged = dict(doc.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    merged.update(resource(logical_id, path).get("Environment", {}).get("Variables", {}))
    return merged
