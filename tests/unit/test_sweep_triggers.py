"""Which sweep invocations start a new pass at once, and which keep the schedule's pace."""

from __future__ import annotations

import pytest

from tokenflow.triggers import AFTER_IMPORT, OPERATOR_ASKED, asks_for_new_pass

SCHEDULE = {"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}
EVENTBRIDGE_RULE = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


@pytest.mark.parametrize(
    ("event", "new_pass"),
    [
        (SCHEDULE, False),
        (EVENTBRIDGE_RULE, False),
        ({"source": "tokenflow", "reason": f"{AFTER_IMPORT} 30 tokens"}, True),
        ({"source": "tokenflow", "reason": OPERATOR_ASKED}, True),
        ({"source": "tokenflow", "reason": "status report from an unknown device"}, False),
        ({"source": "tokenflow"}, False),
        ({}, True),  # aws lambda invoke with an empty payload: somebody asked by hand
        ({"source": "test"}, True),
    ],
)
def test_only_imports_operators_and_direct_invocations_start_a_new_pass_at_once(
    event: dict[str, object], new_pass: bool
) -> None:
    assert asks_for_new_pass(event) is new_pass
