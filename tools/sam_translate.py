"""template.yaml as CloudFormation sees it after the SAM transform, translated offline.

``sam deploy`` hands the template to the ``AWS::Serverless-2016-10-31`` transform, which is the
``samtranslator`` library installed with aws-sam-cli: policy templates (``SQSSendMessagePolicy``...)
become concrete policy documents, events become permissions, notifications and event source
mappings. checkov and the least-privilege test read this translation, not the SAM source.

    python -m tools.sam_translate [template.yaml] [-o build/template.translated.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
DEFAULT_OUTPUT = ROOT / "build" / "template.translated.json"

# Parameters without a default need a value to translate; any valid one does.
REQUIRED_PARAMETERS = {"ParticleProduct": "tokenflow-product"}


# AWS managed policies a function's ``Policies`` may name, with their ARNs (IAM ListPolicies, Scope=AWS).
MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "AWSLambdaSQSQueueExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
    "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    "AWSLambdaRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaRole",
}


class StaticManagedPolicies:
    """The managed policy loader of ``transform`` without credentials: the real one lists AWS managed
    policies through IAM. SAM asks it only for names written under a function's ``Policies``; a name
    missing here fails the translation (SAM reports it), so a new one is added on purpose."""

    def load(self) -> dict[str, str]:
        return dict(MANAGED_POLICIES)


def translate(
    template_path: Path | str = TEMPLATE, parameter_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The CloudFormation template ``sam deploy`` would create from ``template_path``.

    ``parameter_values`` override the template's parameters (their defaults otherwise; a value is
    supplied for those without one).
    """
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the translator reads the region here
    sam = yaml_parse(Path(template_path).read_text())
    values = {
        **{name: spec["Default"] for name, spec in sam.get("Parameters", {}).items() if "Default" in spec},
        **REQUIRED_PARAMETERS,
        **(parameter_values or {}),
    }
    # Metadata passes through so that checkov sees the inline suppressions written on SAM resources.
    return transform(_packaged(sam), values, StaticManagedPolicies(), passthrough_metadata=True)


def _packaged(sam: dict[str, Any]) -> dict[str, Any]:
    """The template as ``sam package`` uploads it: local code paths become S3 URIs (the transform
    accepts nothing else). The artifact bucket is a placeholder; nothing is uploaded."""
    packaged = copy.deepcopy(sam)
    for spec in packaged.get("Resources", {}).values():
        props = spec.get("Properties", {})
        for field in ("CodeUri", "ContentUri"):
            if isinstance(props.get(field), str) and not props[field].startswith("s3://"):
                props[field] = f"s3://sam-artifacts/{props[field].strip('/')}"
    return packaged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", nargs="?", default=str(TEMPLATE))
    parser.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(translate(args.template), indent=2, sort_keys=True) + "\n")
    print(f"translated {args.template} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
