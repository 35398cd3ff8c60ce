"""Recorded AWS calls against each function's own role: what is denied, what is granted and unused.

The policy documents are the SAM translation of template.yaml (``sam_template``); the recorded calls
come from ``iam_recorder``. Each call's permissions (``iam_actions``) are evaluated with moto's IAM
policy engine (``moto.iam.access_control.IAMPolicyStatement``, the code moto's own request
authorisation runs), statement by statement, so a verdict can name the statement that allowed it.

Three known limits of that engine are handled here rather than worked around silently:
- its wildcard match turns the pattern into a regular expression without escaping it, so a ``.``
  in an ARN would match any character: literal parts are escaped before they reach it;
- it compares action names case-sensitively while IAM does not ("action names are case
  insensitive", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html):
  actions are lower-cased on both sides;
- it answers DENIED for an Allow statement whose condition does not hold, and knows few condition
  operators: a statement with a Condition, or a ``?`` wildcard, is reported as not evaluable
  instead of being guessed at.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.iam.access_control import IAMPolicyStatement, PermissionResult

from tests.support import sam_template
from tests.support.iam_actions import Access
from tests.support.sam_template import ACCOUNT_ID, REGION, FunctionRole, Stack


@dataclass(frozen=True)
class Call:
    """One permission one function needed: the API call that needed it and a test that made it."""

    function: str  # functions/<function>
    operation: str  # "dynamodb.TransactWriteItems"
    access: Access
    test: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Call:
        return cls(data["function"], data["operation"], Access(**data["access"]), data["test"])

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "operation": self.operation,
            "access": self.access.to_json(),
            "test": self.test,
        }


def canonical_arn(stack: Stack, access: Access) -> str | None:
    """The ARN of the accessed resource in ``stack`` (None: no template resource, or not an IAM
    identity-policy matter such as the aws/ssm key)."""
    if access.kind == "kms-key" or access.logical is None:
        return None
    logical = access.logical
    if access.kind == "table":
        return stack.arn(logical)
    if access.kind == "index":
        return f"{stack.arn(logical)}/index/{access.detail}"
    if access.kind == "bucket":
        return stack.arn(logical)
    if access.kind == "object":
        return f"{stack.arn(logical)}/{access.detail}"
    if access.kind == "queue":
        return stack.arn(logical)
    if access.kind == "function":
        return stack.arn(logical) + (f":{access.detail}" if access.detail else "")
    if access.kind == "parameter":
        name = str(stack.parameters[logical])
        return f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{name if name.startswith('/') else '/' + name}"
    raise ValueError(f"unknown resource kind {access.kind}")


# ---- statements ------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _escaped(pattern: str) -> str:
    return "*".join(re.escape(part) for part in pattern.split("*"))


class NotEvaluable(Exception):
    """A statement the engine would get wrong (a Condition, a ``?`` wildcard)."""


@dataclass
class Statement:
    policy: str
    sid: str
    raw: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.policy}/{self.sid}" if self.sid else self.policy

    def engine_form(self) -> dict[str, Any]:
        if "Condition" in self.raw:
            raise NotEvaluable(f"{self.label} has a Condition")
        form = dict(self.raw)
        for key in ("Action", "NotAction"):
            if key in form:
                form[key] = [str(a).lower() for a in _as_list(form[key])]
        for key in ("Resource", "NotResource"):
            if key in form:
                if any("?" in str(r) for r in _as_list(form[key])):
                    raise NotEvaluable(f"{self.label} uses a '?' wildcard")
                form[key] = [_escaped(str(r)) for r in _as_list(form[key])]
        if "NotResource" in form:
            raise NotEvaluable(f"{self.label} uses NotResource")
        return form

    def verdict(self, action: str, arn: str) -> PermissionResult:
        return IAMPolicyStatement(self.engine_form()).is_action_permitted(action.lower(), arn)

    def grants(self) -> list[tuple[str, str]]:
        """(action pattern, resource pattern) pairs this Allow statement grants."""
        if self.raw.get("Effect") != "Allow" or "Action" not in self.raw:
            return []
        return [(a, r) for a in _as_list(self.raw["Action"]) for r in _as_list(self.raw.get("Resource", "*"))]


def statements(role: FunctionRole) -> list[Statement]:
    out = []
    for policy, document in role.policies:
        for n, raw in enumerate(_as_list(document.get("Statement", []))):
            out.append(Statement(policy, str(raw.get("Sid", "") or f"#{n}"), raw))
    return out


def _pair_matches(action_pattern: str, resource_pattern: str, action: str, arn: str) -> bool:
    single = Statement("", "", {"Effect": "Allow", "Action": action_pattern, "Resource": resource_pattern})
    return single.verdict(action, arn) == PermissionResult.PERMITTED


# ---- the check -----------------------------------------------------------------------------------


@dataclass
class Finding:
    call: Call
    arn: str | None
    reason: str


@dataclass
class Report:
    allowed: dict[str, dict[tuple[str, str, str], Call]] = field(
        default_factory=dict
    )  # fn -> (action, grant, stmt)
    denied: list[Finding] = field(default_factory=list)
    unattributed: list[Finding] = field(default_factory=list)
    not_evaluated: list[Finding] = field(default_factory=list)
    unused: dict[str, list[tuple[str, str, str]]] = field(
        default_factory=dict
    )  # fn -> (action, resource, stmt)
    managed: dict[str, list[str]] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.denied or self.unattributed or self.unmapped)

    def _first_test(self, call: Call) -> str:
        return min(
            f.call.test
            for f in self.unattributed
            if (f.call.function, f.call.access.action, f.call.access.name, f.call.operation)
            == (call.function, call.access.action, call.access.name, call.operation)
        )

    def failure_text(self) -> str:
        lines = []
        groups: dict[tuple[str, str, str, str], list[Finding]] = defaultdict(list)
        for f in self.denied:  # one line per denied permission, not per object key
            c = f.call
            why = f"{c.operation}, {c.access.note}" if c.access.note else c.operation
            groups[(c.function, c.access.action, why, f.reason)].append(f)
        for (function, action, why, reason), found in groups.items():
            first = min(found, key=lambda f: (f.call.test, f.arn or ""))
            more = len({f.arn for f in found}) - 1
            also = f" and {more} more" if more else ""
            lines.append(
                f"DENIED  {function}: {action} on {first.arn}{also} ({why}; {first.call.test}) - {reason}"
            )
        for f in self.unattributed:
            c = f.call
            lines.append(
                f"UNKNOWN {c.function}: {c.access.action} on {c.access.kind} {c.access.name!r} "
                f"matches no template resource ({c.operation}, e.g. {self._first_test(c)})"
            )
        lines.extend(f"UNMAPPED {u}" for u in self.unmapped)
        return "\n".join(dict.fromkeys(lines))


def evaluate(
    calls: Iterable[Call], template_path: Path = sam_template.TEMPLATE, unmapped: Iterable[str] = ()
) -> Report:
    sam = sam_template.load(template_path)
    translated = sam_template.translate(template_path)
    stack = Stack(translated)
    roles = sam_template.function_roles(sam, translated, stack)
    report = Report(unmapped=sorted(set(unmapped)))
    per_function: dict[str, list[tuple[Call, str]]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: (c.function, c.access.action, c.test, c.operation)):
        role = roles.get(call.function)
        if role is None:
            report.unattributed.append(
                Finding(call, None, f"no function with CodeUri functions/{call.function}")
            )
            continue
        if call.access.kind == "kms-key":
            report.not_evaluated.append(Finding(call, call.access.name, call.access.note))
            continue
        arn = canonical_arn(stack, call.access)
        if arn is None:
            report.unattributed.append(Finding(call, None, "no template resource"))
            continue
        allowed_by: list[Statement] = []
        denied_by: list[Statement] = []
        try:
            for st in statements(role):
                verdict = st.verdict(call.access.action, arn)
                if verdict == PermissionResult.DENIED:
                    denied_by.append(st)
                elif verdict == PermissionResult.PERMITTED:
                    allowed_by.append(st)
        except NotEvaluable as exc:
            report.denied.append(Finding(call, arn, f"not evaluable: {exc}"))
            continue
        if denied_by:
            report.denied.append(
                Finding(call, arn, "explicitly denied by " + ", ".join(s.label for s in denied_by))
            )
        elif not allowed_by:
            report.denied.append(Finding(call, arn, f"no statement of {role.role} allows it"))
        else:
            per_function[call.function].append((call, arn))
            st = allowed_by[0]
            grant = next(r for a, r in st.grants() if _pair_matches(a, r, call.access.action, arn))
            key = (call.access.action, grant, st.label)
            kept = report.allowed.setdefault(call.function, {})
            if key not in kept or _sample_order(call) < _sample_order(kept[key]):
                kept[key] = call
    for directory, role in sorted(roles.items()):
        report.managed[directory] = role.managed
        used = per_function.get(directory, [])
        unused = []
        for st in statements(role):
            for action_pattern, resource_pattern in st.grants():
                if not any(
                    _pair_matches(action_pattern, resource_pattern, c.access.action, arn) for c, arn in used
                ):
                    unused.append((action_pattern, str(resource_pattern), st.label))
        report.unused[directory] = unused
    return report


# ---- output ------------------------------------------------------------------------------------


def summary(report: Report) -> str:
    lines = ["Least privilege: the recorded AWS calls of each function against its own role"]
    for fn, rows in sorted(report.allowed.items()):
        lines.append(f"  {fn}: {', '.join(sorted({a for a, _, _ in rows}))}")
    for fn, unused in sorted(report.unused.items()):
        for action, resource, stmt in unused:
            lines.append(f"  granted, never used: {fn}: {action} on {resource} ({stmt})")
    for f in report.not_evaluated:
        lines.append(
            f"  not an identity-policy grant: {f.call.function}: {f.call.access.action} on {f.arn} "
            f"({f.reason})"
        )
    return "\n".join(dict.fromkeys(lines))  # one line per distinct fact


def _sample_order(call: Call) -> tuple[bool, str, str]:
    """Which recorded call docs/iam.md names for a grant: one made inside a named test first (a
    background poller's call between tests is "outside a test"), then by test and operation, so the
    file changes only when what the tests do changes."""
    return (call.test == "outside a test", call.test, call.operation)


def markdown(report: Report) -> str:
    out = [
        "# IAM: what each function does and which grant allows it",
        "",
        "Generated by the least-privilege check (`tests/support/iam_recorder.py`) at the end of",
        "`make test`: every AWS call a function makes during the integration and end-to-end tests is",
        "recorded as the IAM actions AWS checks for it and evaluated against that function's own role,",
        "as the SAM translation of `template.yaml` defines it (stack `tokenflow`, account",
        f"`{ACCOUNT_ID}`, `{REGION}`). A call no statement allows fails the test run.",
        "",
    ]
    for fn in sorted(set(report.allowed) | set(report.unused)):
        out += [
            f"## {fn}",
            "",
            "| Action | Granted on | Statement | A call that needs it |",
            "| --- | --- | --- | --- |",
        ]
        for (action, grant, stmt), call in sorted(report.allowed.get(fn, {}).items()):
            note = f" ({call.access.note})" if call.access.note else ""
            out.append(f"| `{action}` | `{grant}` | {stmt} | `{call.operation}`{note} in `{call.test}` |")
        decrypts = sorted({f.call.test for f in report.not_evaluated if f.call.function == fn})
        if decrypts:
            out.append(
                "| `kms:Decrypt` | `alias/aws/ssm` | the AWS managed key's own policy | "
                f"`ssm.GetParameter` (WithDecryption) in `{decrypts[0]}` |"
            )
        unused = report.unused.get(fn, [])
        out.append("")
        if unused:
            out.append("Granted but never used by the tests:")
            out += [f"- `{a}` on `{r}` ({s})" for a, r, s in unused]
            out.append("")
        if report.managed.get(fn):
            out.append(
                "AWS managed policies (the runtime's own logs, traces and event source; not evaluated here):"
            )
            out += [f"- `{arn}`" for arn in report.managed[fn]]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def load_calls(paths: Iterable[Path]) -> tuple[list[Call], list[str]]:
    calls: list[Call] = []
    unmapped: list[str] = []
    for path in paths:
        data = json.loads(path.read_text())
        calls += [Call.from_json(c) for c in data["calls"]]
        unmapped += data["unmapped"]
    return calls, unmapped
