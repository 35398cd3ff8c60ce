"""The local gateway's routing and events: read from template.yaml, shaped as API Gateway's payload 2.0."""

from __future__ import annotations

import base64
import contextlib
import copy
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tokenflow_local import lambda_runtime, resources
from tokenflow_local.gateway import (
    LOCAL_MAX_CONCURRENCY,
    Environments,
    Gateway,
    Route,
    http_api_event,
    reserved_concurrency,
    template_routes,
)


def test_routes_come_from_the_template_with_the_exact_path_first():
    routes = template_routes()
    assert [(r.key, r.function) for r in routes] == [
        ("POST /webhooks/particle", "webhook"),
        ("ANY /{proxy+}", "api"),
    ]


def test_the_webhook_path_goes_to_the_webhook_and_everything_else_to_the_api():
    webhook, api = template_routes()
    assert webhook.matches("POST", "/webhooks/particle") == {}
    assert webhook.matches("GET", "/webhooks/particle") is None
    assert api.matches("GET", "/devices/e00fce68a1b2c3d4e5f60718/qr") == {
        "proxy": "devices/e00fce68a1b2c3d4e5f60718/qr"
    }
    assert api.matches("DELETE", "/") is None  # {proxy+} needs at least one character
    assert Route("GET", "/devices/{id}", "api").matches("GET", "/devices/abc") == {"id": "abc"}


def test_an_http_request_becomes_a_payload_2_event():
    route = Route("ANY", "/{proxy+}", "api")
    event = http_api_event(
        route,
        {"proxy": "devices"},
        "GET",
        "/devices?state=waiting&limit=5&tag=a&tag=b",
        {"host": "127.0.0.1:3000"},
        b"",
        "127.0.0.1",
    )
    assert event["version"] == "2.0" and event["routeKey"] == "ANY /{proxy+}"
    assert event["rawPath"] == "/devices" and event["requestContext"]["http"]["method"] == "GET"
    assert event["queryStringParameters"] == {"state": "waiting", "limit": "5", "tag": "a,b"}
    assert event["pathParameters"] == {"proxy": "devices"}
    assert "body" not in event and event["isBase64Encoded"] is False


def test_json_bodies_stay_text_and_binary_bodies_are_base64():
    route = Route("POST", "/webhooks/particle", "webhook")
    text = http_api_event(
        route, {}, "POST", "/webhooks/particle", {"content-type": "application/json"}, b'{"a":1}', ""
    )
    assert text["body"] == '{"a":1}' and text["isBase64Encoded"] is False
    png = b"\x89PNG\r\n\x1a\n\x00"
    binary = http_api_event(route, {}, "POST", "/x", {"content-type": "image/png"}, png, "")
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == png


# ---- concurrent execution environments ------------------------------------------------------------

GATE_MODULE = "tokenflow_test_gateway_gate"
SLOW_HANDLER = f"""
import sys

def lambda_handler(event, context):
    return sys.modules["{GATE_MODULE}"].arrive(__name__)
"""


class _Gate:
    """What the test handler reports to: which environment ran, and how many ran at once."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=1)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.environments: list[str] = []

    def arrive(self, module: str) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.environments.append(module)
        # Passes only when ``parties`` invocations run at the same time (else breaks after 1 s).
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait()
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return module


@pytest.fixture
def slow_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "app.py").write_text(SLOW_HANDLER)
    monkeypatch.setattr(lambda_runtime, "FUNCTIONS", tmp_path)
    yield "slow"
    for name in [m for m in sys.modules if m.startswith("tokenflow_function_slow")]:
        del sys.modules[name]
    sys.modules.pop(GATE_MODULE, None)


def _invoke_at_once(environments: Environments, count: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: environments.invoke({}), range(count)))


def test_concurrent_requests_run_at_once_each_in_an_environment_of_its_own(slow_function: str) -> None:
    gate = sys.modules[GATE_MODULE] = _Gate(parties=3)  # type: ignore[assignment]
    environments = Environments(slow_function, limit=8)
    environments.start()
    answered = _invoke_at_once(environments, 3)
    assert gate.most == 3 and not gate.barrier.broken  # the three ran at the same time
    assert len(set(answered)) == 3  # three handler modules: no state shared between them
    assert environments.made == 3  # a new environment only when every existing one was busy
    sys.modules[GATE_MODULE] = _Gate(parties=1)  # type: ignore[assignment]
    assert _invoke_at_once(environments, 1)[0] in answered  # a warm environment serves it
    assert environments.made == 3


def test_no_more_environments_than_the_limit_run_at_once(slow_function: str) -> None:
    gate = sys.modules[GATE_MODULE] = _Gate(parties=3)  # type: ignore[assignment]
    environments = Environments(slow_function, limit=2)
    environments.start()
    _invoke_at_once(environments, 5)
    assert gate.most == 2 and environments.made == 2
    assert len(gate.environments) == 5


def test_the_limit_is_the_reserved_concurrency_of_the_template_when_it_sets_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The template reserves none (new accounts' quota): every function gets the local limit.
    assert {f: e.limit for f, e in Gateway(port=0).environments.items()} == {
        "webhook": LOCAL_MAX_CONCURRENCY,
        "api": LOCAL_MAX_CONCURRENCY,
    }
    doc = copy.deepcopy(resources.template())
    doc["Resources"]["WebhookFunction"]["Properties"]["ReservedConcurrentExecutions"] = 3
    monkeypatch.setattr(resources, "template", lambda path=None: doc)
    assert reserved_concurrency("webhook") == 3
    assert Gateway(port=0).environments["webhook"].limit == 3
