"""The local deployment, recorded in the embedded AWS as `sam deploy` leaves a real one.

``tokenflow doctor`` checks a deployment through what CloudFormation and the services report: the
stack's parameters and outputs, its ``IngestFunction`` resource, the alarm topic and its
subscriptions, the exports bucket's notification. The local stack runs the functions itself, so none
of that exists in moto until this module writes it:

- a CloudFormation stack under the local stack's name whose parameters are the local deployment's
  (the template's, resolved: product, Ledger, SSM parameter names, the simulator's URL) and whose
  outputs are the template's output keys with the local addresses;
- the alarm topic (a stack resource, as in the template) with one e-mail subscription, which moto
  reports as confirmed: an operator who followed the confirmation link;
- the ``IngestFunction`` stack resource, and the bucket's notification to it with the template's
  key filters. The function itself is deleted from moto's Lambda once the stack holds its name: moto
  would otherwise try to run it in Docker on every upload (the local stack hands moto's notifications
  to the local function, ``triggers.S3PushNotifications``).
"""

from __future__ import annotations

import json
from typing import Any

from tokenflow_local import resources
from tokenflow_local.resources import ACCOUNT_ID, REGION

ALARM_EMAIL = "alarms@tokenflow.invalid"  # reserved domain (RFC 2606): nothing is ever sent
INGEST = "IngestFunction"


def register(stack: Any) -> dict[str, str]:
    """Record ``stack`` (a running ``LocalStack``) in its moto; the stack's outputs."""
    name = stack.stack_name
    function_name = stack.function_names[resources.function_dir(INGEST)]
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {
            key: {"Type": "String", "Default": "" if value is None else str(value)}
            for key, value in stack.parameters.items()
        },
        "Resources": {
            "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"{name}-AlarmTopic"}},
            "IngestFunctionRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "lambda.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                },
            },
            INGEST: {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "FunctionName": function_name,
                    "Runtime": "python3.13",
                    "Handler": "app.handler",
                    "Role": {"Fn::GetAtt": ["IngestFunctionRole", "Arn"]},
                    "Code": {"ZipFile": "def handler(event, context):\n    return None\n"},
                },
            },
        },
        "Outputs": {key: {"Value": value} for key, value in _outputs(stack).items()},
    }
    template["Outputs"]["AlarmTopicArn"] = {"Value": {"Ref": "AlarmTopic"}}
    cloudformation = stack.client("cloudformation")
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))
    described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    stack.client("lambda").delete_function(FunctionName=function_name)
    stack.client("sns").subscribe(TopicArn=outputs["AlarmTopicArn"], Protocol="email", Endpoint=ALARM_EMAIL)
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
    stack.client("s3").put_bucket_notification_configuration(
        Bucket=stack.bucket,
        NotificationConfiguration={
            "LambdaFunctionConfigurations": [
                _notification(function_arn, prefix, suffix)
                for prefix, suffix in resources.s3_key_filters(INGEST)
            ]
        },
    )
    return outputs


def _outputs(stack: Any) -> dict[str, str]:
    """The template's outputs with this stack's values (AlarmTopicArn comes from the topic)."""
    values = {
        "ExportsBucketName": stack.bucket,
        "TableName": stack.table,
        "IngestFailureQueueUrl": stack.queues.get("IngestFailureQueue", ""),
        "AssignQueueUrl": stack.queues.get("AssignQueue", ""),
        "AssignDeadLetterQueueUrl": stack.queues.get("AssignDeadLetterQueue", ""),
    }
    if stack.api_url:
        values["ApiUrl"] = stack.api_url
        values["WebhookUrl"] = f"{stack.api_url}/webhooks/particle"
    declared = resources.template().get("Outputs", {})
    return {key: value for key, value in values.items() if key in declared and value}


def _notification(function_arn: str, prefix: str, suffix: str) -> dict[str, Any]:
    """One Lambda notification as the template's S3 event declares it."""
    rules = [
        {"Name": name, "Value": value} for name, value in (("prefix", prefix), ("suffix", suffix)) if value
    ]
    config: dict[str, Any] = {"LambdaFunctionArn": function_arn, "Events": ["s3:ObjectCreated:*"]}
    if rules:
        config["Filter"] = {"Key": {"FilterRules": rules}}
    return config
