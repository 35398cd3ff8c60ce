"""Concurrent invocations in one local process share Powertools' one metric set: adding metrics
while another invocation flushes must neither fail nor lose the flush (tokenflow_local.lambda_runtime)."""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
import warnings
from collections.abc import Iterator

import pytest

from tokenflow.observability import metrics
from tokenflow_local import lambda_runtime


@pytest.fixture
def busy_interpreter() -> Iterator[None]:
    """Switch threads as often as possible, so that an unguarded flush meets an add at once."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_invocations_adding_metrics_while_another_flushes_all_succeed(busy_interpreter: None) -> None:
    lambda_runtime._serialise_metric_flushes()  # what loading any handler does
    errors: list[str] = []
    flushed = io.StringIO()
    deadline = time.monotonic() + 1.0

    def invocation(n: int) -> None:
        try:
            while time.monotonic() < deadline:
                for k in range(5):
                    metrics.add_metric(name=f"Concurrent{n}x{k}", unit="Count", value=1)
                metrics.flush_metrics()
        except Exception as exc:  # what a handler would have failed with
            errors.append(repr(exc))

    with warnings.catch_warnings(), contextlib.redirect_stdout(flushed):
        warnings.simplefilter("ignore")  # an empty flush warns: normal when another took the set
        threads = [threading.Thread(target=invocation, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert '"Concurrent0x0"' in flushed.getvalue()  # the metrics were flushed, not dropped
