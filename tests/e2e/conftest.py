"""The local stack as the end-to-end tests start it (free ports, short intervals, 25 devices over 3
pages with one quarantined), the story its modules tell on it, and the helpers they share.

A module whose tests build on each other (an export, then a transfer, then a revoke...) declares a
``STORY``: its steps in order. Each test gets a ``stack`` at the point of the story it needs, on this
process's own stack: the steps before that point that have not run there run first (their checks
included), and a stack already past that point is replaced by a fresh one that replays up to it. So
every test passes alone, in any order and under any xdist distribution (``load`` spreads a module's
tests over workers, each with its own stack; ``loadfile``/``loadscope``/``no`` keep them on one),
and in file order each step runs exactly once, as a module-scoped stack did.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tokenflow_local.stack import LocalStack

DEVICES, QUARANTINED = 25, 1

Step = Callable[..., None]


def local_stack(**options: Any) -> LocalStack:
    """A LocalStack on free ports that runs the story in seconds; ``options`` override the defaults."""
    defaults: dict[str, Any] = {
        "aws_port": 0,
        "api_port": 0,
        "particle_port": 0,
        "devices": DEVICES,
        "quarantined": QUARANTINED,
        "devices_per_page": 10,
        "sweep_interval": 1.0,
        "poll_interval": 0.2,
        "retry_delay": 1,
        "device_interval": 0.3,
        "device_first_retry": 1.0,
        "device_max_retry": 3.0,
    }
    return LocalStack(**{**defaults, **options})


class Story:
    """One module's ordered steps on one local stack (see the module docstring).

    A step is a test function registered with ``@STORY.step``; it may ask for ``stack`` and
    ``tmp_path`` only, so that it can be replayed outside pytest. Any other test asks for ``stack``
    and says with ``@pytest.mark.story_after("<step's name>")`` the point it needs (exactly after
    that step; with ``or_later=True`` that point or any later one); an unmarked test takes the stack
    as it is.
    """

    def __init__(self, *, needs_api: bool = True, check_errors: bool = True, **options: Any) -> None:
        self.options = options
        self.needs_api = needs_api
        self.check_errors = check_errors
        self.steps: list[Step] = []
        self.notes: dict[str, Any] = {}  # what one step leaves for a later one, on this stack
        self.stack: LocalStack | None = None
        self.done = 0  # how many steps have run on self.stack; -1: a step failed half-way
        self._resources = contextlib.ExitStack()
        self._stack_scope: contextlib.ExitStack | None = None
        self._tmp_dir: str | None = None

    def step(self, test: Step) -> Step:
        """Register ``test`` as the story's next step; it stays the test pytest collects."""
        unknown = set(inspect.signature(test).parameters) - {"stack", "tmp_path"}
        assert not unknown, f"a step may ask for stack and tmp_path only, not {unknown}"
        self.steps.append(test)
        return test

    def stack_for(self, test: Callable[..., Any], after: str | None, or_later: bool) -> LocalStack:
        """A stack on which the story stands where ``test`` needs it (``after``: a step's name)."""
        names = [step.__name__ for step in self.steps]
        if test in self.steps:
            target, exact = self.steps.index(test), True  # a step runs right after the one before it
        elif after is not None:
            assert after in names, f"{after} is not a step of this story"
            target, exact = names.index(after) + 1, not or_later
        else:
            target, exact = 0, False
        if self.stack is None or self.done < 0 or (exact and self.done > target):
            self._restart()
        assert self.stack is not None
        while self.done < target:
            self._replay(self.steps[self.done])
        return self.stack

    def finished(self, step: Step, passed: bool) -> None:
        """``step`` ran as a test: the story moves past it, or is broken if it failed."""
        self.done = self.steps.index(step) + 1 if passed else -1

    def close(self) -> None:
        self._stop_stack()
        self._resources.close()

    def _replay(self, step: Step) -> None:
        assert self.stack is not None
        values = {"stack": self.stack, "tmp_path": Path(tempfile.mkdtemp(dir=self._tmp()))}
        self.done = -1  # until it has passed
        step(**{name: values[name] for name in inspect.signature(step).parameters})
        self.done = self.steps.index(step) + 1

    def _tmp(self) -> str:
        if self._tmp_dir is None:
            self._tmp_dir = self._resources.enter_context(tempfile.TemporaryDirectory())
        return self._tmp_dir

    def _restart(self) -> None:
        self._stop_stack()
        self._stack_scope = contextlib.ExitStack()
        local = self._stack_scope.enter_context(local_stack(**self.options))
        if self.needs_api and local.api_url is None:
            pytest.fail("no HTTP API: tokenflow_local.gateway or functions/api is missing")
        self.stack, self.done = local, 0
        self.notes.clear()

    def _stop_stack(self) -> None:
        if self._stack_scope is None:
            return
        local, scope = self.stack, self._stack_scope
        self.stack, self._stack_scope, self.done = None, None, 0
        scope.close()
        if self.check_errors and local is not None:
            assert not local.errors, local.errors


_CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed  # a step's stack fixture reads it at teardown
    return report


@pytest.fixture(scope="module")
def story(request: pytest.FixtureRequest) -> Iterator[Story]:
    """The module's ``STORY``; its stack stops when the module's tests are done."""
    module_story: Story = request.module.STORY
    yield module_story
    module_story.close()


@pytest.fixture
def stack(request: pytest.FixtureRequest, story: Story) -> Iterator[LocalStack]:
    """The module's stack, where the story stands as this test needs it."""
    marker = request.node.get_closest_marker("story_after")
    after = marker.args[0] if marker else None
    or_later = bool(marker.kwargs.get("or_later", False)) if marker else False
    yield story.stack_for(request.function, after, or_later)
    if request.function in story.steps:
        story.finished(request.function, request.node.stash.get(_CALL_PASSED, False))


# ---- public faces the modules share -------------------------------------------------------------


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Retry ``check`` (an assertion-raising callable) until it passes; its last failure otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.25)


def sim_api(stack: LocalStack, path: str, method: str = "GET", **kwargs: Any) -> dict[str, Any]:
    """The Particle simulator's control API (``/_sim``) over HTTP."""
    response = requests.request(method, f"{stack.particle_url}/_sim{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


def device_ledgers(stack: LocalStack) -> dict[str, str]:
    """device id -> the AuthToken its own synced Ledger copy holds (what the device uses); devices
    that hold none, or the cleared state, are left out."""
    return {
        d["device_id"]: d["data"]["blynk_token"]
        for d in sim_api(stack, "/device-ledgers")["devices"]
        if d["data"] and d["data"].get("blynk_token")
    }
