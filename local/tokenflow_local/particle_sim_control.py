"""The Particle simulator's control API: its own knobs, from Python or over HTTP under ``/_sim/``.

No auth (the simulator's own knobs, never part of Particle's API): ``GET /_sim/stats``,
``POST /_sim/faults``, ``POST /_sim/rate-limit``, ``GET|POST /_sim/devices``,
``POST /_sim/devices/{id}`` (quarantined, denied, name, groups), ``POST /_sim/devices/{id}/online``,
``POST /_sim/devices/{id}/reboot``, ``GET /_sim/device-ledgers`` (every device's own copy, in one
answer, with the simulator's change ``version``; with ``?since=<version>&wait=<seconds>`` a long poll
that answers, as soon as something changes, only the devices changed since that version;
``POST /_sim/wake`` ends such polls at once),
``POST /_sim/ledger-sync`` (the sync delay), ``GET /_sim/ledgers``, ``POST /_sim/reset-stats``,
``POST /_sim/events`` (a device's publish, forwarded through the integrations).

This room owns only the translation of those routes into the Python methods of the rooms below
(``particle_sim_faults``, ``particle_sim_cloud``, ``particle_sim_device_os``) and their 400/404
answers; requests to it are not counted in the API statistics.
"""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from tokenflow_local.particle_sim_cloud import DEVICE_NOT_FOUND
from tokenflow_local.particle_sim_faults import Faults, RequestGate
from tokenflow_local.particle_sim_integrations import Integrations
from tokenflow_local.particle_sim_state import DEFAULT_LEDGER, Answer

# The longest a ``GET /_sim/device-ledgers?since=..&wait=..`` long poll is held open.
MAX_WAIT_SECONDS = 20.0

CONTROL_DEVICE_PATH = re.compile(r"^/_sim/devices/(?P<device>[0-9a-f]{24})(?:/(?P<action>online|reboot))?$")


class ControlAPI(RequestGate):
    """``/_sim/`` routes over the simulator's Python methods."""

    integrations: Integrations

    def control(self, method: str, path: str, body: Any, query: dict[str, list[str]] | None = None) -> Answer:
        body = body if isinstance(body, dict) else {}
        query = query or {}
        device_route = CONTROL_DEVICE_PATH.match(path)
        if device_route and method == "POST":
            return self._control_device(device_route["device"], device_route["action"], body)
        if path == "/_sim/events" and method == "POST":
            return self._publish_event(body)
        if path == "/_sim/device-ledgers" and method == "GET":
            prefix = query.get("prefix", ["/v1"])[0]
            ledger = query.get("ledger", [DEFAULT_LEDGER])[0]
            if "since" in query:  # a long poll: only what changed after that version
                since = int(query["since"][0])
                wait = min(float(query.get("wait", ["0"])[0]), MAX_WAIT_SECONDS)
                version, views = self.wait_for_changes(since, wait, prefix, ledger)
                return 200, {}, {"devices": views, "version": version}
            with self.lock:
                return 200, {}, {"devices": self.device_views(prefix, ledger), "version": self.version}
        if path == "/_sim/wake" and method == "POST":  # ends the device-ledgers long polls
            self.wake()
            return 200, {}, {"ok": True}
        if path == "/_sim/ledger-sync" and method == "POST":
            self.set_sync_delay(float(body.get("delay_seconds", 0.0)))
            return 200, {}, {"ok": True, "delay_seconds": self.sync_delay}
        if path == "/_sim/stats" and method == "GET":
            return 200, {}, self.stats()
        if path == "/_sim/reset-stats" and method == "POST":
            self.reset_stats()
            return 200, {}, {"ok": True}
        if path == "/_sim/faults" and method == "POST":
            known = {f.name for f in fields(Faults)} - {"rng"} | {"seed"}
            unknown = set(body) - known
            if unknown:
                return 400, {}, {"ok": False, "error": f"unknown fault settings: {sorted(unknown)}"}
            self.set_faults(**body)
            return 200, {}, {"ok": True}
        if path == "/_sim/rate-limit" and method == "POST":
            self.set_rate_limit(
                body.get("requests"), float(body.get("window_seconds", 1.0)), mode=body.get("mode")
            )
            return 200, {}, {"ok": True, "rate_limit": self.rate_limit, "mode": self.rate_limit_mode}
        if path == "/_sim/devices" and method == "POST":
            ids = self.add_devices(
                int(body.get("count", 1)),
                quarantined=int(body.get("quarantined", 0)),
                denied=int(body.get("denied", 0)),
                platform_id=int(body.get("platform_id", 32)),
            )
            return 200, {}, {"ids": ids}
        if path == "/_sim/devices" and method == "GET":
            return 200, {}, {"devices": self.devices()}
        if path == "/_sim/ledgers" and method == "GET":
            with self.lock:
                instances = [
                    {"prefix": k[0], "ledger": k[1], "device_id": k[2], "data": dict(v["data"])}
                    for k, v in self.ledgers.items()
                ]
            return 200, {}, {"instances": instances}
        return 404, {}, {"ok": False, "error": "unknown control route"}

    def _publish_event(self, body: dict[str, Any]) -> Answer:
        """A device's ``Particle.publish``: ``{"device_id", "name", "data"}``, forwarded through the
        product's integrations (``particle_sim_integrations``) it triggers."""
        device_id, name, data = body.get("device_id"), body.get("name"), body.get("data", "")
        if not isinstance(device_id, str) or not isinstance(name, str) or not isinstance(data, str):
            return 400, {}, {"ok": False, "error": "device_id, name and data (strings) are required"}
        with self.lock:
            known = device_id in self.fleet
        if not known:
            return 404, {}, {"ok": False, "error": DEVICE_NOT_FOUND}
        published_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        hooks = self.integrations.publish(device_id, name, data, published_at)
        return 200, {}, {"ok": True, "webhooks": hooks}

    def _control_device(self, device_id: str, action: str | None, body: dict[str, Any]) -> Answer:
        with self.lock:
            if device_id not in self.fleet:
                return 404, {}, dict(DEVICE_NOT_FOUND)
        try:
            if action == "online":
                if not isinstance(body.get("online"), bool):
                    return 400, {}, {"ok": False, "error": "online must be true or false"}
                self.set_online(device_id, body["online"])
            elif action == "reboot":
                online = body.get("online")
                if online is not None and not isinstance(online, bool):
                    return 400, {}, {"ok": False, "error": "online must be true, false or absent"}
                self.reboot(device_id, online=online)
            else:
                self.set_device(device_id, **body)
        except (TypeError, ValueError) as exc:
            return 400, {}, {"ok": False, "error": str(exc)}
        return 200, {}, {"device": self.device_view(device_id)}
