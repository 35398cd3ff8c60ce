"""The Particle simulator proven against Particle's own client: the official JS SDK
(``particle-api-js``, pinned in tests/contract/particle_sdk/package.json) runs every operation Tokenflow
uses against the simulator, and each answer must be what Particle documents.

Sources of "documented": docs.particle.io/reference/cloud-apis/api ("Format": the API always replies
with JSON; "Errors": 401 a token that is not valid, 404, 429 too many requests; product endpoints
take the product ID or its slug); the SDK's own types (particle-api-js 12.0.3 src/types/responses.ts:
``DeviceListResponse`` = ``devices`` + ``meta`` ``PaginationMeta`` {page, per_page, total_pages},
``DeviceInfo``, ``LedgerInstance`` {name, scope {type, value}, size_bytes, data, created_at,
updated_at}, ``LedgerInstanceListResponse`` {instances, meta}; src/types/common.ts ``OKResponse``)
and its request builders (src/Particle.js: ``listDevices`` sends ``deviceId``/``deviceName`` as
partial matches, ``groups`` as full group names joined by commas, ``sortAttr``/``sortDir``, ``page``,
``per_page``; ``getDevice({deviceId, product})`` is ``GET /v1/products/{p}/devices/{id}``;
``setLedgerInstance`` sends ``?set_mode=`` Replace (the default) or Merge with body
``{"instance": {"data": ...}}``; ``listLedgerInstances``' ``perPage`` "Default is 100"; Ledger paths
are ``/v1/...`` or ``/v1/orgs/{org}/...`` only); Particle's Device OS Ledger integration test reads
``getLedgerInstance``'s answer as ``body.instance.data``; REFERENCE.md for the 401 body
(``invalid_token``) and the product device 404 body captured from api.particle.io.

The Node script (particle_sdk/contract.mjs) records what the SDK resolves or rejects with; these
tests assert on it. Without Node (a machine where the Makefile could not install the SDK) they skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tokenflow_local.particle_sim import ParticleSimulator

SDK_DIR = Path(__file__).parent / "particle_sdk"
SDK_PACKAGE = SDK_DIR / "node_modules" / "particle-api-js" / "package.json"
LEDGER = "blynk-tokens-c2d"
NODE = shutil.which("node")

# What every Ledger instance answer carries (the SDK's LedgerInstance type, replaced_at optional).
INSTANCE_FIELDS = {"name", "scope", "size_bytes", "data", "created_at", "updated_at"}
# What the SDK's DeviceInfo type declares as always present, plus the product fields Tokenflow reads.
DEVICE_FIELDS = {
    "id",
    "name",
    "last_app",
    "last_heard",
    "last_handshake_at",
    "online",
    "connected",
    "platform_id",
    "cellular",
    "product_id",
    "quarantined",
    "denied",
    "groups",
    "development",
    "firmware_version",
    "serial_number",
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _sdk_missing_reason() -> str | None:
    if NODE is None:
        return "Node is not on this machine: the official Particle SDK cannot run"
    if not SDK_PACKAGE.exists() and shutil.which("npm") is None:
        return "npm is not on this machine: the Makefile could not install the Particle SDK"
    return None


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    """One run of the SDK script against a fresh simulator: five devices, two renamed or grouped."""
    reason = _sdk_missing_reason()
    if reason:
        pytest.skip(reason)
    assert SDK_PACKAGE.exists(), "the Particle SDK is not installed: run `make test` (or `make particle-sdk`)"
    with ParticleSimulator() as sim:
        ids = sim.add_devices(5)
        sim.set_device(ids[1], name="kitchen-pump", groups=["field"])
        sim.set_device(ids[3], groups=["beta", "night"])
        sim.set_device(ids[4], groups=["other"])
        config = {
            "url": sim.url,
            "token": sim.access_token,
            "product": sim.product,
            "productId": sim.product_id,
            "org": sim.org,
            "ledger": LEDGER,
            "devices": ids,
            "idPart": ids[2][-6:],
            "name": "KITCHEN",  # a partial match in another case
            "groups": ["field", "beta"],
        }
        done = subprocess.run(
            [NODE, str(SDK_DIR / "contract.mjs"), json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        answers = json.loads(done.stdout)
        # The Ledger instances the SDK left behind, as the simulator holds them.
        answers["_held"] = {
            p: {d: sim.ledger_data(d, prefix=p) for d in ids} for p in ("/v1", f"/v1/orgs/{sim.org}")
        }
        answers["_ids"] = ids
        answers["_sdk_version"] = json.loads(SDK_PACKAGE.read_text())["version"]
        return answers


def _ok(answer: dict[str, Any]) -> Any:
    assert "error" not in answer, answer
    assert answer["statusCode"] == 200, answer
    return answer["body"]


def _ids(body: dict[str, Any]) -> list[str]:
    return [d["id"] for d in body["devices"]]


def test_the_pinned_sdk_version_is_the_one_that_ran(run):
    pinned = json.loads((SDK_DIR / "package.json").read_text())["dependencies"]["particle-api-js"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin an exact version"
    assert run["_sdk_version"] == pinned


def test_the_sdk_pages_through_the_product_devices(run):
    ids = run["_ids"]
    pages = [_ok(run[f"devices.page{n}"]) for n in (1, 2, 3)]
    assert [_ids(p) for p in pages] == [ids[0:2], ids[2:4], ids[4:5]]
    assert [p["meta"] for p in pages] == [{"page": n, "per_page": 2, "total_pages": 3} for n in (1, 2, 3)]
    everything = _ok(run["devices.all"])
    assert _ids(everything) == ids and everything["meta"]["total_pages"] == 1
    assert _ids(_ok(run["devices.byProductId"])) == ids  # the product ID works as well as the slug
    for device in everything["devices"]:
        assert set(device) >= DEVICE_FIELDS, DEVICE_FIELDS - set(device)
        assert device["connected"] is device["online"] and device["product_id"] == 1234
        assert re.fullmatch(r"[0-9a-f]{24}", device["id"]) and ISO_MS.match(device["last_heard"])


def test_the_sdk_list_filters_narrow_and_order_the_devices(run):
    ids = run["_ids"]
    assert _ids(_ok(run["devices.deviceId"])) == [ids[2]]  # partial id
    assert _ids(_ok(run["devices.deviceName"])) == [ids[1]]  # partial name
    assert _ids(_ok(run["devices.groups"])) == [ids[1], ids[3]]  # any of the full group names
    by_name_desc = _ok(run["devices.sortNameDesc"])["devices"]
    assert [d["name"] for d in by_name_desc] == sorted((d["name"] for d in by_name_desc), reverse=True)
    assert by_name_desc[-1]["id"] == ids[1]  # "kitchen-pump" sorts before every "pump-..."
    assert _ids(_ok(run["devices.sortIdAsc"])) == sorted(ids)


def test_the_sdk_looks_up_one_product_device(run):
    ids = run["_ids"]
    device = _ok(run["device.get"])
    assert device["id"] == ids[0] and set(device) >= DEVICE_FIELDS  # the device at the top level
    assert _ok(run["device.getByProductId"])["id"] == ids[0]


@pytest.mark.parametrize("scope", ["sandbox", "org"])
def test_the_sdk_sets_replaces_and_merges_ledger_instances(run, scope):
    first = run["_ids"][0]
    default = _ok(run[f"{scope}.setDefault"])["instance"]
    assert set(default) >= INSTANCE_FIELDS
    assert default["name"] == LEDGER and default["scope"] == {"type": "Device", "value": first}
    assert default["data"] == {"blynk_token": "first", "state": "active", "note": "x"}
    assert default["size_bytes"] == len(json.dumps(default["data"]).encode())
    merged = _ok(run[f"{scope}.setMerge"])["instance"]
    assert merged["data"] == {"blynk_token": "first", "state": "revoked", "note": "x"}
    assert _ok(run[f"{scope}.getAfterMerge"])["instance"]["data"] == merged["data"]
    replaced = _ok(run[f"{scope}.setReplace"])["instance"]
    assert replaced["data"] == {"blynk_token": "", "state": "revoked"}  # "note" is gone
    assert replaced["created_at"] == default["created_at"] and ISO_MS.match(replaced["updated_at"])
    got = _ok(run[f"{scope}.get"])["instance"]
    assert got == replaced


@pytest.mark.parametrize("scope", ["sandbox", "org"])
def test_the_sdk_lists_ledger_instances_page_by_page(run, scope):
    ids = run["_ids"]
    page1, page2 = _ok(run[f"{scope}.list.page1"]), _ok(run[f"{scope}.list.page2"])
    assert [i["scope"]["value"] for i in page1["instances"] + page2["instances"]] == ids[:3]
    assert page1["meta"] == {"page": 1, "per_page": 2, "total_pages": 2}
    assert page2["meta"] == {"page": 2, "per_page": 2, "total_pages": 2}
    listed = _ok(run[f"{scope}.list.default"])
    assert listed["meta"] == {"page": 1, "per_page": 100, "total_pages": 1}  # the SDK's documented default
    assert all(set(i) >= INSTANCE_FIELDS for i in listed["instances"])


@pytest.mark.parametrize(("scope", "prefix"), [("sandbox", "/v1"), ("org", "/v1/orgs/tokenflow-org")])
def test_the_sdk_deletes_a_ledger_instance_under_its_own_prefix_only(run, scope, prefix):
    ids = run["_ids"]
    assert _ok(run[f"{scope}.delete"]) == {"ok": True}
    for gone in (f"{scope}.getDeleted", f"{scope}.deleteAgain"):
        assert run[gone]["statusCode"] == 404 and run[gone]["body"]["ok"] is False
    held = run["_held"][prefix]
    assert held[ids[0]] is None and held[ids[1]] == {"blynk_token": ids[1][-4:], "state": "active"}


def _rejected(answer: dict[str, Any], status: int) -> dict[str, Any]:
    assert answer.get("error") is True, answer
    assert answer["statusCode"] == status, answer
    assert answer["bodyIsJson"] is True and answer["contentType"] == "application/json"
    return answer["body"]


@pytest.mark.parametrize(
    "call",
    [
        "401.listDevices",
        "401.getDevice",
        "401.setLedgerInstance",
        "401.getLedgerInstance",
        "401.listLedgerInstances",
        "401.deleteLedgerInstance",
    ],
)
def test_the_sdk_sees_401_with_particles_invalid_token_body(run, call):
    body = _rejected(run[call], 401)
    assert body == {"error": "invalid_token", "error_description": "The access token provided is invalid."}
    assert run[call]["shortErrorDescription"] == body["error_description"]  # what the SDK shows a caller


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("device.unknown", "Device not found."),  # captured from api.particle.io (REFERENCE.md)
        ("device.unknownProduct", "Product not found"),
        ("sandbox.getDeleted", "Ledger instance not found"),
        ("org.getDeleted", "Ledger instance not found"),
        ("sandbox.unknownDevice", "Device not found"),
        ("org.unknownOrg", "Organization not found"),
    ],
)
def test_the_sdk_sees_404_for_what_the_product_does_not_hold(run, call, error):
    assert _rejected(run[call], 404) == {"ok": False, "error": error}


@pytest.mark.parametrize("call", ["429.listDevices", "429.setLedgerInstance"])
def test_the_sdk_sees_429_with_retry_after_past_the_rate_limit(run, call):
    assert _ok(run["429.first"])["devices"]  # the one request the limit allowed
    body = _rejected(run[call], 429)
    assert body["error_description"] and run[call]["shortErrorDescription"] == body["error_description"]
    assert 1 <= int(run[call]["retryAfter"]) <= 60


def test_the_product_ledger_prefix_is_not_served():
    """``/v1/products/{product}/ledgers/...`` is in neither the SDK nor Particle's API reference: the
    simulator answers it as an unknown path, so nothing can come to depend on it."""
    with ParticleSimulator() as sim:
        [device] = sim.add_devices(1)
        path = f"/v1/products/{sim.product}/ledgers/{LEDGER}/instances/{device}"
        auth = {"Authorization": f"Bearer {sim.access_token}"}
        assert sim.handle("PUT", path, {}, auth, {"instance": {"data": {"k": 1}}})[0] == 404
        assert sim.ledger_writes(device) == 0
