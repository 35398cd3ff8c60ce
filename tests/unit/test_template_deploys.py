"""template.yaml after the SAM transform (tools.sam_translate): what a first deployment on a fresh
account needs, read from the resources CloudFormation would create."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tools.sam_translate import translate


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return translate()["Resources"]


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: spec for name, spec in resources.items() if spec["Type"] == kind}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def test_no_function_reserves_concurrency(resources):
    for name, spec in _of_type(resources, "AWS::Lambda::Function").items():
        assert "ReservedConcurrentExecutions" not in spec["Properties"], name


def test_the_assign_queue_bounds_assign_concurrency(resources):
    (mapping,) = _of_type(resources, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "AssignMaxConcurrency"}


def test_the_schedule_has_a_generated_name(resources):
    for name, spec in _of_type(resources, "AWS::Scheduler::Schedule").items():
        assert "Name" not in spec["Properties"], name


def test_alarms_publish_to_a_topic_whose_key_admits_cloudwatch(resources):
    topic = resources["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    statements = resources["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(_actions(cloudwatch[0]))
    for name, alarm in _of_type(resources, "AWS::CloudWatch::Alarm").items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name


def test_the_table_and_bucket_survive_deletion_but_not_a_failed_creation(resources):
    for name in ("Table", "ExportsBucket", "TableKey"):
        assert resources[name]["DeletionPolicy"] == "RetainExceptOnCreate", name
    assert resources["Table"]["Properties"]["SSESpecification"]["KMSMasterKeyId"] == {
        "Fn::GetAtt": ["TableKey", "Arn"]
    }


def test_the_bucket_name_comes_from_the_validated_prefix_parameter(resources):
    name = resources["ExportsBucket"]["Properties"]["BucketName"]
    assert name == {"Fn::Sub": "${ExportsBucketPrefix}-exports-${AWS::AccountId}"}
    # Every policy, variable and permission naming the bucket computes the same name.
    text = json.dumps(resources)
    assert text.count("-exports-${AWS::AccountId}") == text.count("${ExportsBucketPrefix}-exports-")


def test_processed_and_rejected_exports_expire_after_the_retention_parameter(resources):
    rules = {
        r["Prefix"]: r for r in resources["ExportsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    for prefix in ("processed/", "rejected/"):
        assert rules[prefix]["ExpirationInDays"] == {"Ref": "ExportRetentionDays"}
        assert rules[prefix]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1


def test_exports_notify_ingest_for_either_case_of_each_suffix(resources):
    configs = resources["ExportsBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    suffixes = set()
    for config in configs:
        assert config["Function"] == {"Fn::GetAtt": ["IngestFunction", "Arn"]}
        rules = {r["Name"]: r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
        assert rules["prefix"] == "incoming/"
        suffixes.add(rules["suffix"])
    assert suffixes == {".zip", ".ZIP", ".csv", ".CSV"}


def test_every_invoke_permission_names_its_source(resources):
    for name, spec in _of_type(resources, "AWS::Lambda::Permission").items():
        assert "SourceArn" in spec["Properties"], name
    s3 = [p["Properties"] for p in _of_type(resources, "AWS::Lambda::Permission").values()]
    s3 = [p for p in s3 if p["Principal"] == "s3.amazonaws.com"]
    assert len(s3) == 1 and s3[0]["SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_function_roles_grant_no_wildcard_beyond_an_object_prefix(resources):
    object_prefixes = ("/incoming/*", "/processed/*", "/rejected/*")
    for name, role in _of_type(resources, "AWS::IAM::Role").items():
        for statement in _statements(role):
            for action in _actions(statement):
                assert "*" not in action, (name, action)
            listed = statement["Resource"]
            for resource in listed if isinstance(listed, list) else [listed]:
                text = json.dumps(resource)
                assert "*" not in text or text.endswith(tuple(f'{p}"}}' for p in object_prefixes)), (
                    name,
                    text,
                )


def test_the_assign_role_polls_only_its_own_queue(resources):
    role = resources["AssignFunctionRole"]["Properties"]
    assert not any("SQSQueueExecutionRole" in json.dumps(arn) for arn in role["ManagedPolicyArns"])
    sqs = [s for s in _statements(resources["AssignFunctionRole"]) if _actions(s)[0].startswith("sqs:")]
    # The event source mapping's three, and the function's own hand-back of a message for a while.
    assert len(sqs) == 2
    assert {a for s in sqs for a in _actions(s)} == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    }
    assert all(s["Resource"] == {"Fn::GetAtt": ["AssignQueue", "Arn"]} for s in sqs)


def test_ingest_may_list_the_bucket_so_a_missing_key_answers_no_such_key(resources):
    listing = [s for s in _statements(resources["IngestFunctionRole"]) if "s3:ListBucket" in _actions(s)]
    assert listing and listing[0]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${ExportsBucketPrefix}-exports-${AWS::AccountId}"
    }


def test_a_failed_asynchronous_sweep_lands_in_a_queue_that_is_alarmed(resources):
    config = resources["SweepFunctionEventInvokeConfig"]["Properties"]
    destination = config["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == {"Fn::GetAtt": ["SweepFailureQueue", "Arn"]}
    alarmed = [
        a["Properties"]["Dimensions"][0]["Value"]
        for a in _of_type(resources, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "AWS/SQS"
    ]
    assert {"Fn::GetAtt": ["SweepFailureQueue", "QueueName"]} in alarmed
