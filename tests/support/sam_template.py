"""template.yaml as CloudFormation sees it after the SAM transform, with its intrinsics resolved.

``translate`` runs the library ``sam deploy`` itself uses (``samtranslator``), offline: policy
templates (``SQSSendMessagePolicy``, ``LambdaInvokePolicy``) become the concrete statements each
function's role gets. ``Stack`` then resolves ``!Ref``/``!GetAtt``/``!Sub`` (and the other intrinsics
SAM emits) against one made-up deployment, so a policy's resources become ARNs a recorded call can
be compared with.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STACK_NAME = "tokenflow"  # lower case: it may end up in a bucket name
# Values for parameters without a default (a deployment must give them).
REQUIRED_PARAMETERS = {"ParticleProduct": "tokenflow-product"}


def load(template_path: Path = TEMPLATE) -> dict[str, Any]:
    """The SAM template as data, short-form intrinsics in their long form (SAM's own YAML reader)."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(Path(template_path).read_text())


def translate(
    template_path: Path = TEMPLATE, parameter_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The CloudFormation template ``sam deploy`` would submit (tools/sam_translate.py, which checkov
    reads as well: both checks see one translation)."""
    from tools.sam_translate import translate as sam_translate

    return sam_translate(template_path, {**REQUIRED_PARAMETERS, **(parameter_values or {})})


# ---- one made-up deployment ----------------------------------------------------------------------

NO_VALUE = object()


@dataclass
class Stack:
    """The translated template deployed as ``STACK_NAME``: physical names, ARNs, resolved values."""

    template: dict[str, Any]
    stack_name: str = STACK_NAME
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = self.template.get("Parameters", {})
        values = {name: spec.get("Default") for name, spec in declared.items()}
        values.update({k: v for k, v in REQUIRED_PARAMETERS.items() if k in declared})
        values.update(self.parameters)
        self.parameters = values
        self.conditions: dict[str, bool] = {}

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def logical_ids(self, resource_type: str) -> list[str]:
        return [name for name, spec in self.resources.items() if spec.get("Type") == resource_type]

    # ---- names and attributes ----------------------------------------------------------------------

    def physical_name(self, logical: str) -> str:
        spec = self.resources[logical]
        props = spec.get("Properties", {})
        kind = spec["Type"]
        given = {
            "AWS::DynamoDB::Table": "TableName",
            "AWS::S3::Bucket": "BucketName",
            "AWS::SQS::Queue": "QueueName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::SNS::Topic": "TopicName",
        }.get(kind)
        if given and given in props:
            return str(self.resolve(props[given]))
        name = f"{self.stack_name}-{logical}"
        # CloudFormation makes bucket names lower case (a bucket name cannot hold capitals).
        return name.lower() if kind == "AWS::S3::Bucket" else name

    def arn(self, logical: str) -> str:
        kind = self.resources[logical]["Type"]
        name = self.physical_name(logical)
        return {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
            "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*",
        }.get(kind, f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:{logical}/{name}")

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self.stack_name}/1",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self.resources[name]["Type"]
        if kind == "AWS::SQS::Queue":  # Ref of a queue is its URL
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{self.physical_name(name)}"
        if kind in {"AWS::SNS::Topic", "AWS::IAM::ManagedPolicy"}:
            return self.arn(name)
        return self.physical_name(name)

    def get_att(self, logical: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical)
        if attribute in {"QueueName", "TopicName"}:
            return self.physical_name(logical)
        if attribute == "QueueUrl":
            return str(self.ref(logical))
        raise KeyError(f"{logical}.{attribute}")

    # ---- intrinsics ------------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.template.get("Conditions", {})[name]))
        return self.conditions[name]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((kind, arg),) = value.items()
            if kind == "Ref":
                return self.ref(arg)
            if kind == "Fn::GetAtt":
                logical, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical, attr)
            if kind == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                values = {k: self.resolve(v) for k, v in extra.items()}

                def sub(match: re.Match[str]) -> str:
                    name = match.group(1)
                    if name in values:
                        return str(values[name])
                    if "." in name and not name.startswith("AWS::"):
                        return self.get_att(*name.split(".", 1))
                    return str(self.ref(name))

                return re.sub(r"\$\{([^}!]+)\}", sub, text)
            if kind == "Fn::Join":
                return str(self.resolve(arg[0])).join(str(v) for v in self.resolve(arg[1]))
            if kind == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if kind == "Fn::Split":
                return str(self.resolve(arg[1])).split(self.resolve(arg[0]))
            if kind == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if kind == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if kind == "Fn::Not":
                return not self.resolve(arg[0])
            if kind == "Fn::And":
                return all(self.resolve(v) for v in arg)
            if kind == "Fn::Or":
                return any(self.resolve(v) for v in arg)
            if kind == "Condition":
                return self.condition(arg)
        return {k: r for k, v in value.items() if (r := self.resolve(v)) is not NO_VALUE}


# ---- what each function's role allows -------------------------------------------------------------


@dataclass
class FunctionRole:
    logical: str  # the function's logical id
    directory: str  # functions/<directory>
    role: str  # the role's logical id
    environment: dict[str, Any]  # template variables, Globals merged, unresolved
    policies: list[tuple[str, dict[str, Any]]]  # (policy name, resolved document)
    managed: list[str]  # managed policy ARNs (AWS's own documents: named, not evaluated)


def _logical_target(value: Any) -> str | None:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        arg = value["Fn::GetAtt"]
        return str(arg.split(".")[0] if isinstance(arg, str) else arg[0])
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    return None


def function_roles(
    sam_template: dict[str, Any], translated: dict[str, Any], stack: Stack
) -> dict[str, FunctionRole]:
    """Every function of the template by its functions/ directory, with its role's policies resolved."""
    globals_env = (
        sam_template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    roles: dict[str, FunctionRole] = {}
    resources = translated["Resources"]
    for logical, spec in sam_template["Resources"].items():
        if spec.get("Type") != "AWS::Serverless::Function":
            continue
        props = spec.get("Properties", {})
        directory = str(props.get("CodeUri", logical)).rstrip("/").rsplit("/", 1)[-1]
        env = {**globals_env, **props.get("Environment", {}).get("Variables", {})}
        role = _logical_target(resources[logical]["Properties"]["Role"])
        if role is None or role not in resources:
            raise ValueError(
                f"{logical}: role {resources[logical]['Properties']['Role']!r} is not in the template"
            )
        role_props = resources[role]["Properties"]
        policies = [
            (p["PolicyName"], stack.resolve(p["PolicyDocument"])) for p in role_props.get("Policies", [])
        ]
        managed: list[str] = []
        for arn in stack.resolve(copy.deepcopy(role_props.get("ManagedPolicyArns", []))):
            owned = [
                name
                for name, r in resources.items()
                if r["Type"] == "AWS::IAM::ManagedPolicy" and stack.arn(name) == arn
            ]
            if owned:
                policies.append(
                    (owned[0], stack.resolve(resources[owned[0]]["Properties"]["PolicyDocument"]))
                )
            else:
                managed.append(arn)
        # Policies attached from outside the role (AWS::IAM::Policy / ManagedPolicy with Roles: [!Ref Role]).
        for name, r in resources.items():
            if r["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
                attached = [_logical_target(x) for x in r["Properties"].get("Roles", [])]
                if role in attached:
                    policies.append((name, stack.resolve(r["Properties"]["PolicyDocument"])))
        roles[directory] = FunctionRole(logical, directory, role, env, policies, managed)
    return roles
