"""Cold start: how long each Lambda handler takes to import in a fresh interpreter.

    .venv/bin/python bench/bench_cold_start.py [--runs 10] [--top 8] [--function api ...] [--tracing off]
        [--baseline DIR]

``--baseline DIR`` measures another tree of the project as well (``git archive <commit> | tar -x -C
DIR``), its runs interleaved with this tree's so that both see the same load on the machine.

For every function of template.yaml, ``--runs`` fresh interpreters each import the handler module
(``app``) the way the Lambda runtime does, and the median import time is checked against its budget
(api 400 ms, the others 300 ms). Each interpreter gets the environment the function has in Lambda:

- the variables of template.yaml (Globals and the function's own), ``!Ref`` of a parameter resolved
  to its default, every other intrinsic to a dummy value;
- the variables Lambda itself sets (``LAMBDA_TASK_ROOT``, ``AWS_LAMBDA_FUNCTION_NAME``,
  ``AWS_LAMBDA_INITIALIZATION_TYPE=on-demand``, dummy credentials, the X-Ray daemon address...).
  ``LAMBDA_TASK_ROOT`` matters: it is how Powertools' Tracer knows it runs in Lambda, so with the
  template's ``Tracing: Active`` the Tracer is on, as it is in AWS (``--tracing off`` adds
  ``POWERTOOLS_TRACE_DISABLED=true`` to see the difference);
- ``PYTHONPATH`` = the layer folder (layers/tokenflow) + the function folder, nothing else of ours.

Third-party packages come from the interpreter running this script (the project's venv), which has
more installed than the layer (awscrt, which botocore imports when present; moto...), and every
module is imported from its bytecode cache (one unmeasured interpreter per function writes it
first). The layer ``sam build`` makes has no bytecode: see bench/README.md for what that costs.

Reported per function:
- import: median (min-max) of the ``import app`` time, measured inside each interpreter, and the
  median CPU time of the same import (user + system), which other work on the machine disturbs less;
- first use: what the first invocation pays on top for what the import no longer does (the AWS
  clients that function creates, the Powertools Parameters utility where it reads a secret, the
  modules its services, the DynamoDB codec and the Particle client import when first built, and the
  Tracer's X-Ray set-up where tracing is on), measured in the same interpreters right after the
  import. It is an approximation of the first invocation's extra cost, without any network call;
- top offenders from ``-X importtime`` (three more interpreters, per-edge medians): the heaviest
  modules that our own code (``app`` or a ``tokenflow`` module) imports, with the importer, since
  that is the line to change. An external module is charged to whichever of our modules imports it
  first.

The exit status is 1 when a median import time is over its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

BUDGET_MS = {"api": 400.0}
DEFAULT_BUDGET_MS = 300.0
PROFILE_RUNS = 3

# What each function's first invocation creates that its import does not: the AWS clients its code
# asks tokenflow.aws for, the SSM reader where it reads a secret (sweep and assign: the Particle
# token; webhook: the shared secret), and the modules its first call imports (the services that
# tokenflow.wiring imports when it builds them, boto3's DynamoDB codec at the first item, requests
# where the Particle client is made). Read from the handlers and the tokenflow modules they use; a
# module the handler already imported costs nothing here, so the same list fits a tree where the
# import did it all.
FIRST_USE: dict[str, dict[str, Any]] = {
    "ingest": {
        "clients": ["s3", "dynamodb", "lambda"],
        "secrets": False,
        "modules": ["tokenflow.ingest", "boto3.dynamodb.types"],
    },
    "sweep": {
        "clients": ["dynamodb", "sqs"],
        "secrets": True,
        "modules": ["tokenflow.sweep", "boto3.dynamodb.types", "requests"],
    },
    "assign": {
        "clients": ["dynamodb"],
        "secrets": True,
        "modules": ["tokenflow.assignment", "boto3.dynamodb.types", "requests"],
    },
    "api": {
        "clients": ["dynamodb", "s3", "sqs", "lambda"],
        "secrets": False,
        "modules": ["tokenflow.fleet", "tokenflow.lifecycle", "tokenflow.reports", "boto3.dynamodb.types"],
    },
    "webhook": {
        "clients": ["dynamodb", "sqs", "lambda"],
        "secrets": True,
        "modules": ["tokenflow.lifecycle", "boto3.dynamodb.types"],
    },
}

# Runs inside each fresh interpreter. The Tracer's deferred set-up (observability.tracer.setup) is
# called when it exists, so the same probe measures the code before and after it was made lazy.
PROBE = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import app
t1, c1 = time.perf_counter(), time.process_time()
first_use = json.loads(sys.argv[1])
import importlib
from tokenflow import aws, observability
setup = getattr(observability.tracer, "setup", None)
if setup is not None:
    setup()
for module in first_use.get("modules", []):
    importlib.import_module(module)
for service in first_use["clients"]:
    aws.client(service)
if first_use["secrets"]:
    from aws_lambda_powertools.utilities import parameters
    parameters.SSMProvider()
t2 = time.perf_counter()
ms = {"import_ms": t1 - t0, "cpu_ms": c1 - c0, "first_use_ms": t2 - t1}
print(json.dumps({key: seconds * 1000 for key, seconds in ms.items()}))
"""


class _TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt...) as tagged values."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"!" + suffix: value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


@dataclass
class Function:
    name: str  # the CodeUri folder name: api, ingest...
    logical_id: str
    root: Path  # the project tree it belongs to
    folder: Path
    memory: int
    tracing: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def budget_ms(self) -> float:
        return BUDGET_MS.get(self.name, DEFAULT_BUDGET_MS)


def _resolve(value: Any, name: str, parameters: dict[str, Any]) -> str:
    """A template value as Lambda would see it: parameter defaults, dummies for everything else."""
    if isinstance(value, dict) and "!Ref" in value:
        ref = value["!Ref"]
        default = parameters.get(ref, {}).get("Default")
        if default is not None:
            return str(default)
        if ref == "ParticleProduct":
            return "12345"
        return f"dummy-{ref}"
    if isinstance(value, dict):
        return f"dummy-{name.lower()}"
    return str(value)


def functions_from_template(root: Path = ROOT) -> list[Function]:
    template = yaml.load((root / "template.yaml").read_text(), Loader=_TemplateLoader)  # noqa: S506 (SafeLoader subclass)
    parameters = template.get("Parameters", {})
    globals_ = template.get("Globals", {}).get("Function", {})
    global_env = globals_.get("Environment", {}).get("Variables", {})
    found = []
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        folder = root / props["CodeUri"]
        env_vars = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        found.append(
            Function(
                name=folder.name,
                logical_id=logical_id,
                root=root,
                folder=folder,
                memory=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
                tracing=str(props.get("Tracing", globals_.get("Tracing", "PassThrough"))),
                env={key: _resolve(value, key, parameters) for key, value in env_vars.items()},
            )
        )
    return found


def lambda_environment(function: Function, tracing: str) -> dict[str, str]:
    """The environment of the function's execution environment, with dummy values where secret."""
    name = f"tokenflow-{function.logical_id}-DUMMY"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        # Reserved variables Lambda sets (Lambda developer guide, "Defined runtime environment
        # variables").
        "_HANDLER": "app.lambda_handler",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_ACCESS_KEY_ID": "ASIADUMMYDUMMYDUMMY0",
        "AWS_SECRET_ACCESS_KEY": "dummy-secret-access-key",
        "AWS_SESSION_TOKEN": "dummy-session-token",
        "LAMBDA_TASK_ROOT": str(function.folder),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        **function.env,
        **({"PYTHONDONTWRITEBYTECODE": "1"} if os.environ.get("PYTHONDONTWRITEBYTECODE") else {}),
        "PYTHONPATH": os.pathsep.join([str(function.root / "layers" / "tokenflow"), str(function.folder)]),
    }
    if tracing == "off" or (tracing == "template" and function.tracing != "Active"):
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def _run(function: Function, env: dict[str, str], importtime: bool) -> tuple[dict[str, float], str]:
    with tempfile.TemporaryDirectory(prefix="no-bytecode-") as empty:
        command = [sys.executable]
        if env.get("PYTHONDONTWRITEBYTECODE"):
            # An empty cache directory: every module is compiled from source, as from a layer
            # without bytecode (the standard library too, so this is an upper bound).
            command += ["-X", f"pycache_prefix={empty}"]
        return _run_command(command, function, env, importtime)


def _run_command(
    command: list[str], function: Function, env: dict[str, str], importtime: bool
) -> tuple[dict[str, float], str]:
    if importtime:
        command += ["-X", "importtime"]
    command += ["-c", PROBE, json.dumps(FIRST_USE.get(function.name, {"clients": [], "secrets": False}))]
    done = subprocess.run(command, env=env, cwd=function.folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{function.name}: the probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@dataclass
class _Node:
    name: str
    self_us: int
    cumulative_us: int
    children: list[_Node] = field(default_factory=list)


def parse_importtime(text: str) -> list[_Node]:
    """The import tree of ``-X importtime`` output (a child is printed before its parent)."""
    pending: dict[int, list[_Node]] = {}
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        self_us, cumulative_us, label = int(fields[0]), int(fields[1]), fields[2]
        stripped = label.lstrip(" ")
        level = (len(label) - len(stripped) - 1) // 2
        node = _Node(stripped.strip(), self_us, cumulative_us, pending.pop(level + 1, []))
        pending.setdefault(level, []).append(node)
    return pending.get(0, [])


def _ours(module: str) -> bool:
    return module == "app" or module == "tokenflow" or module.startswith("tokenflow.")


def offender_edges(roots: list[_Node]) -> dict[tuple[str, str], int]:
    """(our module, the external module it imports) -> cumulative microseconds, under ``app``."""
    edges: dict[tuple[str, str], int] = {}

    def walk(node: _Node) -> None:
        for child in node.children:
            if _ours(child.name):
                walk(child)
            elif _ours(node.name):
                edges[(node.name, child.name)] = edges.get((node.name, child.name), 0) + child.cumulative_us

    for root in roots:
        if root.name == "app":
            edges[("(interpreter)", "app: own code of app and tokenflow")] = _own_us(root)
            walk(root)
    return edges


def _own_us(node: _Node) -> int:
    """Self time of our own modules (their compile and module-level code) under ``node``."""
    total = node.self_us if _ours(node.name) else 0
    return total + sum(_own_us(child) for child in node.children if _ours(child.name))


@dataclass
class Result:
    function: Function
    import_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    first_use_ms: list[float] = field(default_factory=list)
    offenders: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.import_ms)

    @property
    def passed(self) -> bool:
        return self.median_ms <= self.function.budget_ms


def measure(functions: list[Function], runs: int, top: int, tracing: str) -> list[Result]:
    """Every function ``runs`` times, round-robin, so that a busy spell of the machine is shared."""
    results = [Result(f) for f in functions]
    envs = [lambda_environment(f, tracing) for f in functions]
    for result, env in zip(results, envs, strict=True):
        _run(result.function, env, importtime=False)  # unmeasured: writes the bytecode caches
    for _ in range(runs):
        for result, env in zip(results, envs, strict=True):
            timing, _ = _run(result.function, env, importtime=False)
            result.import_ms.append(timing["import_ms"])
            result.cpu_ms.append(timing["cpu_ms"])
            result.first_use_ms.append(timing["first_use_ms"])
    for result, env in zip(results, envs, strict=True):
        profiles = [
            offender_edges(parse_importtime(_run(result.function, env, importtime=True)[1]))
            for _ in range(PROFILE_RUNS)
        ]
        keys = {key for profile in profiles for key in profile}
        medians = {key: statistics.median(p.get(key, 0) for p in profiles) / 1000 for key in keys}
        ranked = sorted(medians.items(), key=lambda item: -item[1])[:top]
        result.offenders = [(importer, module, ms) for (importer, module), ms in ranked]
    return results


def report(results: list[Result], runs: int, tracing: str, title: str) -> str:
    lines = [
        f"{title}: import of each handler in a fresh interpreter, median of {runs} (min-max); "
        f"tracing: {tracing}.",
        "",
        "| function | import, median (min-max) | import CPU | budget | first use | import + first use |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        verdict = "ok" if r.passed else "OVER"
        first = statistics.median(r.first_use_ms)
        lines.append(
            f"| {r.function.name} | {r.median_ms:.0f} ms ({min(r.import_ms):.0f}-{max(r.import_ms):.0f}) "
            f"| {statistics.median(r.cpu_ms):.0f} ms | {r.function.budget_ms:.0f} ms {verdict} "
            f"| {first:.0f} ms | {r.median_ms + first:.0f} ms |"
        )
    for r in results:
        lines += ["", f"{r.function.name}: heaviest imports from our code (-X importtime, cumulative ms)", ""]
        lines += [f"    {ms:6.1f}  {importer} -> {module}" for importer, module, ms in r.offenders]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh interpreters per function")
    parser.add_argument("--top", type=int, default=8, help="offenders listed per function")
    parser.add_argument("--function", action="append", help="only this function (repeatable)")
    parser.add_argument(
        "--tracing",
        choices=["template", "off"],
        default="template",
        help="template: as the function's Tracing says (Active: the Tracer is on); off: disabled",
    )
    parser.add_argument("--baseline", type=Path, help="also measure this tree of the project")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="compile every module from source (no .pyc)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)

    def selected(root: Path) -> list[Function]:
        return [f for f in functions_from_template(root) if not args.function or f.name in args.function]

    # The flag alone decides: a PYTHONDONTWRITEBYTECODE the shell happens to export would otherwise
    # make every interpreter compile from source and measure that instead.
    if args.no_bytecode:
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    current = selected(ROOT)
    baseline = selected(args.baseline.resolve()) if args.baseline else []
    results = measure(baseline + current, args.runs, args.top, args.tracing)
    before, after = results[: len(baseline)], results[len(baseline) :]
    if before:
        print(report(before, args.runs, args.tracing, f"Baseline ({args.baseline})"), end="\n\n")
    print(report(after, args.runs, args.tracing, "This tree"))
    if args.json:
        figures = {
            label: {
                r.function.name: {
                    "import_ms": r.import_ms,
                    "cpu_ms": r.cpu_ms,
                    "first_use_ms": r.first_use_ms,
                    "offenders": r.offenders,
                }
                for r in group
            }
            for label, group in (("baseline", before), ("current", after))
            if group
        }
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if all(r.passed for r in after) else 1


if __name__ == "__main__":
    sys.exit(main())
