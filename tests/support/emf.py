"""The CloudWatch metrics the functions emit, read back from the EMF blobs Powertools prints, and the
metrics template.yaml's dashboard and alarms name, resolved as a deployment would resolve them.

Powertools' Metrics writes one JSON object per flush to stdout in the CloudWatch Embedded Metric
Format: ``_aws.CloudWatchMetrics[*]`` names the namespace, the dimension sets (lists of keys) and the
metrics; the dimension values and metric values are top-level members of the same object
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
Its ``service`` dimension is the POWERTOOLS_SERVICE_NAME the function has when the Metrics object is
built ("Service: sets **service** metric dimension across all metrics",
https://docs.aws.amazon.com/powertools/python/latest/core/metrics/), so ``emitted_by`` runs a block
with the service its function has in template.yaml.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support import sam_template


@dataclass(frozen=True, order=True)
class MetricKey:
    """One CloudWatch metric: namespace, name and its dimensions (name, value), sorted."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dimensions)
        return f"{self.namespace}/{self.name}[{dims}]"


def metric(namespace: str, name: str, dimensions: dict[str, str]) -> MetricKey:
    return MetricKey(namespace, name, tuple(sorted(dimensions.items())))


def parse_emf(text: str) -> set[MetricKey]:
    """Every metric of every EMF blob in ``text`` (other output lines, logs included, are skipped)."""
    found: set[MetricKey] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for keys in directive["Dimensions"]:
                dims = {key: str(blob[key]) for key in keys}
                for m in directive["Metrics"]:
                    found.add(metric(directive["Namespace"], m["Name"], dims))
    return found


def function_environment(function: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment template.yaml gives ``functions/<function>`` (Globals merged, unresolved)."""
    doc = template or sam_template.load()
    variables = dict(doc["Globals"]["Function"]["Environment"]["Variables"])
    for spec in doc["Resources"].values():
        props = spec.get("Properties", {})
        if spec["Type"] == "AWS::Serverless::Function" and props["CodeUri"].rstrip("/").endswith(
            f"/{function}"
        ):
            variables.update(props.get("Environment", {}).get("Variables", {}))
            return variables
    raise KeyError(f"no function with CodeUri functions/{function}/ in template.yaml")


@contextlib.contextmanager
def emitted_by(function: str, into: set[MetricKey]) -> Iterator[None]:
    """Run the block as ``functions/<function>`` runs deployed, and add every metric it prints to
    ``into``. In Lambda each function's process builds Powertools' Metrics at import with that
    function's POWERTOOLS_SERVICE_NAME; here one process runs them all with one Metrics object, so
    the block gets the service its function has in template.yaml, and starts from an empty metric
    set (what code outside a handler added is nobody's flush)."""
    from tokenflow.observability import metrics

    service = function_environment(function)["POWERTOOLS_SERVICE_NAME"]
    provider = metrics.provider
    before = provider.service
    provider.service = service
    metrics.clear_metrics()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        provider.service = before
        sys.stdout.write(printed.getvalue())  # still shown by pytest with a failure
        into.update(parse_emf(printed.getvalue()))


# ---- what the template names --------------------------------------------------------------------

# The AWS metrics the template may name: their one dimension and the template resource type it
# names. From the services' metric lists: SQS https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html,
# Lambda https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html, API Gateway HTTP
# APIs https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-metrics.html.
AWS_METRICS: dict[tuple[str, str], tuple[str, str]] = {
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): ("QueueName", "AWS::SQS::Queue"),
    ("AWS/Lambda", "Errors"): ("FunctionName", "AWS::Serverless::Function"),
    ("AWS/ApiGateway", "5xx"): ("ApiId", "AWS::Serverless::HttpApi"),
}


@dataclass(frozen=True)
class Named:
    """A metric the template names, and where (a dashboard widget's title, an alarm's id)."""

    where: str
    key: MetricKey


def deployment() -> sam_template.Stack:
    """template.yaml (before the SAM transform: the dashboard and alarms are plain CloudFormation)
    deployed as tests/support/sam_template's made-up stack, to resolve its ``!Sub``s."""
    return sam_template.Stack(sam_template.load())


def dashboard_body(stack: sam_template.Stack, logical: str = "Dashboard") -> dict[str, Any]:
    """The dashboard's JSON body with its ``Fn::Sub`` variables resolved."""
    resolved = stack.resolve(stack.resources[logical]["Properties"]["DashboardBody"])
    body: dict[str, Any] = json.loads(resolved)
    return body


def dashboard_metrics(body: dict[str, Any]) -> list[Named]:
    """Each metric of each metric widget: ``[namespace, name, dim, value, ..., {options}]``
    (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/CloudWatch-Dashboard-Body-Structure.html,
    "Metric Widget: Format for Each Metric in the Array"). Shorthand ("." for the row above) and
    expressions are refused: the check would not see what they name."""
    named: list[Named] = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        title = widget["properties"]["title"]
        for row in widget["properties"]["metrics"]:
            fields = [f for f in row if not isinstance(f, dict)]
            if len(fields) < 2 or len(fields) % 2 or any(f in (".", "..") for f in fields):
                raise ValueError(f"widget {title!r}: a metric row the check cannot read: {row}")
            dims = dict(zip(fields[2::2], fields[3::2], strict=True))
            named.append(Named(title, metric(fields[0], fields[1], dims)))
    return named


def alarm_metrics(stack: sam_template.Stack) -> list[Named]:
    """Each metric each CloudWatch alarm of the template watches (single metric or metric math)."""
    named: list[Named] = []
    for logical in stack.logical_ids("AWS::CloudWatch::Alarm"):
        props = stack.resolve(stack.resources[logical]["Properties"])
        specs = (
            [props]
            if "MetricName" in props
            else [q["MetricStat"]["Metric"] for q in props["Metrics"] if "MetricStat" in q]
        )
        for spec in specs:
            dims = {d["Name"]: str(d["Value"]) for d in spec.get("Dimensions", [])}
            named.append(Named(logical, metric(spec["Namespace"], spec["MetricName"], dims)))
    return named


def problems(
    named: list[Named], emitted: set[MetricKey], namespace: str, stack: sam_template.Stack
) -> list[str]:
    """What is wrong with each named metric: one of ``namespace`` the functions did not emit with
    exactly these dimensions; an AWS one not in AWS_METRICS, or whose dimension names no resource
    of the right type in the template; any other namespace."""
    found: list[str] = []
    for item in named:
        key = item.key
        if key.namespace == namespace:
            if key not in emitted:
                near = sorted(str(e) for e in emitted if e.name == key.name) or ["no metric of that name"]
                found.append(f"{item.where}: {key} is not emitted (emitted: {', '.join(near)})")
            continue
        known = AWS_METRICS.get((key.namespace, key.name))
        if known is None:
            found.append(f"{item.where}: {key} is neither the project's nor a known AWS metric")
            continue
        dimension, kind = known
        names = {_physical(stack, logical, dimension): logical for logical in stack.logical_ids(kind)}
        dims = dict(key.dimensions)
        if set(dims) != {dimension} or dims[dimension] not in names:
            found.append(f"{item.where}: {key} names no {kind} of the template by {dimension}")
    return found


def _physical(stack: sam_template.Stack, logical: str, dimension: str) -> str:
    """The value CloudWatch gives ``dimension`` for the template resource ``logical``."""
    if dimension == "QueueName":
        return stack.get_att(logical, "QueueName")
    return str(stack.ref(logical))  # a function's name, an HTTP API's id
