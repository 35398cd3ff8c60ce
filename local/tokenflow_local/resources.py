"""Create the stack's resources on an AWS endpoint (moto) from template.yaml's own definitions.

Tests and the local stack both build the table, bucket and queues from here, so the key layout and
indexes they run against are the ones the template deploys: the two cannot drift. ``StackResources``
is one local deployment of the template: its parameters, the names of its resources, the template's
intrinsics (``!Ref``, ``!GetAtt``, ``!Sub``) resolved against them, and the functions' environment.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account


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
    """(prefix, suffix) of every S3 notification of a function: its SAM ``S3`` events and the
    ``LambdaConfigurations`` of any bucket's ``NotificationConfiguration`` that name it."""
    filters = []
    configs = [props.get("Filter", {}) for props in function_events(logical_id, "S3", path)]
    for bucket in resources_of_type("AWS::S3::Bucket", path):
        notifications = resource(bucket, path).get("NotificationConfiguration", {})
        for config in notifications.get("LambdaConfigurations", []):
            if _logical_of(config.get("Function")) == logical_id:
                configs.append(config.get("Filter", {}))
    for config in configs:
        rules = config.get("S3Key", {}).get("Rules", [])
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


def _logical_of(target: Any) -> str | None:
    """The logical id a ``!GetAtt Logical.Attr`` names (None for anything else)."""
    ref = target.get("Fn::GetAtt") if isinstance(target, dict) else None
    if ref is None:
        return None
    return str(ref.split(".")[0] if isinstance(ref, str) else ref[0])


# ---- one local deployment -----------------------------------------------------------------------


class StackResources:
    """The template deployed once under ``stack_name``: names, ARNs and parameters, then the resources.

    Physical names follow CloudFormation's habit (``<stack>-<LogicalId>``); a value the template
    computes (the bucket's ``!Sub`` name) is computed from the same pseudo parameters here.
    """

    def __init__(self, stack_name: str, path: Path = TEMPLATE) -> None:
        self.stack_name = stack_name
        self.path = path
        self.parameters = parameter_defaults(path)
        if "ExportsBucketPrefix" in self.parameters:
            # One prefix per stack, as the README advises a deployer: tests run several stacks at once.
            self.parameters["ExportsBucketPrefix"] = stack_name.lower()
        self.table = f"{stack_name}-Table"
        self.queues: dict[str, str] = {}  # logical id -> url, once created
        self._refs: dict[str, str] = {"Table": self.table}
        self._attrs: dict[tuple[str, str], str] = {
            ("Table", "Arn"): f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{self.table}",
        }
        for logical in resources_of_type("AWS::Serverless::Function", path):
            self._refs[logical] = f"{stack_name}-{logical}"
        self.bucket = str(self.resolve(resource("ExportsBucket", path)["BucketName"]))
        self._refs["ExportsBucket"] = self.bucket
        self._attrs[("ExportsBucket", "Arn")] = f"arn:aws:s3:::{self.bucket}"

    # ---- the template's intrinsics ---------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """A template value with its intrinsics replaced by this stack's parameters and resources."""
        if isinstance(value, dict) and len(value) == 1:
            ((kind, arg),) = value.items()
            if kind == "Ref":
                return self.ref(arg)
            if kind == "Fn::GetAtt":
                logical, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self._attrs[(logical, attr)]
            if kind == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

                def sub(match: re.Match[str]) -> str:
                    name = match.group(1)
                    if name in extra:
                        return str(self.resolve(extra[name]))
                    if "." in name and not name.startswith("AWS::"):
                        logical, attr = name.split(".", 1)
                        return self._attrs[(logical, attr)]
                    return str(self.ref(name))

                return re.sub(r"\$\{([^}!]+)\}", sub, text)
        return value

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._refs[name]

    # ---- creating them ---------------------------------------------------------------------------

    def create(self, client: Any, secrets: dict[str, str]) -> None:
        """Create the table, bucket, queues and SecureString parameters; ``client(service)`` makes a
        client of the target endpoint, ``secrets`` maps a parameter of the template (the name of an
        SSM parameter) to its value."""
        create_table(client("dynamodb"), self.table)
        create_bucket(client("s3"), self.bucket)
        sqs = client("sqs")
        pending = resources_of_type("AWS::SQS::Queue", self.path)
        while pending:  # dead-letter queues before the queues that name them
            ready = [q for q in pending if all(d in self.queues for d in queue_dependencies(q, self.path))]
            if not ready:
                raise RuntimeError(f"queues with unresolvable redrive targets: {pending}")
            for logical in ready:
                url, arn = create_queue(sqs, logical, f"{self.stack_name}-{logical}", self.resolve)
                self.queues[logical] = url
                self._refs[logical] = url
                self._attrs[(logical, "Arn")] = arn
                self._attrs[(logical, "QueueName")] = url.rsplit("/", 1)[1]
                pending.remove(logical)
        put_secure_parameters(client("ssm"), {self.parameters[name]: v for name, v in secrets.items()})

    # ---- what the functions see --------------------------------------------------------------------

    @property
    def function_names(self) -> dict[str, str]:
        """functions/<name> -> the function's name as AWS would know it."""
        return {
            function_dir(logical, self.path): self._refs[logical]
            for logical in resources_of_type("AWS::Serverless::Function", self.path)
        }

    def function_environment(self) -> dict[str, str]:
        """Every function's template variables, resolved (one process runs them all: one dict)."""
        env: dict[str, str] = {}
        for logical in resources_of_type("AWS::Serverless::Function", self.path):
            for name, value in environment(logical, self.path).items():
                env[name] = str(self.resolve(value))
        return env

    def async_invoke_config(self, logical_id: str) -> tuple[int, str | None]:
        """A function's ``EventInvokeConfig``: (maximum retry attempts, url of its OnFailure queue)."""
        config = resource(logical_id, self.path).get("EventInvokeConfig", {})
        destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        target = _logical_of(destination)
        # Lambda's default for asynchronous invocations is 2 retries.
        return int(config.get("MaximumRetryAttempts", 2)), self.queues.get(target) if target else None

    def sqs_event_source(self, logical_id: str) -> tuple[str, int, int]:
        """A function's SQS event source mapping: (queue url, batch size, maximum concurrency).

        The defaults are the template's own when it sets none (batch 10; the concurrency 2 is the
        local stack's choice, AWS's minimum for MaximumConcurrency).
        """
        events = function_events(logical_id, "SQS", self.path)
        props = events[0] if events else {}
        queue = _logical_of(props.get("Queue")) or "AssignQueue"
        batch = int(self.resolve(props.get("BatchSize", 10)))
        concurrency = int(self.resolve(props.get("ScalingConfig", {}).get("MaximumConcurrency", 2)))
        return self.queues[queue], batch, concurrency
