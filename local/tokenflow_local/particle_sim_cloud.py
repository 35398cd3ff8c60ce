"""The Particle simulator's cloud: the product's fleet and the API routes Tokenflow uses.

(A little over the usual size: the routes share the path patterns and the fleet they serve.)

Shapes follow REFERENCE.md and are proven against Particle's official JS SDK
(tests/contract/test_particle_sdk.py): product device listing with paging (``devices`` + ``meta``)
and the filters the official SDK sends, the product device lookup, device fields (quarantined and
denied included), Ledger instances under the two path prefixes the SDK builds (``/v1`` and
``/v1/orgs/{org}``; particle-api-js ``_namespacedPath``) with PUT (Replace or Merge), GET, DELETE and
list, bearer-token checks (401), unknown product or device (404). ``/v1/products/{product}/ledgers``
is not served: neither the SDK nor Particle's API reference has it, so it answers 404 like any
unknown path.

This room owns adding, changing and removing devices (``add_device``, ``set_device`` ...), what the
cloud holds (``ledger_data``, ``ledger_writes``), the route templates the request counters use
(``route_of``), and ``_serve``: one authenticated API request, after the faults and the rate limiter
(``particle_sim_faults``) let it through. A PUT hands the new instance to the devices' side
(``particle_sim_device_os``), which syncs it to the device's own copy.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any
from urllib.parse import unquote

from tokenflow_local.particle_sim_device_os import DeviceOS, DeviceSide
from tokenflow_local.particle_sim_state import DEFAULT_LEDGER, Answer, now_iso

LEDGER_PATH = re.compile(
    r"^(?P<prefix>/v1|/v1/orgs/(?P<org>[^/]+))/ledgers/(?P<ledger>[^/]+)/instances(?:/(?P<device>[^/]+))?$"
)
DEVICES_PATH = re.compile(r"^/v1/products/(?P<product>[^/]+)/devices$")
DEVICE_PATH = re.compile(r"^/v1/products/(?P<product>[^/]+)/devices/(?P<device>[^/]+)$")
LEDGER_NAME = re.compile(r"^[a-z0-9-]{1,32}$")
SERIAL_PATH = re.compile(r"^/v1/serial_numbers/(?P<serial>[^/]+)$")
DEFAULT_PER_PAGE = 25
# The Ledger instance list's default page size: particle-api-js 12.0.3 ``listLedgerInstances``
# documents ``perPage`` as "Number of results per page. Default is 100".
DEFAULT_LEDGER_PER_PAGE = 100
MAX_LEDGER_BYTES = 16 * 1024
# Route templates: the keys of the request counters (never a device id or a token).
ROUTE_DEVICES = "/v1/products/{product}/devices"
ROUTE_DEVICE = "/v1/products/{product}/devices/{device_id}"
ROUTE_INSTANCE = "{prefix}/ledgers/{ledger}/instances/{device_id}"
ROUTE_INSTANCES = "{prefix}/ledgers/{ledger}/instances"
ROUTE_OTHER = "other"
# The token and Ledger definition routes `tokenflow doctor` reads (see ``_account_route``).
TOKEN_PATH = "/v1/access_tokens/current"  # noqa: S105 (a path, not a secret)
LEDGER_DEFINITION_PATH = re.compile(r"^(?P<prefix>/v1|/v1/orgs/(?P<org>[^/]+))/ledgers/(?P<ledger>[^/]+)$")
ROUTE_TOKEN = TOKEN_PATH
ROUTE_LEDGER_DEFINITION = "{prefix}/ledgers/{ledger}"
INVALID_TOKEN = {"error": "invalid_token", "error_description": "The access token provided is invalid."}
# Answers captured from api.particle.io for a product device path that names no device of the product.
DEVICE_NOT_FOUND = {"ok": False, "error": "Device not found."}
# Platforms with a cellular modem (Device OS platform ids: boron 13, esomx/E404X 15, bsom 23, b5som 25,
# tracker 26, trackerm 28, msom 35); argon 12 and p2 32 are Wi-Fi. Fills the ``cellular`` field.
CELLULAR_PLATFORMS = frozenset({13, 15, 23, 25, 26, 28, 35})
# The list route's sortAttr values (particle-api-js and Particle's Java/Swift clients document
# deviceId, firmwareVersion and lastConnection; deviceName is accepted too) -> the device field.
SORT_FIELDS = {
    "deviceId": "id",
    "deviceName": "name",
    "firmwareVersion": "firmware_version",
    "lastConnection": "last_handshake_at",
}


class CloudAPI(DeviceOS):
    """The product's fleet, the cloud's Ledger instances and the routes over them."""

    def __init__(self, *, max_per_page: int, **state: Any) -> None:
        super().__init__(**state)
        self.max_per_page = max_per_page
        self._serial = 0
        self.writes: Counter[str] = Counter()  # Ledger PUTs that took effect, per device
        # What GET /v1/access_tokens/current reports about the accepted token (tests change it: an
        # expiry, fewer scopes), and the Ledger definitions by name (tests remove or retype one).
        self.token_info: dict[str, Any] = {
            "expires_at": None,
            "client_id": "tokenflow-api-user",
            "scopes": list(API_USER_SCOPES),
            "orgs": [],
        }
        self.ledger_definitions: dict[str, dict[str, Any]] = {
            DEFAULT_LEDGER: ledger_definition(DEFAULT_LEDGER)
        }
        # The listings' meta name the page count ``total_pages``; some answers say ``total_page``.
        self.meta_total_key = "total_pages"

    # ---- fleet and state ----------------------------------------------------------------------

    def add_device(
        self,
        *,
        quarantined: bool = False,
        denied: bool = False,
        platform_id: int = 32,
        online: bool = True,
        development: bool = False,
        name: str | None = None,
        serial_number: str | None = None,
        groups: list[str] | None = None,
    ) -> str:
        """Add one device; ids are 24 lowercase hex characters, the same for the same order of calls."""
        with self.lock:
            self._serial += 1
            n = self._serial
            device_id = f"e00fce68{self.product_id:06x}{n:010x}"
            now = now_iso()
            self.fleet[device_id] = {
                "id": device_id,
                "name": name or f"pump-{n:04d}",
                "serial_number": serial_number or f"P046AB{n:07d}",
                "platform_id": platform_id,
                "product_id": self.product_id,
                "online": online,
                "last_heard": now,
                "last_handshake_at": now,
                "cellular": platform_id in CELLULAR_PLATFORMS,
                "firmware_version": 3,
                "development": development,
                "quarantined": quarantined,
                "denied": denied,
                "groups": list(groups or []),
                "notes": None,
            }
            self.device_side[device_id] = DeviceSide(online=online)
            self._touch(device_id)
            return device_id

    def add_devices(
        self, count: int, *, quarantined: int = 0, denied: int = 0, platform_id: int = 32
    ) -> list[str]:
        """``count`` devices; the first ``quarantined`` are quarantined, the next ``denied`` denied."""
        return [
            self.add_device(
                quarantined=n < quarantined,
                denied=quarantined <= n < quarantined + denied,
                platform_id=platform_id,
            )
            for n in range(count)
        ]

    def remove_device(self, device_id: str) -> None:
        with self.lock:
            self.fleet.pop(device_id, None)
            self.device_side.pop(device_id, None)
            self._touch(device_id)

    def set_device(self, device_id: str, **changes: Any) -> dict[str, Any]:
        """Change a device's product fields (quarantined, denied, name, groups); its new view."""
        allowed = {"quarantined": bool, "denied": bool, "name": str, "groups": list}
        unknown = set(changes) - set(allowed)
        if unknown:
            raise ValueError(f"unknown device fields: {sorted(unknown)}")
        with self.lock:
            self._settle()
            device = self.fleet[device_id]  # KeyError: no such device
            was_reachable = self._reachable(device_id)
            for name, value in changes.items():
                device[name] = [str(g) for g in value] if name == "groups" else allowed[name](value)
            if self._reachable(device_id) and not was_reachable:  # e.g. out of quarantine: it syncs
                self._connect(device_id)
            self._touch(device_id)
            return dict(device)

    def devices(self) -> list[dict[str, Any]]:
        with self.lock:
            self._settle()
            return [dict(d) for d in self.fleet.values()]

    def ledger_data(
        self, device_id: str, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER
    ) -> dict[str, Any] | None:
        """What the cloud holds for the device (the instance); None when there is none."""
        with self.lock:
            instance = self.ledgers.get((prefix, ledger, device_id))
            return dict(instance["data"]) if instance else None

    def ledger_writes(self, device_id: str) -> int:
        """Ledger PUTs that took effect for this device (under any prefix)."""
        with self.lock:
            return self.writes[device_id]

    # ---- the API routes -----------------------------------------------------------------------

    @staticmethod
    def route_of(path: str) -> str:
        if DEVICES_PATH.match(path):
            return ROUTE_DEVICES
        if DEVICE_PATH.match(path):
            return ROUTE_DEVICE
        if path == TOKEN_PATH:
            return ROUTE_TOKEN
        if LEDGER_DEFINITION_PATH.match(path):
            return ROUTE_LEDGER_DEFINITION
        match = LEDGER_PATH.match(path)
        if match:
            return ROUTE_INSTANCE if match["device"] else ROUTE_INSTANCES
        return ROUTE_OTHER

    def _serve(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any) -> Answer:
        if headers.get("Authorization") != f"Bearer {self.access_token}":
            return 401, {}, dict(INVALID_TOKEN)
        account = self._account_route(method, path)
        if account is not None:
            return account
        ledger_match = LEDGER_PATH.match(path)
        default_per_page = DEFAULT_LEDGER_PER_PAGE if ledger_match else DEFAULT_PER_PAGE
        try:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("per_page", [str(default_per_page)])[0])
        except ValueError:
            return 400, {}, {"ok": False, "error": "page and per_page must be numbers"}
        page, per_page = max(1, page), min(self.max_per_page, max(1, per_page))
        match = DEVICES_PATH.match(path)
        if match:
            if method != "GET":
                return 405, {}, {"ok": False, "error": "Method not allowed"}
            return self._list_devices(unquote(match["product"]), query, page, per_page)
        match = DEVICE_PATH.match(path)
        if match:
            if method != "GET":
                return 405, {}, {"ok": False, "error": "Method not allowed"}
            return self._get_device(unquote(match["product"]), unquote(match["device"]))
        if ledger_match:
            return self._ledger(method, ledger_match, query, body, page, per_page)
        return 404, {}, {"ok": False, "error": "Not found"}

    def _known_product(self, product: str) -> bool:
        return product in (self.product, str(self.product_id))

    def _get_device(self, product: str, device_id: str) -> Answer:
        """Particle's "Get product device information": the device object at the top level."""
        if not self._known_product(product):
            return 404, {}, {"ok": False, "error": "Product not found"}
        with self.lock:
            device = self.fleet.get(device_id)
            if device is None:
                return 404, {}, dict(DEVICE_NOT_FOUND)
            return 200, {}, _device_answer(device)

    def _list_devices(self, product: str, query: dict[str, list[str]], page: int, per_page: int) -> Answer:
        if not self._known_product(product):
            return 404, {}, {"ok": False, "error": "Product not found"}
        # Filtered and sorted on the fleet's own items, and only the page's devices copied into
        # answers: copying all of them for every page cost 100,000 copies per page of 100.
        with self.lock:
            try:
                fleet = _filter_and_sort(list(self.fleet.values()), query)
            except ValueError as exc:
                return 400, {}, {"ok": False, "error": str(exc)}
            chunk = [_device_answer(d) for d in fleet[(page - 1) * per_page : page * per_page]]
        total_pages = max(1, -(-len(fleet) // per_page))
        return (
            200,
            {},
            {
                "devices": chunk,
                "customers": [],
                "meta": {"page": page, "per_page": per_page, self.meta_total_key: total_pages},
            },
        )

    def _ledger(
        self, method: str, match: re.Match, query: dict[str, list[str]], body: Any, page: int, per_page: int
    ) -> Answer:
        if match["org"] and unquote(match["org"]) != self.org:
            return 404, {}, {"ok": False, "error": "Organization not found"}
        prefix, ledger, device = match["prefix"], unquote(match["ledger"]), match["device"]
        if not LEDGER_NAME.match(ledger):
            return 400, {}, {"ok": False, "error": "Invalid ledger name"}
        with self.lock:
            if device is None:
                if method != "GET":
                    return 405, {}, {"ok": False, "error": "Method not allowed"}
                instances = [
                    self._instance_view(k, v)
                    for k, v in sorted(self.ledgers.items())
                    if k[:2] == (prefix, ledger)
                ]
                total = max(1, -(-len(instances) // per_page))
                chunk = instances[(page - 1) * per_page : page * per_page]
                meta = {"page": page, "per_page": per_page, self.meta_total_key: total}
                return 200, {}, {"instances": chunk, "meta": meta}
            if device not in self.fleet:
                return 404, {}, {"ok": False, "error": "Device not found"}
            key = (prefix, ledger, device)
            if method == "GET":
                if key not in self.ledgers:
                    return 404, {}, {"ok": False, "error": "Ledger instance not found"}
                return 200, {}, {"instance": self._instance_view(key, self.ledgers[key])}
            if method == "DELETE":
                # The cloud's instance only: a device keeps its flash copy (Device OS Ledger docs,
                # "Ledger synchronization": a Cloud-to-Device Ledger is stored in the device's flash;
                # no sync of a deletion is documented).
                if self.ledgers.pop(key, None) is None:
                    return 404, {}, {"ok": False, "error": "Ledger instance not found"}
                return 200, {}, {"ok": True}
            if method == "PUT":
                return self._put_instance(key, query, body)
        return 405, {}, {"ok": False, "error": "Method not allowed"}

    def _put_instance(self, key: tuple[str, str, str], query: dict[str, list[str]], body: Any) -> Answer:
        instance = body.get("instance") if isinstance(body, dict) else None
        data = instance.get("data") if isinstance(instance, dict) else None
        if not isinstance(data, dict):
            return 400, {}, {"ok": False, "error": "instance.data must be an object"}
        mode = query.get("set_mode", ["Replace"])[0]
        if mode not in ("Replace", "Merge"):
            return 400, {}, {"ok": False, "error": "set_mode must be Replace or Merge"}
        now = now_iso()
        current = self.ledgers.get(key)
        merged = {**(current["data"] if current and mode == "Merge" else {}), **data}
        if len(json.dumps(merged).encode()) > MAX_LEDGER_BYTES:
            return 400, {}, {"ok": False, "error": "Ledger data exceeds 16 KB"}
        self.ledgers[key] = {
            "data": merged,
            "created_at": current["created_at"] if current else now,
            "updated_at": now,
        }
        self.writes[key[2]] += 1
        self._schedule_sync(key[2], (key[0], key[1]))
        return 200, {}, {"instance": self._instance_view(key, self.ledgers[key])}

    @staticmethod
    def _instance_view(key: tuple[str, str, str], instance: dict[str, Any]) -> dict[str, Any]:
        data = instance["data"]
        return {
            "name": key[1],
            "scope": {"type": "Device", "value": key[2]},
            "data": dict(data),
            "size_bytes": len(json.dumps(data).encode()),
            "created_at": instance["created_at"],
            "updated_at": instance["updated_at"],
        }

    def _account_route(self, method: str, path: str) -> Answer | None:
        """The current token's description and a Ledger definition; None for any other path.

        ``GET /v1/access_tokens/current`` is what Particle's CLI calls to validate a token; it answers
        ``expires_at`` (null: never expires), ``client_id``, ``scopes`` (empty for an unscoped user
        token) and ``orgs`` (particle-api-js 12.0.3 src/types/responses.ts ``CurrentTokenInfo``).
        ``GET {prefix}/ledgers/{name}`` is particle-api-js ``getLedger`` (``_namespacedPath``: ``/v1``
        or ``/v1/orgs/{org}``); a definition has ``name``, ``description``, ``scope`` (Owner, Product,
        Device), ``direction`` (Downstream: cloud to device; Upstream: device to cloud), and times
        (``LedgerDefinition``). Unconfirmed: whether the answer wraps the definition as
        ``{"ledger": ...}`` as the instance routes wrap theirs (``{"instance": ...}``); served wrapped.
        """
        if path == TOKEN_PATH:
            if method != "GET":
                return 405, {}, {"ok": False, "error": "Method not allowed"}
            with self.lock:
                return 200, {}, json.loads(json.dumps(self.token_info))
        match = SERIAL_PATH.match(path)
        if match:  # "Look up device identification from a serial number" (particle.py cites it)
            if method != "GET":
                return 405, {}, {"ok": False, "error": "Method not allowed"}
            serial = unquote(match["serial"])
            with self.lock:
                found = [d for d in self.fleet.values() if d.get("serial_number") == serial]
            if not found:
                return 404, {}, {"ok": False, "error": "Serial number not found"}
            return (
                200,
                {},
                {"ok": True, "device_id": found[0]["id"], "platform_id": found[0].get("platform_id")},
            )
        match = LEDGER_DEFINITION_PATH.match(path)
        if match is None:
            return None
        if method != "GET":
            return 405, {}, {"ok": False, "error": "Method not allowed"}
        if match["org"] and unquote(match["org"]) != self.org:
            return 404, {}, {"ok": False, "error": "Organization not found"}
        with self.lock:
            definition = self.ledger_definitions.get(unquote(match["ledger"]))
            if definition is None:
                return 404, {}, {"ok": False, "error": "Ledger not found"}
            return 200, {}, {"ledger": dict(definition)}


# The scopes the simulated API user's token carries: what the functions call (see tokenflow doctor).
API_USER_SCOPES = (
    "devices:list",
    "devices:get",
    "ledger.instances:get",
    "ledger.instances:set",
    "ledger.instances:delete",
)


def ledger_definition(
    name: str, *, scope: str = "Device", direction: str = "Downstream", description: str = ""
) -> dict[str, Any]:
    """A Ledger definition as particle-api-js ``LedgerDefinition`` describes it (default: the
    device-scoped Cloud-to-Device Ledger Tokenflow writes)."""
    now = now_iso()
    return {
        "name": name,
        "description": description,
        "scope": scope,
        "direction": direction,
        "created_at": now,
        "updated_at": now,
        "archived_at": None,
    }


def _device_answer(device: dict[str, Any]) -> dict[str, Any]:
    """A device as the product device routes answer it. Besides the fleet's fields, the SDK's
    ``DeviceInfo`` type (particle-api-js 12.0.3 src/types/responses.ts) declares ``connected`` (the
    older name of ``online``) and ``last_app`` as always present."""
    return {**device, "connected": device["online"], "last_app": None}


def _filter_and_sort(devices: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The list route's filters as the official SDK sends them (particle-api-js ``listDevices``:
    ``deviceId`` and ``deviceName`` partial matches, ``groups`` a comma-separated list of full group
    names, ``serialNumber`` partial, ``sortAttr``/``sortDir``). Without ``sortAttr`` Particle sorts by
    last connection, newest first; the simulator keeps the order devices were added instead, so pages
    stay stable while devices connect. Unconfirmed: case rules of the partial matches (here: id and
    serial as given, name ignoring case) and the default ``sortDir`` (here ``asc``)."""

    def arg(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values and values[0] != "" else None

    if (wanted := arg("deviceId")) is not None:
        devices = [d for d in devices if wanted.lower() in d["id"]]
    if (wanted := arg("deviceName")) is not None:
        devices = [d for d in devices if wanted.lower() in str(d.get("name") or "").lower()]
    if (wanted := arg("serialNumber")) is not None:
        devices = [d for d in devices if wanted in str(d.get("serial_number") or "")]
    if (wanted := arg("groups")) is not None:
        names = {g.strip() for g in wanted.split(",") if g.strip()}
        devices = [d for d in devices if names & set(d.get("groups") or [])]
    sort_attr, sort_dir = arg("sortAttr"), arg("sortDir")
    if sort_dir is not None and sort_dir not in ("asc", "desc"):
        raise ValueError("sortDir must be asc or desc")
    if sort_attr is not None:
        if sort_attr not in SORT_FIELDS:
            raise ValueError(f"sortAttr must be one of {', '.join(SORT_FIELDS)}")
        key = SORT_FIELDS[sort_attr]
        devices = sorted(
            devices, key=lambda d: (d.get(key) is None, d.get(key) or 0), reverse=sort_dir == "desc"
        )
    return devices
