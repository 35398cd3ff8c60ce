"""The least-privilege check itself: calls are recorded as the IAM actions AWS checks, evaluated against
the SAM translation of template.yaml, and a template missing one statement fails the check.

The check over all recorded calls runs at the end of every test session (tests/support/iam_recorder.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import BUCKET, TABLE
from tests.support import sam_template
from tests.support.iam_actions import Access, accesses
from tests.support.iam_recorder import acting_as, attribution, capture
from tests.support.least_privilege import Call, evaluate
from tokenflow_local import lambda_runtime
from tokenflow_local.sample_export import make_export, make_tokens


def recorded(seen: list[dict[str, Any]]) -> set[tuple[str, str, str | None, str]]:
    return {
        (c["access"]["action"], c["access"]["kind"], c["access"]["logical"], c["access"]["detail"])
        for c in seen
    }


def test_calls_outside_the_functions_are_not_theirs_and_calls_from_any_new_session_are(
    s3, monkeypatch
) -> None:
    monkeypatch.setenv("EXPORTS_BUCKET", BUCKET)
    s3.put_object(Bucket=BUCKET, Key="incoming/a.csv", Body=b"x")
    with capture() as seen:
        s3.get_object(Bucket=BUCKET, Key="incoming/a.csv")  # the test's own call: no function's
        with acting_as("ingest"):
            boto3.session.Session().client("s3").get_object(Bucket=BUCKET, Key="incoming/a.csv")
    assert [(c["function"], c["access"]["action"]) for c in seen] == [("ingest", "s3:GetObject")]


def test_a_transaction_is_checked_per_item_and_a_batch_read_as_batchgetitem(dynamodb) -> None:
    key = {"pk": {"S": "T#1"}, "sk": {"S": "T"}}
    other = {"pk": {"S": "T#2"}, "sk": {"S": "T"}}
    dynamodb.put_item(TableName=TABLE, Item={**key, "n": {"N": "0"}})
    dynamodb.put_item(TableName=TABLE, Item=other)
    with capture() as seen, acting_as("assign"):
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "D#1"}, "sk": {"S": "D"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": key,
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": other,
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "X#1"}, "sk": {"S": "X"}}}},
            ]
        )
        dynamodb.batch_get_item(RequestItems={TABLE: {"Keys": [key]}})
        dynamodb.query(
            TableName=TABLE,
            IndexName="available",
            KeyConditionExpression="apk = :a",
            ExpressionAttributeValues={":a": {"S": "available"}},
        )
    assert recorded(seen) == {
        ("dynamodb:PutItem", "table", "Table", ""),
        ("dynamodb:UpdateItem", "table", "Table", ""),
        ("dynamodb:ConditionCheckItem", "table", "Table", ""),
        ("dynamodb:DeleteItem", "table", "Table", ""),
        ("dynamodb:BatchGetItem", "table", "Table", ""),
        ("dynamodb:Query", "index", "Table", "available"),
    }
    assert {c["operation"] for c in seen} == {
        "dynamodb.TransactWriteItems",
        "dynamodb.BatchGetItem",
        "dynamodb.Query",
    }


def test_a_get_object_answered_404_also_needs_list_bucket_on_the_bucket(s3, monkeypatch) -> None:
    monkeypatch.setenv("EXPORTS_BUCKET", BUCKET)  # what tells the bucket is the template's ExportsBucket
    with capture() as seen, acting_as("ingest"), pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="incoming/gone.zip")
    assert raised.value.response["Error"]["Code"] == "NoSuchKey"
    assert recorded(seen) == {
        ("s3:GetObject", "object", "ExportsBucket", "incoming/gone.zip"),
        ("s3:ListBucket", "bucket", "ExportsBucket", ""),
    }


def test_a_batch_send_is_sendmessage_and_a_decrypted_parameter_also_needs_the_key(
    aws_mock, monkeypatch
) -> None:
    sqs, ssm = boto3.client("sqs"), boto3.client("ssm")
    url = sqs.create_queue(QueueName="tokenflow-test-assign")["QueueUrl"]
    monkeypatch.setenv("ASSIGN_QUEUE_URL", url)
    ssm.put_parameter(Name="/tokenflow/particle-token", Value="x", Type="SecureString")
    with capture() as seen, acting_as("sweep"):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "{}"}])
        ssm.get_parameter(Name="/tokenflow/particle-token", WithDecryption=True)
    assert recorded(seen) == {
        ("sqs:SendMessage", "queue", "AssignQueue", ""),
        ("ssm:GetParameter", "parameter", "ParticleTokenParameter", ""),
        ("kms:Decrypt", "kms-key", None, ""),
    }


@pytest.mark.parametrize(
    ("function_name", "expected"),
    [
        ("tokenflow-SweepFunction", ("SweepFunction", "")),
        ("arn:aws:lambda:us-east-1:123456789012:function:tokenflow-SweepFunction", ("SweepFunction", "")),
        (
            "arn:aws:lambda:us-east-1:123456789012:function:tokenflow-SweepFunction:live",
            ("SweepFunction", "live"),
        ),
        ("tokenflow-SweepFunction:7", ("SweepFunction", "7")),
    ],
)
def test_every_form_of_invoke_is_lambda_invokefunction_on_the_named_function(function_name, expected) -> None:
    [access] = accesses("lambda", "Invoke", {"FunctionName": function_name}, attribution("ingest"))
    assert (access.action, access.logical, access.detail) == ("lambda:InvokeFunction", *expected)


# ---- the check against the template ---------------------------------------------------------------


def ingest_one_export(monkeypatch, s3) -> list[Call]:
    """The real ingest handler importing one export on moto; the calls it made."""
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("EXPORTS_BUCKET", BUCKET)
    monkeypatch.setenv("SWEEP_FUNCTION_NAME", "")
    key = "incoming/least-privilege.zip"
    s3.put_object(Bucket=BUCKET, Key=key, Body=make_export(make_tokens(3, seed=7)))
    with capture() as seen:
        answer = lambda_runtime.invoke("ingest", lambda_runtime.s3_put_event(BUCKET, key))
    assert answer["imports"][0]["status"] == "processed"
    return [Call.from_json(c) for c in seen]


def without_statement(path: Path, function: str, action: str) -> tuple[Path, dict[str, Any]]:
    """A copy of template.yaml whose ``function`` lacks the one inline statement that grants ``action``."""
    template = sam_template.load()
    for policy in template["Resources"][function]["Properties"]["Policies"]:
        statements = policy.get("Statement", []) if isinstance(policy, dict) else []
        for statement in statements:
            actions = statement.get("Action", [])
            if action in (actions if isinstance(actions, list) else [actions]):
                statements.remove(statement)
                path.write_text(json.dumps(template))  # JSON is YAML: the translator reads it alike
                return path, statement
    raise AssertionError(f"no statement of {function} grants {action}")


def test_the_template_allows_every_call_of_an_import_and_fails_without_the_statement_that_grants_it(
    monkeypatch, dynamodb, s3, tmp_path
) -> None:
    calls = ingest_one_export(monkeypatch, s3)
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= {c.access.action for c in calls}

    allowed = evaluate(calls)
    assert not allowed.failed, allowed.failure_text()
    assert {action for action, _, _ in allowed.allowed["ingest"]} >= {"s3:GetObject", "s3:DeleteObject"}

    broken, removed = without_statement(tmp_path / "template.yaml", "IngestFunction", "s3:GetObject")
    denied = evaluate(calls, template_path=broken)
    assert denied.failed
    lost = {(f.call.function, f.call.access.action) for f in denied.denied}
    assert ("ingest", "s3:GetObject") in lost
    assert all(f.call.function == "ingest" for f in denied.denied)
    assert "DENIED  ingest: s3:GetObject on arn:aws:s3:::" in denied.failure_text()
    # Everything else the import did is still allowed by what is left.
    assert {a for _, a in lost} <= {a for a in removed["Action"]}


def test_a_call_to_a_resource_outside_the_template_is_reported_not_allowed(s3) -> None:
    calls = [
        Call(
            "ingest", "s3.GetObject", Access("s3:GetObject", "object", None, "someone-elses-bucket", "k"), "t"
        )
    ]
    report = evaluate(calls)
    assert report.failed
    assert "matches no template resource" in report.failure_text()
