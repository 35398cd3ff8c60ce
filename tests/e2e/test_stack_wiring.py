"""The local stack is wired as template.yaml wires the functions (no API, no devices here).

Resources come from the template's own definitions; an object under incoming/ runs ingest, ingest's
asynchronous Lambda invoke reaches the sweep, the queue feeds assign with retries and a dead-letter
queue; a taken port is a clear error. The steps build on each other (the module's STORY, see
tests/e2e/conftest.py: each test also passes alone, replaying the steps it needs).
"""

from __future__ import annotations

import json
import socket
import time

import boto3
import pytest

from tests.e2e.conftest import Story, sim_api
from tokenflow.assignment import AssignRequest
from tokenflow_local import resources
from tokenflow_local.sample_export import make_export
from tokenflow_local.stack import LocalStack, PortInUse, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a local stack, started once per module


STORY = Story(
    needs_api=False,
    check_errors=False,
    sweep_interval=60.0,  # long: the tests below show that ingest itself starts the sweep
    simulate_devices=False,
)


def test_resources_follow_the_template(stack):
    sqs = stack.client("sqs")
    template_queue = resources.resource("AssignQueue")
    attrs = sqs.get_queue_attributes(QueueUrl=stack.queues["AssignQueue"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attrs["VisibilityTimeout"] == str(template_queue["VisibilityTimeout"])
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == resources.parameter_defaults()["MaxDeliveryAttempts"]
    dlq = sqs.get_queue_attributes(
        QueueUrl=stack.queues["AssignDeadLetterQueue"], AttributeNames=["QueueArn"]
    )
    assert redrive["deadLetterTargetArn"] == dlq["Attributes"]["QueueArn"]

    table = stack.client("dynamodb").describe_table(TableName=stack.table)["Table"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {
        i["IndexName"] for i in resources.resource("Table")["GlobalSecondaryIndexes"]
    }
    ssm = stack.client("ssm")
    for name, value in (
        ("/tokenflow/particle-token", stack.particle_token),
        ("/tokenflow/webhook-secret", stack.webhook_secret),
    ):
        parameter = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        assert parameter["Type"] == "SecureString" and parameter["Value"] == value
    assert stack.bucket == "tokenflow-local-exports-123456789012"  # the template's computed name


@STORY.step
def test_an_export_under_incoming_runs_ingest_which_starts_the_sweep_and_assign_writes_ledgers(stack):
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key="incoming/export.csv.zip", Body=make_export(30, real_qr=False))
    s3.put_object(Bucket=stack.bucket, Key="incoming/notes.txt", Body=b"not an export")  # filtered out

    # The schedule is a minute away: only ingest's own asynchronous invoke can start this sweep.
    def written():
        instances = [i for i in sim_api(stack, "/ledgers")["instances"] if i["data"].get("blynk_token")]
        return instances if len(instances) >= 24 else None

    instances = wait_for(written, timeout=20, what="24 Ledger writes")
    assert len({i["data"]["blynk_token"] for i in instances}) == 24
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket)["Contents"]}
    assert "incoming/notes.txt" in keys  # not an export: the template's suffix filters skip it
    assert any(k.startswith("processed/") and k.endswith(".report.json") for k in keys)
    assert stack.functions["sweep"].invocations >= 1


@STORY.step
def test_the_lambda_invoke_api_runs_the_sweep(stack):
    client = boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{stack.ports['lambda']}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    name = stack.function_names["sweep"]
    answer = client.invoke(FunctionName=name, Payload=b'{"source": "test"}')
    result = json.loads(answer["Payload"].read())
    assert result["pages"] == 3 and result["devices"] == 25  # 25 devices, 10 a page
    assert client.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")


@STORY.step
def test_a_message_that_keeps_failing_goes_to_the_dead_letter_queue(stack):
    sqs = stack.client("sqs")
    device = sim_api(stack, "/devices", "POST", json={"count": 1})["ids"][0]
    # Every Particle call answers 503: a failure worth retrying, until the receives run out. (A 401
    # would pause the stack instead: the breaker hands messages back rather than burn their receives.)
    sim_api(stack, "/faults", "POST", json={"error_rate": 1.0, "error_statuses": [503]})
    try:
        sqs.send_message(
            QueueUrl=stack.queues["AssignQueue"],
            MessageBody=json.dumps(AssignRequest(device, None, "new", {}).to_message()),
        )
        dlq = stack.queues["AssignDeadLetterQueue"]
        message = wait_for(
            lambda: sqs.receive_message(QueueUrl=dlq, AttributeNames=["All"]).get("Messages"),
            timeout=90,
            what="the dead-letter queue",
        )[0]
        assert json.loads(message["Body"])["device_id"] == device
        assert int(message["Attributes"]["ApproximateReceiveCount"]) >= 5
    finally:
        sim_api(stack, "/faults", "POST", json={})
        stack.errors.clear()  # the sweeps' 503s were expected


def test_a_taken_port_is_a_clear_error_and_nothing_is_left_running():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        local = LocalStack(aws_port=0, api_port=port, particle_port=0, simulate_devices=False)
        started = time.monotonic()
        with pytest.raises(PortInUse, match=rf"127\.0\.0\.1:{port}.*--api-port"):
            local.start()
        assert time.monotonic() - started < 5
        assert local.moto is None  # it failed before starting anything
