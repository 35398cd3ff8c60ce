"""The layer ships a closed, pinned set of packages and leaves boto3's closure to the runtime."""

from __future__ import annotations

import re
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement

REQUIREMENTS = Path(__file__).resolve().parents[2] / "layers" / "tokenflow" / "requirements.txt"
# What the python3.13 Lambda runtime provides (boto3 and its dependencies): never shipped.
RUNTIME = {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3"}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, Requirement]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            pins[_name(requirement.name)] = requirement
    return pins


def test_every_layer_requirement_is_pinned_to_the_version_the_tests_run_with():
    for name, requirement in _pins().items():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{name} is not pinned"
        assert distribution(name).version == spec.version, f"{name}: tests run another version"


def test_the_layer_ships_no_part_of_the_runtime_sdk():
    assert not RUNTIME & set(_pins())


def test_every_dependency_of_a_shipped_package_is_shipped_or_provided_by_the_runtime():
    pins = _pins()
    missing = []
    for name, requirement in pins.items():
        extras = sorted(requirement.extras) or [""]
        for declared in distribution(name).requires or []:
            dependency = Requirement(declared)
            if dependency.marker and not any(dependency.marker.evaluate({"extra": e}) for e in extras):
                continue
            if _name(dependency.name) not in pins and _name(dependency.name) not in RUNTIME:
                missing.append(f"{name} -> {dependency.name}")
    assert not missing, f"installed with --no-deps, the layer would lack: {missing}"


def test_aws_xray_sdk_is_what_would_bring_botocore_so_the_layer_is_built_without_dependencies():
    # The reason for `pip install --no-deps` in layers/tokenflow/Makefile: a plain install of the
    # [tracer] extra pulls botocore into /opt/python through aws-xray-sdk.
    declared = {_name(Requirement(r).name) for r in distribution("aws-xray-sdk").requires or []}
    assert "botocore" in declared
    makefile = (REQUIREMENTS.parent / "Makefile").read_text()
    assert "--no-deps" in makefile and "-r requirements.txt" in makefile
