"""``tokenflow doctor`` against the local stack: green on a fresh one, then each check made to fail.

The local stack records itself in its moto as a deployment would (``tokenflow_local.stack_record``):
a CloudFormation stack with the template's parameters and outputs, the alarm topic with a confirmed
subscription, the bucket's notification to the ingest function. The Particle checks go over HTTP to
the simulator (``GET /v1/access_tokens/current``, the product device list, the Ledger definition).
Each test breaks one thing, reads the report, and puts the thing back; the doctor must name that
check red, leave the others as they were, exit 1, and never print either secret.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import local_stack
from tokenflow_cli.doctor import INTEGRATION
from tokenflow_cli.main import main
from tokenflow_local.particle_sim_cloud import ledger_definition
from tokenflow_local.particle_sim_state import DEFAULT_LEDGER
from tokenflow_local.stack import LocalStack

pytestmark = pytest.mark.e2e

LINE = re.compile(r"^(ok|FAIL|warn|skip)\s+(\S+(?: \S+)*)\s{2,}(.*)$")
CHECKS = (
    "stack outputs",
    "ssm parameters",
    "particle token",
    "particle scopes",
    "particle expiry",
    "particle product",
    "particle ledger",
    "bucket notification",
    "alarm subscription",
    "webhook secret",
    "blynk region",
)
# A fresh stack has no confirmed device yet, so Blynk has answered for none: said, not red.
FRESH = {**dict.fromkeys(CHECKS, "ok"), "blynk region": "warn"}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # No simulated devices: the checks read the deployment, not the fleet's progress.
    with local_stack(simulate_devices=False) as local:
        yield local


@pytest.fixture
def integration(stack: LocalStack, tmp_path: Path) -> Path:
    """The status integration as the operator gave it to Particle: the repository's JSON with the
    stack's WebhookUrl and the secret from SSM filled in."""
    hook = json.loads(INTEGRATION.read_text())
    hook["url"] = stack.outputs["WebhookUrl"]
    hook["headers"]["X-Tokenflow-Secret"] = stack.webhook_secret
    path = tmp_path / "tokenflow-status.json"
    path.write_text(json.dumps(hook))
    return path


def doctor(stack: LocalStack, integration: Path | None, *, stack_name: str | None = None) -> tuple[int, str]:
    """Run ``tokenflow doctor``; (exit status, stdout + stderr), checked for secrets."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["--aws-endpoint", stack.aws_url, "--stack", stack_name or stack.stack_name, "doctor"]
    if integration is not None:
        argv += ["--integration", str(integration)]
    code = main(argv, stdout=out, stderr=err)
    text = out.getvalue() + err.getvalue()
    assert stack.particle_token not in text
    assert stack.webhook_secret not in text
    return code, text


def report(text: str) -> dict[str, tuple[str, str]]:
    """check name -> (status, the line's detail and fix)."""
    found: dict[str, tuple[str, str]] = {}
    lines = text.splitlines()
    for n, line in enumerate(lines):
        match = LINE.match(line)
        if match:
            fix = lines[n + 1].strip() if n + 1 < len(lines) and lines[n + 1].startswith("      fix:") else ""
            found[match[2]] = (match[1], f"{match[3]} {fix}".strip())
    return found


def only_red(text: str, name: str) -> str:
    """The red check's detail and fix; every other check must not be red."""
    checks = report(text)
    red = [check for check, (status, _) in checks.items() if status == "FAIL"]
    assert red == [name], text
    return checks[name][1]


def test_a_fresh_local_stack_passes_every_check(stack: LocalStack, integration: Path) -> None:
    code, text = doctor(stack, integration)
    checks = report(text)
    assert list(checks) == list(CHECKS), text
    assert {name: status for name, (status, _) in checks.items()} == FRESH, text
    assert "no confirmed device checked in Blynk yet" in checks["blynk region"][1]
    assert code == 0
    assert "all checks passed" in text
    assert "never expires" in checks["particle expiry"][1]
    assert "Cloud to Device, device-scoped" in checks["particle ledger"][1]


def test_the_repository_integration_is_not_compared_and_not_red(stack: LocalStack) -> None:
    code, text = doctor(stack, INTEGRATION)
    status, detail = report(text)["webhook secret"]
    assert (status, code) == ("warn", 0), text
    assert "placeholder" in detail


def test_a_stack_without_an_output_is_red(stack: LocalStack, integration: Path) -> None:
    cloudformation = stack.client("cloudformation")
    recorded = cloudformation.get_template(StackName=stack.stack_name)["TemplateBody"]
    template: dict[str, Any] = recorded if isinstance(recorded, dict) else json.loads(recorded)
    # The same deployment without ApiUrl; its own resources only (the topic stays the stack's).
    template["Resources"] = {"IngestFunctionRole": template["Resources"]["IngestFunctionRole"]}
    template["Outputs"] = {k: {"Value": v} for k, v in stack.outputs.items() if k != "ApiUrl"}
    cloudformation.create_stack(StackName="tokenflow-no-api", TemplateBody=json.dumps(template))
    try:
        code, text = doctor(stack, integration, stack_name="tokenflow-no-api")
    finally:
        cloudformation.delete_stack(StackName="tokenflow-no-api")
    assert code == 1
    detail = report(text)["stack outputs"]
    assert detail[0] == "FAIL" and "lacks output(s) ApiUrl" in detail[1], text
    assert "make deploy" in detail[1]


def test_a_missing_stack_is_red_and_the_rest_is_skipped(stack: LocalStack, integration: Path) -> None:
    code, text = doctor(stack, integration, stack_name="tokenflow-nowhere")
    checks = report(text)
    assert code == 1
    assert checks["stack outputs"][0] == "FAIL" and "not found" in checks["stack outputs"][1]
    assert checks["particle token"][0] == "skip"


def test_a_secret_stored_as_a_plain_string_is_red(stack: LocalStack, integration: Path) -> None:
    ssm = stack.client("ssm")
    name = stack.parameters["WebhookSecretParameter"]
    ssm.delete_parameter(Name=name)
    ssm.put_parameter(Name=name, Value=stack.webhook_secret, Type="String")
    try:
        code, text = doctor(stack, integration)
    finally:
        ssm.delete_parameter(Name=name)
        ssm.put_parameter(Name=name, Value=stack.webhook_secret, Type="SecureString")
    detail = only_red(text, "ssm parameters")
    assert code == 1
    assert f"{name} is a String, not a SecureString" in detail
    assert f"aws ssm delete-parameter --name {name}" in detail


def test_a_token_particle_rejects_is_red(stack: LocalStack, integration: Path) -> None:
    ssm = stack.client("ssm")
    name = stack.parameters["ParticleTokenParameter"]
    ssm.put_parameter(Name=name, Value="revoked-token", Type="SecureString", Overwrite=True)
    try:
        code, text = doctor(stack, integration)
    finally:
        ssm.put_parameter(Name=name, Value=stack.particle_token, Type="SecureString", Overwrite=True)
    detail = only_red(text, "particle token")
    assert code == 1
    assert "rejects the token" in detail and "401" in detail
    assert "revoked-token" not in text
    # Nothing that needs a valid token is reported green.
    assert report(text)["particle product"][0] == "skip"


@pytest.fixture
def token_info(stack: LocalStack) -> Iterator[dict[str, Any]]:
    """The simulator's description of the token, put back after the test."""
    assert stack.simulator is not None
    saved = json.loads(json.dumps(stack.simulator.token_info))
    yield stack.simulator.token_info
    stack.simulator.token_info = saved


def _in_days(days: float) -> str:
    return (
        (datetime.now(UTC) + timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def test_a_token_expiring_within_14_days_is_red(
    stack: LocalStack, integration: Path, token_info: dict[str, Any]
) -> None:
    token_info["expires_at"] = _in_days(3)
    code, text = doctor(stack, integration)
    detail = only_red(text, "particle expiry")
    assert code == 1
    assert "expires in 3.0 days" in detail and "minimum is 14" in detail


def test_a_token_expiring_later_is_green_with_its_days_left(
    stack: LocalStack, integration: Path, token_info: dict[str, Any]
) -> None:
    token_info["expires_at"] = _in_days(60.5)
    code, text = doctor(stack, integration)
    assert code == 0, text
    assert report(text)["particle expiry"] == ("ok", f"the token expires in 60 days ({_in_days(60.5)[:10]})")


def test_a_token_without_the_ledger_scopes_is_red(
    stack: LocalStack, integration: Path, token_info: dict[str, Any]
) -> None:
    token_info["scopes"] = ["devices:list", "ledger.instances:get"]
    code, text = doctor(stack, integration)
    detail = only_red(text, "particle scopes")
    assert code == 1
    assert "ledger.instances:set (write the token or the cleared state into the Ledger (assign))" in detail
    assert "devices:get (look up a product device (transfer); scope name unconfirmed" in detail
    # only what the functions use is asked for: no Ledger read or delete
    assert "devices:list" not in detail.split("fix:")[0]
    assert "ledger.instances:get" not in detail and "ledger.instances:delete" not in detail


def test_an_unscoped_user_token_is_a_warning(
    stack: LocalStack, integration: Path, token_info: dict[str, Any]
) -> None:
    token_info["scopes"] = []
    code, text = doctor(stack, integration)
    assert code == 0, text
    assert report(text)["particle scopes"][0] == "warn"


@pytest.fixture
def definitions(stack: LocalStack) -> Iterator[dict[str, dict[str, Any]]]:
    assert stack.simulator is not None
    saved = dict(stack.simulator.ledger_definitions)
    yield stack.simulator.ledger_definitions
    stack.simulator.ledger_definitions = saved


def test_a_missing_ledger_is_red(
    stack: LocalStack, integration: Path, definitions: dict[str, dict[str, Any]]
) -> None:
    del definitions[DEFAULT_LEDGER]
    code, text = doctor(stack, integration)
    detail = only_red(text, "particle ledger")
    assert code == 1
    assert f"Ledger {DEFAULT_LEDGER} does not exist under /v1" in detail
    assert "Cloud to Device, scope Device" in detail


@pytest.mark.parametrize(
    ("scope", "direction", "complaint"),
    [
        ("Device", "Upstream", "direction Upstream (Cloud to Device is Downstream)"),
        ("Product", "Downstream", "scope Product (needs Device)"),
    ],
)
def test_a_ledger_of_the_wrong_type_is_red(
    stack: LocalStack,
    integration: Path,
    definitions: dict[str, dict[str, Any]],
    scope: str,
    direction: str,
    complaint: str,
) -> None:
    definitions[DEFAULT_LEDGER] = ledger_definition(DEFAULT_LEDGER, scope=scope, direction=direction)
    code, text = doctor(stack, integration)
    detail = only_red(text, "particle ledger")
    assert code == 1
    assert complaint in detail


def test_a_bucket_that_does_not_notify_ingest_is_red(stack: LocalStack, integration: Path) -> None:
    s3 = stack.client("s3")
    saved = s3.get_bucket_notification_configuration(Bucket=stack.bucket)
    saved.pop("ResponseMetadata", None)
    s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={})
    try:
        code, text = doctor(stack, integration)
    finally:
        s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration=saved)
    detail = only_red(text, "bucket notification")
    assert code == 1
    assert f"do not reach {stack.function_names['ingest']}" in detail
    assert "redeploy" in detail


def test_an_alarm_topic_without_a_confirmed_subscription_is_red(stack: LocalStack, integration: Path) -> None:
    sns = stack.client("sns")
    topic = stack.outputs["AlarmTopicArn"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert subscriptions
    for subscription in subscriptions:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    try:
        code, text = doctor(stack, integration)
    finally:
        for subscription in subscriptions:
            sns.subscribe(
                TopicArn=topic, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"]
            )
    detail = only_red(text, "alarm subscription")
    assert code == 1
    assert "no subscription" in detail and f"--topic-arn {topic}" in detail


def test_an_integration_with_another_secret_is_red(stack: LocalStack, integration: Path) -> None:
    hook = json.loads(integration.read_text())
    hook["headers"]["X-Tokenflow-Secret"] = "another-secret-" + "x" * 20
    integration.write_text(json.dumps(hook))
    code, text = doctor(stack, integration)
    detail = only_red(text, "webhook secret")
    assert code == 1
    assert f"differs from {stack.parameters['WebhookSecretParameter']}" in detail
    assert "another-secret-" not in text
