"""What IAM checks for one AWS API call: the action(s) and the resource of each.

An API call is not an IAM action: a transaction is authorised item by item, a batch send is the
single-message action, a GetObject that finds nothing needs a second permission to say so. These
rules come from AWS's documentation (the Service Authorization Reference,
https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html,
and each service's own IAM pages, cited at each rule). A call this module does not know is an error
at once, so a new call in the functions cannot slip past the least-privilege check unmapped.

Resources are named by their template logical id (``Table``, ``AssignQueue``, ``ExportsBucket``,
``SweepFunction``, the parameter ``ParticleTokenParameter``) plus what follows inside them (an index,
an object key), so one template translation can give every test's call a concrete ARN whatever
physical names that test chose. ``Attribution`` finds the logical id for a physical name from the
function's environment as the template defines it (``TABLE_NAME: !Ref Table``): the same link Lambda
makes between the template and the running code.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Access:
    """One permission IAM checks: ``action`` on a resource of ``kind`` (``table``, ``index``,
    ``bucket``, ``object``, ``queue``, ``function``, ``parameter``, ``kms-key``) named ``logical``
    in the template (or the physical ``name`` when no template resource matched), with ``detail``:
    the index name, the object key, the function qualifier."""

    action: str
    kind: str
    logical: str | None
    name: str
    detail: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class UnmappedCall(Exception):
    """An API call whose IAM actions this module does not know yet."""


# ---- attribution of physical names to template resources ----------------------------------------


def _intrinsic_target(value: Any) -> str | None:
    """The logical id or parameter a template value names: ``!Ref X`` -> X, ``!GetAtt X.Y`` -> X."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "Ref":
            return str(arg)
        if kind == "Fn::GetAtt":
            return str(arg.split(".")[0] if isinstance(arg, str) else arg[0])
    return None


def _last_segment(value: str) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


class Attribution:
    """Which template resource a physical name is, for calls made as one function.

    ``environment`` is the function's template ``Environment.Variables`` (Globals merged, values
    unresolved); ``defaults`` the template parameters' defaults; ``by_type`` the template's logical
    ids per resource type. Matching, in order: an environment variable that names the resource and
    holds this physical name now (``os.environ``, or the parameter's default when unset, which is
    what the settings fall back to); the only resource of its type; CloudFormation's
    ``<stack>-<LogicalId>`` naming. ``names``: the resources' name properties, unresolved.
    """

    def __init__(
        self,
        environment: dict[str, Any],
        defaults: dict[str, Any],
        by_type: dict[str, list[str]],
        names: dict[str, Any] | None = None,
    ) -> None:
        self.environment = environment
        self.defaults = defaults
        self.by_type = by_type
        # The name properties (BucketName, QueueName ...) as the template writes them: an
        # environment variable holding the same expression (EXPORTS_BUCKET: !Sub "...") names that
        # resource as surely as a !Ref would.
        self.names = names or {}

    def _target(self, value: Any) -> str | None:
        target = _intrinsic_target(value)
        if target is not None:
            return target
        return next((logical for logical, name in self.names.items() if name == value), None)

    def logical(self, resource_type: str, physical: str, candidates: list[str] | None = None) -> str | None:
        candidates = candidates if candidates is not None else self.by_type.get(resource_type, [])
        for var, value in self.environment.items():
            target = self._target(value)
            if target is None or target not in candidates:
                continue
            current = os.environ.get(var, self.defaults.get(target) or "")
            if current and (current == physical or _last_segment(current) == physical):
                return target
        if len(candidates) == 1 and resource_type != "parameter":
            return candidates[0]
        for logical in candidates:
            if physical.endswith(f"-{logical}") or physical == self.defaults.get(logical):
                return logical
        return None


# ---- the rules ---------------------------------------------------------------------------------


def _table(att: Attribution, action: str, table: str, index: str = "") -> Access:
    logical = att.logical("AWS::DynamoDB::Table", table)
    return Access(action, "index" if index else "table", logical, table, index)


def _dynamodb(att: Attribution, operation: str, params: dict[str, Any]) -> list[Access]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazondynamodb.html:
    # each data-plane API has an action of its name on the table, or on the index
    # (table/T/index/I) when Query/Scan name one.
    if operation in {"GetItem", "PutItem", "UpdateItem", "DeleteItem"}:
        return [_table(att, f"dynamodb:{operation}", params["TableName"])]
    if operation in {"Query", "Scan"}:
        return [_table(att, f"dynamodb:{operation}", params["TableName"], params.get("IndexName", ""))]
    if operation in {"BatchGetItem", "BatchWriteItem"}:
        return [_table(att, f"dynamodb:{operation}", table) for table in params["RequestItems"]]
    if operation == "TransactWriteItems":
        # "Permissions for Put, Update, Delete, and Get actions are governed by the permissions used
        # for the underlying PutItem, UpdateItem, DeleteItem, and GetItem operations. For the
        # ConditionCheck action, you can use the dynamodb:ConditionCheckItem permission."
        # https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html
        names = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
        }
        out = []
        for item in params["TransactItems"]:
            ((kind, body),) = item.items()
            out.append(_table(att, f"dynamodb:{names[kind]}", body["TableName"]))
        return out
    if operation == "TransactGetItems":
        return [_table(att, "dynamodb:GetItem", item["Get"]["TableName"]) for item in params["TransactItems"]]
    raise UnmappedCall(f"dynamodb {operation}")


def _bucket_logical(att: Attribution, bucket: str) -> str | None:
    return att.logical("AWS::S3::Bucket", bucket)


def _s3(att: Attribution, operation: str, params: dict[str, Any]) -> list[Access]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html and each
    # API's "Permissions" section (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html).
    bucket = params["Bucket"]
    logical = _bucket_logical(att, bucket)
    versioned = "Version" if params.get("VersionId") else ""

    def obj(action: str, key: str) -> Access:
        return Access(action, "object", logical, bucket, key)

    if operation in {"GetObject", "HeadObject"}:
        # HeadObject is authorised as s3:GetObject (API_HeadObject.html); reading a given version
        # is s3:GetObjectVersion.
        return [obj(f"s3:GetObject{versioned}", params["Key"])]
    if operation == "PutObject":
        extra = [obj("s3:PutObjectTagging", params["Key"])] if params.get("Tagging") else []
        return [obj("s3:PutObject", params["Key"]), *extra]
    if operation == "DeleteObject":
        return [obj(f"s3:DeleteObject{versioned}", params["Key"])]
    if operation == "DeleteObjects":
        return [obj("s3:DeleteObject", o["Key"]) for o in params["Delete"]["Objects"]]
    if operation == "CopyObject":
        source = params["CopySource"]
        if isinstance(source, str):
            src_bucket, _, src_key = unquote(source.lstrip("/")).partition("/")
            src_key = src_key.split("?versionId=")[0]
        else:
            src_bucket, src_key = source["Bucket"], source["Key"]
        return [
            Access("s3:GetObject", "object", _bucket_logical(att, src_bucket), src_bucket, src_key),
            obj("s3:PutObject", params["Key"]),
        ]
    if operation in {"ListObjectsV2", "ListObjects"}:
        return [Access("s3:ListBucket", "bucket", logical, bucket)]
    if operation == "ListObjectVersions":
        return [Access("s3:ListBucketVersions", "bucket", logical, bucket)]
    raise UnmappedCall(f"s3 {operation}")


def not_found_needs_list_bucket(operation: str, params: dict[str, Any], att: Attribution) -> Access:
    """The extra permission a 404 answer needs: "If the object you request doesn't exist, the error
    that Amazon S3 returns depends on whether you also have the s3:ListBucket permission. If you have
    the s3:ListBucket permission on the bucket, Amazon S3 returns an HTTP status code 404 Not Found
    error. If you don't have the s3:ListBucket permission, Amazon S3 returns an HTTP status code 403
    ("access denied") error." (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html)"""
    bucket = params["Bucket"]
    return Access(
        "s3:ListBucket", "bucket", _bucket_logical(att, bucket), bucket, note=f"{operation} answered 404"
    )


def _queue(att: Attribution, action: str, url: str) -> Access:
    name = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
    return Access(action, "queue", att.logical("AWS::SQS::Queue", name), name)


def _sqs(att: Attribution, operation: str, params: dict[str, Any]) -> list[Access]:
    # "You cannot set permissions explicitly for SendMessageBatch, DeleteMessageBatch, or
    # ChangeMessageVisibilityBatch. Instead, setting permissions for SendMessage, DeleteMessage, or
    # ChangeMessageVisibility sets permissions for the corresponding batch versions."
    # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-batch-api.html
    batch = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}
    batch["ChangeMessageVisibilityBatch"] = "ChangeMessageVisibility"
    plain = {
        "SendMessage",
        "ReceiveMessage",
        "DeleteMessage",
        "ChangeMessageVisibility",
        "GetQueueAttributes",
    }
    if operation in batch:
        return [_queue(att, f"sqs:{batch[operation]}", params["QueueUrl"])]
    if operation in plain:
        return [_queue(att, f"sqs:{operation}", params["QueueUrl"])]
    if operation == "GetQueueUrl":
        return [
            Access(
                "sqs:GetQueueUrl",
                "queue",
                att.logical("AWS::SQS::Queue", params["QueueName"]),
                params["QueueName"],
            )
        ]
    raise UnmappedCall(f"sqs {operation}")


def _lambda(att: Attribution, operation: str, params: dict[str, Any]) -> list[Access]:
    # Invoke is authorised as lambda:InvokeFunction on the function (with its qualifier, if any);
    # the action is the same for InvocationType Event, RequestResponse and DryRun.
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html
    if operation != "Invoke":
        raise UnmappedCall(f"lambda {operation}")
    name = str(params["FunctionName"])
    qualifier = str(params.get("Qualifier", ""))
    if name.startswith("arn:"):
        parts = name.split(":")
        name, qualifier = parts[6], (parts[7] if len(parts) > 7 else qualifier)
    elif ":" in name:  # "name:alias" or "account:function:name"
        parts = name.split(":")
        if parts[-2] == "function":
            name = parts[-1]
        else:
            name, qualifier = parts[-2], parts[-1]
    logical = att.logical("AWS::Serverless::Function", name)
    return [Access("lambda:InvokeFunction", "function", logical, name, qualifier)]


def _ssm(att: Attribution, operation: str, params: dict[str, Any]) -> list[Access]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssystemsmanager.html:
    # ssm:GetParameter on arn:...:parameter/<name without its leading slash>.
    if operation != "GetParameter":
        raise UnmappedCall(f"ssm {operation}")
    name = params["Name"]
    candidates = [p for p, default in att.defaults.items() if isinstance(default, str)]
    logical = att.logical("parameter", name, candidates)
    out = [Access("ssm:GetParameter", "parameter", logical, name)]
    if params.get("WithDecryption"):
        # "Any principal that retrieves the decrypted value must have kms:Decrypt permission on that
        # key ... The AWS managed key for Parameter Store (aws/ssm) grants Decrypt permission to all
        # IAM principals in the AWS account."
        # https://docs.aws.amazon.com/systems-manager/latest/userguide/ps-restrict-decryption.html
        out.append(Access("kms:Decrypt", "kms-key", None, "alias/aws/ssm", note="key policy of aws/ssm"))
    return out


RULES = {"dynamodb": _dynamodb, "s3": _s3, "sqs": _sqs, "lambda": _lambda, "ssm": _ssm}


def accesses(service: str, operation: str, params: dict[str, Any], att: Attribution) -> list[Access]:
    """The permissions IAM checks for one call (``service`` as botocore names it: ``dynamodb``...)."""
    rule = RULES.get(service)
    if rule is None:
        raise UnmappedCall(f"{service} {operation}")
    return rule(att, operation, params)
