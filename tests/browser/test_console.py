"""The console in headless Chromium against the local stack: the overview, a search, a transfer and
a revoke through the UI with their confirmation steps, the states changing; the imports and their
rejected rows; the reveal behind its second click; and no page but the reveal answer with an
AuthToken in it (every page fetched, every device's included).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.browser.conftest import DEVICES, SAMPLE, TOKENS, screenshot, wait_for
from tests.e2e.conftest import device_ledgers
from tokenflow_cli.console.server import ConsoleServer
from tokenflow_local.stack import LocalStack

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
BAD_ROWS_CSV = (
    "Device Token,QR Token\r\n"
    "too-short-to-be-a-token,sqr_" + "A" * 32 + "\r\n"
    "xw7ITVneg1DifRRQuPGcA7fJvV8-FAV!,sqr_" + "B" * 32 + "\r\n"
)


def api(stack: LocalStack, path: str, **params: Any) -> Any:
    response = requests.get(f"{stack.api_url}{path}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def devices_in(stack: LocalStack, state: str) -> list[dict[str, Any]]:
    return api(stack, "/devices", state=state, limit=100)["devices"]


def state_of(stack: LocalStack, device_id: str) -> str:
    return str(api(stack, f"/devices/{device_id}")["state"])


def shown_state(page: Any) -> str:
    return str(page.locator("h1 .badge").inner_text())


def taken(stack: LocalStack, *, state: str, avoid: set[str]) -> str:
    """A device in ``state`` that no other test of this module acts on."""
    for view in devices_in(stack, state):
        if view["device_id"] not in avoid:
            avoid.add(view["device_id"])
            return str(view["device_id"])
    raise AssertionError(f"no free device in state {state}")


ACTED_ON: set[str] = set()


def test_the_overview_shows_counts_the_activity_chart_and_the_latest_import(page, console: ConsoleServer):
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto("/")
    assert page.locator("h1").inner_text() == "Overview"
    stats = dict(
        zip(
            page.locator(".stat .label").all_inner_texts(),
            page.locator(".stat .value").all_inner_texts(),
            strict=True,
        )
    )
    assert stats["DEVICES CONFIRMED"] == str(TOKENS) and stats["DEVICES WAITING"] == str(DEVICES - TOKENS)
    assert page.locator(".banner-warn").inner_text().startswith("Low stock")
    assert page.locator("svg.chart rect.bar-assigned").count() == 24
    assert f"assigned ({TOKENS})" in page.locator(".legend").inner_text()
    assert "first-batch.zip" in page.locator("section", has_text="Latest imports").inner_text()
    screenshot(page, "overview")
    # Every asset came from the console itself (no CDN), and nothing broke the page's policy.
    assert requested and all(url.startswith(console.url) for url in requested), requested
    assert not problems, problems


def test_a_device_is_found_by_serial_number_and_by_qr_token(page, stack: LocalStack):
    device_id = taken(stack, state="confirmed", avoid=ACTED_ON)
    view = api(stack, f"/devices/{device_id}")
    for query in (view["serial_number"], view["qr_token"], device_id.upper()):
        page.goto("/devices")
        page.fill("input[name=q]", query)
        page.press("input[name=q]", "Enter")
        page.wait_for_url(f"**/devices/{device_id}")
        assert device_id in page.locator("h1").inner_text()
        assert page.locator(".token-mask").inner_text() == view["token"]["mask"]
    page.goto("/devices")
    page.fill("input[name=q]", "NOSUCHSERIAL9")
    page.press("input[name=q]", "Enter")
    assert "no device with serial number" in page.locator(".flash-error").inner_text()
    page.select_option("select[name=state]", "waiting")
    page.click("text=Filter")
    assert page.locator("table.list tbody tr").count() == DEVICES - TOKENS
    page.goto("/devices")
    assert page.locator("table.list tbody tr").count() == DEVICES
    screenshot(page, "devices")


def test_a_transfer_through_the_ui_moves_the_token_after_its_confirmation_step(page, stack: LocalStack):
    old = taken(stack, state="confirmed", avoid=ACTED_ON)
    new = taken(stack, state="waiting", avoid=ACTED_ON)
    token_mask = api(stack, f"/devices/{old}")["token"]["mask"]
    page.goto(f"/devices/{old}")
    page.fill("input[name=to]", new)
    page.click("text=Review transfer…")
    page.wait_for_url(f"**/devices/{old}/transfer?to={new}")
    consequences = page.locator("ul.consequences").inner_text()
    assert token_mask in consequences and new in consequences and "retired" in consequences
    assert state_of(stack, old) == "confirmed"  # nothing happens before the second click
    screenshot(page, "device-transfer-confirm")
    page.click("button:has-text('Transfer token')")
    page.wait_for_url(f"**/devices/{old}")
    assert f"moves to {new}" in page.locator(".flash-ok").inner_text()
    assert shown_state(page) in ("clearing", "retired")

    def settled() -> bool:
        page.reload()
        return shown_state(page) == "retired"

    wait_for(settled, 30, "the old device retired")
    page.goto(f"/devices/{new}")
    wait_for(lambda: page.reload() or shown_state(page) == "confirmed", 30, "the replacement confirmed")
    assert page.locator(".token-mask").inner_text() == token_mask
    assert "transferred" in page.locator("ol.timeline").inner_text()


def test_a_revoke_through_the_ui_clears_the_device_after_its_confirmation_step(page, stack: LocalStack):
    device_id = taken(stack, state="confirmed", avoid=ACTED_ON)
    token_mask = api(stack, f"/devices/{device_id}")["token"]["mask"]
    page.goto(f"/devices/{device_id}")
    screenshot(page, "device")
    page.click("text=Review revoke…")
    page.wait_for_url(f"**/devices/{device_id}/revoke")
    consequences = page.locator("ul.consequences").inner_text()
    assert "never handed out again" in consequences and "cleared state" in consequences
    assert state_of(stack, device_id) == "confirmed"
    page.click("button:has-text('Revoke token')")
    page.wait_for_url(f"**/devices/{device_id}")
    assert f"Token {token_mask} is revoked" in page.locator(".flash-ok").inner_text()
    # Cleared, then waiting: every token of the export is in use, so no fresh one is left for it.
    wait_for(lambda: page.reload() or shown_state(page) == "waiting", 30, "the revoked device waiting")
    assert "This device holds no token" in page.locator("main").inner_text()


def test_the_reveal_takes_a_second_click_and_is_never_cached(page, stack: LocalStack):
    device_id = taken(stack, state="confirmed", avoid=ACTED_ON)
    page.goto(f"/devices/{device_id}")
    page.click("text=Reveal AuthToken…")
    page.wait_for_url(f"**/devices/{device_id}/reveal")
    assert "audited" in page.locator("ul.consequences").inner_text()
    assert not set(TOKEN_RE.findall(page.content())) & set(SAMPLE)
    with page.expect_response(f"**/devices/{device_id}/reveal") as answer:
        page.click("button:has-text('Reveal AuthToken')")
    assert answer.value.headers["cache-control"] == "no-store"
    shown = page.locator("#revealed-token").inner_text()
    assert shown == device_ledgers(stack)[device_id]


def test_imports_list_each_report_with_its_rejected_rows_masked(page, stack: LocalStack):
    stack.client("s3").put_object(
        Bucket=stack.bucket, Key="incoming/bad-rows.csv", Body=BAD_ROWS_CSV.encode()
    )
    wait_for(
        lambda: any("bad-rows" in (i["source_key"] or "") for i in api(stack, "/imports")["imports"]),
        30,
        "the second import",
    )
    page.goto("/imports")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2
    screenshot(page, "imports")
    page.click("text=bad-rows")
    assert page.locator("h2", has_text="Rejected rows").inner_text() == "Rejected rows (2)"
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(2)] == ["2", "3"]
    masks = page.locator("table.list tbody td.mono").all_inner_texts()
    assert masks == ["too-…oken", "xw7I…FAV!"]  # each rejected value as the report masks it
    content = page.content()
    assert "too-short-to-be-a-token" not in content and "xw7ITVneg1DifRRQuPGcA7fJvV8-FAV!" not in content
    screenshot(page, "import-report")


def test_no_page_but_the_reveal_answer_holds_an_auth_token(stack: LocalStack, console: ConsoleServer):
    session = requests.Session()
    pages = ["/", "/devices", "/imports", "/labels"] + [
        f"/devices?state={s}" for s in ("confirmed", "waiting")
    ]
    device_ids = [d["device_id"] for d in api(stack, "/devices", limit=100)["devices"]]
    for device_id in device_ids:
        pages += [f"/devices/{device_id}", f"/devices/{device_id}/revoke", f"/devices/{device_id}/reveal"]
        if device_id != device_ids[0]:
            pages.append(f"/devices/{device_id}/transfer?to={device_ids[0]}")
    pages += [f"/imports/{i['import_id']}" for i in api(stack, "/imports")["imports"]]
    for path in pages:
        answer = session.get(console.url + path, timeout=10)
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.headers["Cache-Control"] == "no-store"
        leaked = set(TOKEN_RE.findall(answer.text)) & set(SAMPLE)
        assert not leaked, f"{path} shows an AuthToken"

    holder = next(d for d in device_ids if d in device_ledgers(stack))
    csrf = CSRF_RE.search(session.get(f"{console.url}/devices/{holder}/reveal", timeout=10).text)
    assert csrf
    answer = session.post(f"{console.url}/devices/{holder}/reveal", data={"csrf": csrf.group(1)}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert set(TOKEN_RE.findall(answer.text)) & set(SAMPLE) == {device_ledgers(stack)[holder]}

    pdf = session.get(f"{console.url}/labels.pdf", params={"state": "confirmed", "limit": 3}, timeout=30)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
