"""The console against the local stack, and headless Chromium driven by Playwright.

One stack per module (started once; each test picks the devices it acts on, so any one passes
alone): 8 devices, one export of 6 tokens, so 6 devices are confirmed and 2 wait for a token (the
replacements a transfer can move a token to). The console runs on a free port in a thread, calling
the stack's API unsigned (the local gateway has no IAM check), as ``tokenflow --local console`` does.

Chromium is Debian's (``make chromium``); Playwright's own browser download is not used.
``TOKENFLOW_SCREENSHOTS=1`` makes the tests write the README's screenshots to docs/screenshots/.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import local_stack
from tokenflow_cli.client import ApiClient
from tokenflow_cli.console.server import ConsoleServer, make_app
from tokenflow_local.sample_export import make_export, make_tokens
from tokenflow_local.stack import LocalStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEVICES, TOKENS, SEED = 8, 6, 5
SAMPLE = [t.token for t in make_tokens(TOKENS, seed=SEED)]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """The local stack with one export imported and every token confirmed on a device."""
    with local_stack(devices=DEVICES, quarantined=0) as running:
        # The export's tokens exist in Blynk, as after a real Blynk.Console export: the device page
        # shows what Blynk says of its token, and a made-up token would read "invalid-token".
        running.register_blynk_tokens(SAMPLE)
        s3 = running.client("s3")
        s3.put_object(
            Bucket=running.bucket, Key="incoming/first-batch.zip", Body=make_export(TOKENS, seed=SEED)
        )
        api = requests.Session()

        def settled() -> bool:
            summary = api.get(f"{running.api_url}/summary", timeout=10).json()
            return (
                summary["devices"]["confirmed"] == TOKENS
                and summary["devices"]["waiting"] == DEVICES - TOKENS
            )

        wait_for(settled, 60, "every token confirmed")
        yield running


@pytest.fixture(scope="module")
def console(stack: LocalStack) -> Iterator[ConsoleServer]:
    assert stack.api_url
    with ConsoleServer(make_app(ApiClient(stack.api_url), local=True)) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives Chromium a new empty profile directory of its own (it refuses
        # --user-data-dir), removed when the browser closes.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, console: ConsoleServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=console.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(page: Any, name: str) -> None:
    """With TOKENFLOW_SCREENSHOTS=1: the page as docs/screenshots/<name>.png (the README shows them)."""
    if os.environ.get("TOKENFLOW_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
