"""The operator API and the webhook through their real handlers, with the events in events/api/.

AWS is in-process moto (table from template.yaml, the assign queue, the webhook secret in SSM, the
exports bucket). Every answer is checked twice: against the OpenAPI description the API generates,
and for AuthTokens, which no answer but the reveal route may carry.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import boto3
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec

from tests.conftest import BUCKET, TABLE
from tests.support import queues, seed
from tests.support.events import load_event
from tests.support.factories import device_id as device
from tests.support.invariants import check_invariants
from tokenflow import wiring
from tokenflow.ingest import utc_now
from tokenflow.store import NewToken, Store
from tokenflow.tokens import fingerprint, mask, token_id
from tokenflow_local import lambda_runtime
from tokenflow_local.particle_sim import ParticleSimulator
from tokenflow_local.sample_export import make_tokens, qr_png
from tokenflow_local.stack import forget_clients

SECRET = "webhook-secret-for-tests"
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{32}")
NOW = "2026-11-23T10:00:00.000Z"


class Api:
    """Calls the handlers as API Gateway does, and checks every answer."""

    def __init__(self, tokens: set[str], spec_holder: dict[str, Any]) -> None:
        self.tokens = tokens
        self.spec_holder = spec_holder
        self.api = lambda_runtime.load_handler("api", fresh=True)
        self.webhook = lambda_runtime.load_handler("webhook", fresh=True)

    def event(self, fixture: str, method: str | None = None, path: str | None = None, **changes: Any) -> dict:
        event = load_event(f"api/{fixture}")
        if method:
            event["requestContext"]["http"]["method"] = method
        if path:
            event["rawPath"] = event["requestContext"]["http"]["path"] = path
            if "pathParameters" in event:
                event["pathParameters"] = {"proxy": path.lstrip("/")}
        if "query" in changes:
            query = changes.pop("query")
            event["queryStringParameters"] = query
            event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
        if "body" in changes:
            event["body"] = json.dumps(changes.pop("body"))
        for name, value in changes.pop("headers", {}).items():
            if value is None:
                event["headers"].pop(name, None)
            else:
                event["headers"][name] = value
        assert not changes, changes
        return event

    def call(self, fixture: str, method: str | None = None, path: str | None = None, **changes: Any):
        event = self.event(fixture, method, path, **changes)
        module = self.webhook if event["rawPath"] == "/webhooks/particle" else self.api
        answer = module.lambda_handler(event, lambda_runtime.LambdaContext(function_name="api"))
        body = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            return answer["statusCode"], base64.b64decode(body), answer
        if not event["rawPath"].endswith("/token"):
            leaked = set(SECRET_RE.findall(body)) & self.tokens
            assert not leaked, f"{event['rawPath']} revealed an AuthToken"
        if "json" not in answer.get("headers", {}).get("Content-Type", "json"):
            return answer["statusCode"], body, answer
        data = json.loads(body) if body else None
        return answer["statusCode"], data, answer

    def get(self, path: str, **query: Any):
        query = {k: str(v) for k, v in query.items()}
        return self.call("get-summary.json", "GET", path, **({"query": query} if query else {}))

    def post(self, path: str, body: Any = None):
        changes = {"body": body} if body is not None else {}
        return self.call("post-assign.json", "POST", path, **changes)

    def valid(self, schema_name: str, data: Any) -> None:
        """The answer matches the response schema the OpenAPI description publishes."""
        spec = self.spec_holder.setdefault("spec", self.get("/openapi.json")[1])
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


@pytest.fixture
def sim():
    """The Particle product: devices 1-41 as ``device(n)`` names them, device 42 quarantined."""
    with ParticleSimulator(product_id=0) as simulator:
        simulator.add_devices(41)
        simulator.add_device(quarantined=True)
        yield simulator


@pytest.fixture
def world(dynamodb, s3, monkeypatch, sim):
    """Table, bucket, queue and secrets; 6 tokens with QR images, 3 of them given to devices 1-3."""
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="assign")["QueueUrl"]
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/tf/webhook", Value=SECRET, Type="SecureString")
    ssm.put_parameter(Name="/tf/particle", Value=sim.access_token, Type="SecureString")
    monkeypatch.setenv("PARTICLE_API_URL", sim.url)
    monkeypatch.setenv("PARTICLE_PRODUCT", sim.product)
    monkeypatch.setenv("PARTICLE_TOKEN_PARAM", "/tf/particle")
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("EXPORTS_BUCKET", BUCKET)
    monkeypatch.setenv("ASSIGN_QUEUE_URL", queue_url)
    monkeypatch.setenv("WEBHOOK_SECRET_PARAM", "/tf/webhook")
    monkeypatch.setenv("SWEEP_FUNCTION_NAME", "")
    monkeypatch.setenv("LOW_STOCK_THRESHOLD", "5")
    forget_clients()  # the handlers read the settings, clients and secret of this test

    store = Store(TABLE, dynamodb)
    exported = make_tokens(6, seed=11)
    store.add_tokens(
        [
            NewToken(
                t.token, t.qr_token, {"Serial Number": f"SN-{n}"}, qr_png(f"{t.qr_token}+org"), row=n + 2
            )
            for n, t in enumerate(exported)
        ],
        import_id="f" * 64,
        now=NOW,
    )
    given = {}
    for n in (1, 2, 3):
        tid, token = store.available_candidates(1)[0]
        seed.claim(store, device(n), tid, token, NOW, {"name": f"unit-{n}"})
        seed.deliver(store, device(n), tid, NOW)
        given[device(n)] = token
    seed.waiting(store, device(9), NOW)
    spec: dict[str, Any] = {}
    yield {
        "store": store,
        "sim": sim,
        "sqs": sqs,
        "queue": queue_url,
        "given": given,
        "exported": exported,
        "api": Api({t.token for t in exported}, spec),
    }
    forget_clients()


def available_index(store: Store) -> set[str]:
    """Every token id in the sparse available index (the whole index: a test-sized table)."""
    items = store.client.scan(TableName=TABLE, IndexName="available")["Items"]
    return {i["pk"]["S"].removeprefix("TOKEN#") for i in items}


def queued(world) -> list[dict]:
    return queues.queued(world["sqs"], world["queue"])


# ---- description ----------------------------------------------------------------------------------


def test_the_openapi_description_is_valid_and_names_every_operator_route(world):
    status, spec, _ = world["api"].get("/openapi.json")
    assert status == 200
    validate_spec(spec)
    assert set(spec["paths"]) >= {
        "/summary",
        "/imports",
        "/imports/{import_id}",
        "/devices",
        "/devices/{device_id}",
        "/devices/{device_id}/qr",
        "/devices/{device_id}/token",
        "/tokens/{token_ref}",
        "/devices/{device_id}/assign",
        "/devices/{device_id}/transfer",
        "/tokens/{token_ref}/revoke",
    }
    status, _, answer = world["api"].get("/swagger")
    assert status == 200 and "swagger" in answer["body"].lower()


# ---- reading --------------------------------------------------------------------------------------


def test_summary_counts_states_in_exactly_one_read(world):
    api = world["api"]
    api.get("/summary")  # builds the handler's store
    store = wiring.fleet().store
    store.calls.counts.clear()
    status, data, _ = api.call("get-summary.json")
    assert status == 200
    assert store.calls.counts == {"BatchGetItem": 1}
    assert data["tokens"] == {
        "available": 3,
        "assigned": 0,
        "delivered": 3,
        "confirmed": 0,
        "released": 0,
        "revoked": 0,
    }
    assert data["devices"]["delivered"] == 3 and data["devices"]["waiting"] == 1
    assert data["low_stock"] is True and data["low_stock_threshold"] == 5
    api.valid("Summary", data)


def test_a_device_shows_its_token_masked_with_qr_token_and_timestamps(world):
    api, device_id = world["api"], device(1)
    token = world["given"][device_id]
    status, data, _ = api.call("get-device.json", path=f"/devices/{device_id}")
    assert status == 200
    api.valid("Device", data)
    assert data["state"] == "delivered" and data["name"] == "unit-1"
    assert data["token"] == {
        "token_id": token_id(token),
        "fingerprint": fingerprint(token),
        "mask": data["token"]["mask"],
    }
    assert data["token"]["mask"] == f"{token[:4]}…{token[-4:]}"
    exported = next(t for t in world["exported"] if t.token == token)
    assert data["qr_token"] == exported.qr_token
    assert data["metadata"]["Serial Number"].startswith("SN-")
    assert data["assigned_at"] == data["delivered_at"] == NOW
    assert data["attempts"] == 0 and data["last_error"] is None


def test_unknown_and_malformed_device_ids_get_clear_errors(world):
    status, data, _ = world["api"].get(f"/devices/{device(77)}")
    assert status == 404 and "unknown" in data["message"]
    status, data, _ = world["api"].get("/devices/NOT-A-DEVICE")
    assert status == 422 and data["detail"][0]["loc"][-1] == "device_id"
    status, _, _ = world["api"].get("/no/such/route")
    assert status == 404


@pytest.mark.slow
def test_devices_page_through_a_thousand_with_cursors(world):
    store: Store = world["store"]
    for n in range(1000, 2000):
        seed.waiting(store, device(n), NOW)
    api, seen, pages, cursor = world["api"], [], 0, None
    while True:
        query = {"state": "waiting", "limit": "100", **({"cursor": cursor} if cursor else {})}
        status, data, _ = api.call("get-devices-waiting.json", query=query)
        assert status == 200, data
        pages += 1
        seen.extend(d["device_id"] for d in data["devices"])
        cursor = data["cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 1001  # the 1,000 and device 9
    assert pages in (11, 12)  # the last full page may leave a cursor to an empty one
    api.valid("DevicePage", data)


def test_devices_of_every_state_in_one_listing(world):
    api, seen, cursor = world["api"], [], None
    while True:
        status, data, _ = api.get("/devices", limit=2, **({"cursor": cursor} if cursor else {}))
        assert status == 200
        seen.extend((d["device_id"], d["state"]) for d in data["devices"])
        cursor = data["cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted([(device(n), "delivered") for n in (1, 2, 3)] + [(device(9), "waiting")])


def test_a_forged_or_foreign_cursor_is_refused(world):
    api = world["api"]
    for cursor in (
        "not-base64!",
        base64.urlsafe_b64encode(b'{"s":"waiting","k":{"pk":{"S":"TOKEN#x"}}}').decode(),
    ):
        status, data, _ = api.get("/devices", state="waiting", cursor=cursor)
        assert status == 400 and "cursor" in data["message"]
    # a cursor handed out for one state is no good for another
    for n in range(100, 103):
        seed.waiting(world["store"], device(n), NOW)
    _, page, _ = api.get("/devices", state="waiting", limit=1)
    status, data, _ = api.get("/devices", state="delivered", cursor=page["cursor"])
    assert status == 400


def test_the_qr_label_is_the_stored_png(world):
    api = world["api"]
    status, png, answer = api.call("get-device-qr.json", path=f"/devices/{device(2)}/qr")
    assert status == 200 and answer["headers"]["Content-Type"] == "image/png"
    token = world["given"][device(2)]
    exported = next(t for t in world["exported"] if t.token == token)
    assert png == qr_png(f"{exported.qr_token}+org")
    status, data, _ = api.get(f"/devices/{device(9)}/qr")
    assert status == 404 and "holds no token" in data["message"]


def test_a_token_is_found_by_qr_token_auth_token_or_id(world):
    api = world["api"]
    token = world["given"][device(3)]
    exported = next(t for t in world["exported"] if t.token == token)
    for ref in (exported.qr_token, token, token_id(token)):
        status, data, _ = api.call("get-token-by-qr.json", path=f"/tokens/{ref}")
        assert status == 200, data
        assert data["device_id"] == device(3) and data["state"] == "delivered"
        assert data["fingerprint"] == fingerprint(token)
        api.valid("Token", data)
    status, data, _ = api.get("/tokens/sqr_" + "Z" * 32)
    assert status == 404
    status, data, _ = api.get("/tokens/" + "!" * 40)
    assert status == 400 and "expected an AuthToken" in data["message"]


def test_the_reveal_route_is_the_one_that_answers_with_the_token(world):
    status, data, answer = world["api"].call("get-device-token.json", path=f"/devices/{device(1)}/token")
    assert status == 200
    assert data == {"device_id": device(1), "token": world["given"][device(1)]}
    assert answer["headers"]["Cache-Control"] == "no-store"
    status, _, _ = world["api"].get(f"/devices/{device(9)}/token")
    assert status == 404


def test_imports_list_and_report(world, s3):
    store: Store = world["store"]
    report = {"status": "processed", "problems": [{"row": 4, "reason": "bad token", "value": "xw7I…FAVl"}]}
    s3.put_object(Bucket=BUCKET, Key="processed/2026-11-23/x.report.json", Body=json.dumps(report))
    sha = "a" * 64
    store.begin_import(sha, "incoming/my export.zip", 1234, NOW)
    store.finish_import(
        sha,
        {
            "status": "processed",
            "source_key": "incoming/my export.zip",
            "tokens_added": 6,
            "report_key": "processed/2026-11-23/x.report.json",
        },
        NOW,
    )
    api = world["api"]
    status, data, _ = api.call("get-imports.json")
    assert status == 200 and data["imports"][0]["source_key"] == "incoming/my export.zip"
    api.valid("ImportList", data)
    status, data, _ = api.get(f"/imports/{sha}")
    assert status == 200 and data["tokens_added"] == 6
    assert data["report"]["problems"][0]["row"] == 4
    assert api.get(f"/imports/{'b' * 64}")[0] == 404
    assert api.get("/imports/nothex")[0] == 422


# ---- acting ---------------------------------------------------------------------------------------


def test_assign_now_queues_the_device(world):
    status, data, _ = world["api"].call("post-assign.json", path=f"/devices/{device(9)}/assign")
    assert status == 202 and data == {
        "device_id": device(9),
        "state": "waiting",
        "queued": True,
        "sweep_requested": False,
    }
    assert [(m["device_id"], m["reason"]) for m in queued(world)] == [(device(9), "manual")]
    status, data, _ = world["api"].post(f"/devices/{device(50)}/assign")
    assert status == 404 and "sweep" in data["message"]


def test_transfer_moves_the_token_and_leaves_the_old_device_clearing(world):
    store, api = world["store"], world["api"]
    before = check_invariants(store)
    token = world["given"][device(1)]
    status, data, _ = api.call(
        "post-transfer.json", path=f"/devices/{device(1)}/transfer", body={"to": device(40)}
    )
    assert status == 202, data
    api.valid("TransferAnswer", data)
    assert data["from"] == device(1) and data["to"] == device(40)
    assert data["token"]["token_id"] == token_id(token)
    assert (data["old_state"], data["new_state"], data["new_previous_state"]) == ("clearing", "pending", None)
    assert data["replaced_token"] is None
    old, new = store.get_device(device(1)), store.get_device(device(40))
    # The old device is retired only once the cleared state is in its Ledger (the assign worker's job).
    assert old["state"] == "clearing" and old["clear_reason"] == "transferred" and "token_id" not in old
    assert old["transferred_to"] == device(40)
    assert new["state"] == "pending" and new["token_id"] == token_id(token)
    assert new["name"] == world["sim"].fleet[device(40)]["name"]  # from the product lookup
    messages = sorted((m["device_id"], m["reason"]) for m in queued(world))
    assert messages == sorted([(device(40), "transfer"), (device(1), "clear")])
    after = check_invariants(store)
    # The token moved and waits for the new device's Ledger write: none was added or freed.
    assert after["tokens"]["available"] == before["tokens"]["available"]
    assert after["tokens"]["assigned"] == before["tokens"].get("assigned", 0) + 1
    assert after["devices"]["clearing"] == 1 and after["devices"]["pending"] == 1
    assert [e["event"] for e in store.history(token_id(token))] == ["transferred"]


def test_transfer_into_a_served_replacement_releases_its_own_token(world):
    store, api = world["store"], world["api"]
    moved, own = world["given"][device(1)], world["given"][device(2)]
    status, data, _ = api.post(f"/devices/{device(1)}/transfer", {"to": device(2)})
    assert status == 202, data
    api.valid("TransferAnswer", data)
    # device 2's own token had reached its Ledger (delivered): released, never handed out again
    assert data["new_previous_state"] == "delivered"
    assert data["replaced_token"] == {
        "token_id": token_id(own),
        "fingerprint": fingerprint(own),
        "mask": mask(own),
        "state": "released",
    }
    assert store.get_token(token_id(own))["state"] == "released"
    assert store.get_device(device(2))["token_id"] == token_id(moved)
    check_invariants(store)
    # and back again: device 1 (clearing) takes the token, device 2 gives it up
    status, data, _ = api.post(f"/devices/{device(2)}/transfer", {"to": device(1)})
    assert status == 202, data
    assert data["new_previous_state"] == "clearing" and data["replaced_token"] is None
    assert store.get_device(device(1))["state"] == "pending"
    assert store.get_device(device(2))["state"] == "clearing"
    assert store.get_token(token_id(moved))["device_id"] == device(1)
    check_invariants(store)


def test_a_replacements_token_that_never_reached_its_ledger_returns_to_stock(world):
    store, api = world["store"], world["api"]
    tid, token = store.available_candidates(1)[0]
    seed.claim(store, device(5), tid, token, NOW)
    available = store.summary()["tokens"]["available"]
    status, data, _ = api.post(f"/devices/{device(1)}/transfer", {"to": device(5)})
    assert status == 202, data
    assert data["replaced_token"]["state"] == "available"
    assert store.get_token(tid)["state"] == "available"
    assert store.summary()["tokens"]["available"] == available + 1
    assert tid in available_index(store)  # back in the available index
    check_invariants(store)


def test_transfer_refusals_change_nothing(world):
    store, api = world["store"], world["api"]
    before = check_invariants(store)
    status, data, _ = api.post(f"/devices/{device(1)}/transfer", {"to": device(1)})
    assert status == 400 and "itself" in data["message"]
    status, data, _ = api.post(f"/devices/{device(9)}/transfer", {"to": device(41)})
    assert status == 409 and "holds no token" in data["message"]
    status, data, _ = api.post(f"/devices/{device(1)}/transfer", {"to": device(60)})
    assert status == 404 and "not in the Particle product" in data["message"]
    status, data, _ = api.post(f"/devices/{device(1)}/transfer", {"to": device(42)})
    assert status == 409 and "quarantined" in data["message"]
    status, data, _ = api.post(f"/devices/{device(50)}/transfer", {"to": device(41)})
    assert status == 404 and "unknown" in data["message"]
    status, data, _ = api.post(f"/devices/{device(1)}/transfer", {"to": "nope"})
    assert status == 422
    status, data, _ = api.post(f"/devices/{device(1)}/transfer", {"too": device(41)})
    assert status == 422
    assert not queued(world)
    assert check_invariants(store) == before


def test_transfer_answers_503_when_particle_refuses_the_lookup(world):
    world["sim"].set_faults(auth_failure=True)
    status, data, _ = world["api"].post(f"/devices/{device(1)}/transfer", {"to": device(40)})
    assert status == 503 and "Particle" in data["message"]
    assert world["store"].get_device(device(1))["state"] == "delivered"
    assert not queued(world)


def test_revoke_clears_the_holder_before_it_gets_a_fresh_token(world):
    store, api = world["store"], world["api"]
    token = world["given"][device(2)]
    status, data, _ = api.call("post-revoke.json", path=f"/tokens/{token_id(token)}/revoke")
    assert status == 200, data
    api.valid("RevokeAnswer", data)
    assert data["state"] == "revoked" and data["device_id"] == device(2) and data["device_requeued"]
    assert data["device_state"] == "clearing"
    device_item = store.get_device(device(2))
    assert device_item["state"] == "clearing" and device_item["clear_reason"] == "revoked"
    assert store.get_token(token_id(token))["state"] == "revoked"
    assert [(m["device_id"], m["reason"]) for m in queued(world)] == [(device(2), "clear")]
    counts = check_invariants(store)
    assert counts["tokens"]["revoked"] == 1
    # again: nothing changes, nothing is queued
    status, data, _ = api.post(f"/tokens/{token_id(token)}/revoke")
    assert status == 200 and data["already_revoked"] and not data["device_requeued"]
    assert check_invariants(store) == counts
    assert api.post(f"/tokens/{'c' * 64}/revoke")[0] == 404


def test_an_available_token_is_revoked_without_touching_a_device(world):
    store, api = world["store"], world["api"]
    tid, _ = store.available_candidates(1)[0]
    status, data, _ = api.post(f"/tokens/{tid}/revoke")
    assert status == 200 and data["device_id"] is None and not data["device_requeued"]
    assert tid not in available_index(store)
    assert not queued(world)
    check_invariants(store)


# ---- the webhook ----------------------------------------------------------------------------------


def status_body(device_id: str, token: str | None, synced: int = 1) -> dict[str, Any]:
    value = fingerprint(token) if token else "none"
    return {
        "event": "tokenflow/status",
        "data": f"v=1;token={value};fw=1.0.0;synced={synced}",
        "device_id": device_id,
        "published_at": NOW,
    }


def hook(world, body: Any, secret: str | None = SECRET):
    return world["api"].call("post-webhook-status.json", body=body, headers={"x-tokenflow-secret": secret})


def test_the_webhook_refuses_a_missing_or_wrong_secret_and_changes_nothing(world):
    store = world["store"]
    before = check_invariants(store)
    body = status_body(device(1), world["given"][device(1)])
    for secret in (None, "", "wrong", SECRET + "x"):
        status, data, _ = hook(world, body, secret)
        assert status == 401, (secret, data)
    assert check_invariants(store) == before
    assert store.get_device(device(1))["state"] == "delivered"
    assert not queued(world)


def test_a_matching_fingerprint_confirms_once(world):
    store = world["store"]
    body = status_body(device(1), world["given"][device(1)])
    status, data, _ = hook(world, body)
    assert (status, data["action"], data["state"]) == (200, "confirmed", "confirmed")
    counts = check_invariants(store)
    assert counts["devices"]["confirmed"] == 1 and counts["tokens"]["confirmed"] == 1
    status, data, _ = hook(world, body)  # Particle retries: same answer, nothing changes
    assert (status, data["action"]) == (200, "already-confirmed")
    assert check_invariants(store) == counts


def test_another_fingerprint_flags_the_device_and_redelivers(world):
    store = world["store"]
    wrong = world["given"][device(2)]
    status, data, _ = hook(world, status_body(device(1), wrong))
    assert (status, data["action"]) == (200, "redeliver")
    item = store.get_device(device(1))
    assert item["reported_fp"] == fingerprint(wrong) and item["mismatch_at"]
    assert [(m["device_id"], m["reason"]) for m in queued(world)] == [(device(1), "redeliver")]


def test_a_mismatch_is_counted_and_the_next_matching_report_confirms_again(world):
    store, own, wrong = world["store"], world["given"][device(1)], world["given"][device(2)]
    assert hook(world, {**status_body(device(1), own), "published_at": utc_now()})[1]["action"] == "confirmed"
    status, data, _ = hook(world, {**status_body(device(1), wrong), "published_at": utc_now()})
    assert (status, data["action"], data["state"]) == (200, "redeliver", "delivered")
    item = store.get_device(device(1))
    assert item["state"] == "delivered" and item["mismatches"] == 1
    assert store.get_token(token_id(own))["state"] == "delivered"
    assert [(m["device_id"], m["reason"]) for m in queued(world)] == [(device(1), "redeliver")]
    status, data, _ = hook(world, {**status_body(device(1), own), "published_at": utc_now()})
    assert (status, data["action"], data["state"]) == (200, "confirmed", "confirmed")
    item = store.get_device(device(1))
    assert item["mismatches"] == 1 and "reported_fp" not in item and "mismatch_at" not in item
    status, data, _ = world["api"].get(f"/devices/{device(1)}")
    assert (data["state"], data["mismatches"]) == ("confirmed", 1)
    check_invariants(store)


def test_a_device_without_a_token_is_queued_only_when_one_is_available(world):
    status, data, _ = hook(world, status_body(device(9), None, synced=0))
    assert (status, data["action"]) == (200, "queued")
    assert [m["device_id"] for m in queued(world)] == [device(9)]
    # a delivered device that has not synced its Ledger yet: wait for the report after the sync
    status, data, _ = hook(world, status_body(device(1), None, synced=0))
    assert data["action"] == "awaiting-sync" and not queued(world)


def test_a_waiting_device_costs_no_message_while_no_token_is_left(world):
    store = world["store"]
    for n in (4, 5, 6):
        tid, token = store.available_candidates(1)[0]
        seed.claim(store, device(n), tid, token, NOW)
    status, data, _ = hook(world, status_body(device(9), None))
    assert (status, data["action"]) == (200, "waiting")
    assert not queued(world)


def test_unusable_webhook_bodies_get_400(world):
    for body in (
        "not json",
        [],
        {"event": "tokenflow/status", "data": "v=2;token=none", "device_id": device(1)},
    ):
        status, data, _ = hook(world, body)
        assert status == 400 and data["message"]
    status, data, _ = hook(world, {**status_body(device(1), None), "device_id": "E00"})
    assert status == 400 and "device_id" in data["message"]


def test_the_webhook_fixture_is_accepted_with_the_configured_secret(world):
    event = world["api"].event("post-webhook-status.json", headers={"x-tokenflow-secret": SECRET})
    answer = world["api"].webhook.lambda_handler(event, lambda_runtime.LambdaContext(function_name="webhook"))
    assert answer["statusCode"] == 200  # an unknown device, no sweep configured: ignored
    assert json.loads(answer["body"])["action"] == "ignored"


def test_the_particle_status_integration_body_confirms_through_the_webhook(world):
    """The firmware's integration template, rendered as Particle renders it, with its secret header."""
    from tests.unit.test_firmware_contract import load_integration, render

    hook_template = load_integration("tokenflow-status.json")
    token = world["given"][device(3)]
    body = render(
        hook_template["json"],
        {
            "PARTICLE_EVENT_NAME": hook_template["event"],
            "PARTICLE_EVENT_VALUE": f"v=1;token={fingerprint(token)};fw=1.0.0;synced=1",
            "PARTICLE_DEVICE_ID": device(3),
            "PARTICLE_PUBLISHED_AT": NOW,
        },
    )
    (header,) = hook_template["headers"]
    headers = {header.lower(): SECRET}
    status, data, _ = world["api"].call("post-webhook-status.json", body=body, headers=headers)
    assert (status, data["action"]) == (200, "confirmed")
    assert world["store"].get_device(device(3))["state"] == "confirmed"


def test_a_report_older_than_the_confirmation_changes_nothing(world):
    store = world["store"]
    token = world["given"][device(1)]
    later = {**status_body(device(1), token), "published_at": "2026-11-23T10:05:00.000Z"}
    assert hook(world, later)[1]["action"] == "confirmed"
    counts = check_invariants(store)
    # Particle delivers an earlier "no token yet" report last: it is out of date, not a lost token.
    earlier = {**status_body(device(1), None), "published_at": "2026-11-23T09:59:00.000Z"}
    status, data, _ = hook(world, earlier)
    assert (status, data["action"], data["state"]) == (200, "stale", "confirmed")
    assert check_invariants(store) == counts and not queued(world)
    # the same report published after the confirmation is a device that lost its token
    lost = {**status_body(device(1), None), "published_at": "2099-01-01T00:00:00.000Z"}
    assert hook(world, lost)[1]["action"] == "redeliver"


# ---- what the console reads: groups, activity, timeline, serial numbers -----------------------------


def test_swagger_groups_every_route_by_tag_reading_first_then_acting(world):
    _, spec, _ = world["api"].get("/openapi.json")
    order = [t["name"] for t in spec["tags"]]
    assert order == ["summary", "devices", "tokens", "imports", "lifecycle"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert len(operation.get("tags", [])) == 1, (method, path)
            assert operation["tags"][0] in order, (method, path)
            if method == "post":
                assert operation["tags"] == ["lifecycle"], path


def test_activity_counts_tokens_assigned_and_confirmed_per_hour(world):
    api = world["api"]
    fleet = wiring.fleet()
    fleet.now = lambda: datetime(2026, 11, 23, 12, 30, tzinfo=UTC)  # NOW (the claims) was 10:00
    calls_before = fleet.store.calls.total
    status, data, _ = api.get("/activity", hours=26)
    assert status == 200, data
    api.valid("Activity", data)
    hours = data["hours"]
    assert len(hours) == 26 and hours[0]["hour"] == "2026-11-22T11" and hours[-1]["hour"] == "2026-11-23T12"
    by_hour = {h["hour"]: (h["assigned"], h["confirmed"]) for h in hours}
    assert by_hour["2026-11-23T10"] == (3, 0)
    assert sum(a for a, _ in by_hour.values()) == 3
    assert fleet.store.calls.total - calls_before == 2  # one Query per day the window spans

    # A confirmation is counted in the hour it happens (the webhook's clock: now).
    status, _, _ = hook(world, status_body(device(1), world["given"][device(1)]))
    assert status == 200
    fleet.now = lambda: datetime.now(UTC)
    _, data, _ = api.get("/activity", hours=1)
    assert [(h["assigned"], h["confirmed"]) for h in data["hours"]] == [(0, 1)]
    status, data, _ = api.get("/activity", hours=169)
    assert status == 422


def test_a_device_timeline_joins_its_timestamps_and_its_tokens_history(world):
    api = world["api"]
    status, data, _ = api.get(f"/devices/{device(1)}/history")
    assert status == 200, data
    api.valid("DeviceHistory", data)
    events = data["events"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert {("device", "assigned"), ("device", "delivered")} <= {(e["source"], e["event"]) for e in events}
    assert not any(e["source"] == "token" for e in events)  # claims and deliveries are the device's own

    # After an RMA the replacement's timeline carries its token's transfer, naming both devices.
    status, _, _ = api.post(f"/devices/{device(1)}/transfer", {"to": device(20)})
    assert status == 202
    _, data, _ = api.get(f"/devices/{device(20)}/history")
    transfer = [e for e in data["events"] if e["source"] == "token"]
    assert [e["event"] for e in transfer] == ["transferred"]
    assert transfer[0]["details"] == {"from": device(1), "to": device(20)}
    assert ("device", "assigned") in {(e["source"], e["event"]) for e in data["events"]}
    status, data, _ = api.get(f"/devices/{device(30)}/history")
    assert status == 404


def test_a_serial_number_is_looked_up_at_particle(world):
    api = world["api"]
    serial = next(d["serial_number"] for d in world["sim"].devices() if d["id"] == device(2))
    status, data, _ = api.get(f"/serial_numbers/{serial}")
    assert status == 200, data
    api.valid("SerialNumberLookup", data)
    assert data == {"serial_number": serial, "device_id": device(2), "known": True}
    serial = next(d["serial_number"] for d in world["sim"].devices() if d["id"] == device(20))
    _, data, _ = api.get(f"/serial_numbers/{serial}")
    assert data["device_id"] == device(20) and data["known"] is False
    status, data, _ = api.get("/serial_numbers/NOSUCHSERIAL1")
    assert status == 404 and "no device with serial number" in data["message"]
    status, _, _ = api.get("/serial_numbers/bad..serial")
    assert status == 422
