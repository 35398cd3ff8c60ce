"""A Particle Cloud simulator: the part of the API Tokenflow uses, over real HTTP.

Shapes follow REFERENCE.md: product device listing with paging (``devices`` + ``meta``) and the
filters the official SDK sends, the product device lookup, device fields (quarantined and denied
included), Ledger instances under the two path prefixes the official SDK builds (``/v1``,
``/v1/orgs/{org}``) with PUT (Replace or Merge), GET, DELETE and list, bearer-token checks
(401), unknown product or device (404), a rate limiter answering 429 (with ``Retry-After`` unless
told otherwise), and fault injection (latency, error rate, timeouts and dropped connections, 401)
for tests and benchmarks.

The devices' side, as Device OS keeps it: every simulated device holds its OWN copy of each of its
Cloud-to-Device Ledger instances (its flash). A PUT reaches the copy of an online device after
``sync_delay`` seconds (0: at once), or at the device's next connect when it is offline; a DELETE never
reaches it (Particle documents no way for a deleted instance to reach the device). Each device also
has a boot number and, per Ledger, whether it has synced since that boot (``Ledger.lastSynced()``
reads the flash copy at boot, before any sync). ``ledger_data`` is what the cloud holds,
``device_ledger`` what the device sees.

Control from Python (``ParticleSimulator``) or over HTTP under ``/_sim/`` (no auth):
``GET /_sim/stats``, ``POST /_sim/faults``, ``POST /_sim/rate-limit``, ``GET|POST /_sim/devices``,
``POST /_sim/devices/{id}`` (quarantined, denied, name, groups), ``POST /_sim/devices/{id}/online``,
``POST /_sim/devices/{id}/reboot``, ``GET /_sim/device-ledgers`` (every device's own copy, in one
answer), ``POST /_sim/ledger-sync`` (the sync delay), ``GET /_sim/ledgers``, ``POST /_sim/reset-stats``.

The rooms, each a layer over the one before it (``ParticleSimulator`` is the top one):

- ``particle_sim_state``: the product, its fleet and the cloud's Ledger instances, under one lock;
- ``particle_sim_device_os``: each device's flash copies, the sync queue, online and reboot;
- ``particle_sim_cloud``: the product's fleet and the API routes (devices, Ledger instances);
- ``particle_sim_faults``: faults, the rate limiter and the request counters in front of the routes;
- ``particle_sim_control``: the ``/_sim/`` control API;
- ``particle_sim_http``: the request handler;
- this module: ``ParticleSimulator`` (its HTTP server and lifecycle) and ``main``. The names other
  code imports from here (``ParticleSimulator``, the ``ROUTE_*`` templates, ``Faults`` ...) stay here.

    python -m tokenflow_local.particle_sim --port 4000 --devices 25
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from tokenflow_local.particle_sim_cloud import (
    CELLULAR_PLATFORMS,
    DEFAULT_PER_PAGE,
    DEVICE_NOT_FOUND,
    DEVICE_PATH,
    DEVICES_PATH,
    INVALID_TOKEN,
    LEDGER_NAME,
    LEDGER_PATH,
    MAX_LEDGER_BYTES,
    ROUTE_DEVICE,
    ROUTE_DEVICES,
    ROUTE_INSTANCE,
    ROUTE_INSTANCES,
    ROUTE_OTHER,
    SORT_FIELDS,
)
from tokenflow_local.particle_sim_control import CONTROL_DEVICE_PATH, ControlAPI
from tokenflow_local.particle_sim_device_os import DeviceSide, LedgerCopy
from tokenflow_local.particle_sim_faults import Faults
from tokenflow_local.particle_sim_http import handler_class
from tokenflow_local.particle_sim_integrations import Integrations
from tokenflow_local.particle_sim_state import DEFAULT_LEDGER, DROP, Answer

__all__ = [
    "CELLULAR_PLATFORMS",
    "CONTROL_DEVICE_PATH",
    "DEFAULT_LEDGER",
    "DEFAULT_PER_PAGE",
    "DEVICES_PATH",
    "DEVICE_NOT_FOUND",
    "DEVICE_PATH",
    "DROP",
    "INVALID_TOKEN",
    "LEDGER_NAME",
    "LEDGER_PATH",
    "MAX_LEDGER_BYTES",
    "ROUTE_DEVICE",
    "ROUTE_DEVICES",
    "ROUTE_INSTANCE",
    "ROUTE_INSTANCES",
    "ROUTE_OTHER",
    "SORT_FIELDS",
    "Answer",
    "DeviceSide",
    "Faults",
    "LedgerCopy",
    "ParticleSimulator",
    "main",
]


class ParticleSimulator(ControlAPI):
    """The simulator: every room's methods (see the module docstring), served over HTTP."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        product: str = "tokenflow-demo",
        product_id: int = 1234,
        org: str = "tokenflow-org",
        access_token: str = "sim-access-token",  # noqa: S107 (the simulator's own token)
        max_per_page: int = 100,
        rate_limit: tuple[int, float] | None = None,
        rate_limit_mode: str = "sliding",
        rate_limit_retry_after: bool = True,
        sync_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            product=product,
            product_id=product_id,
            org=org,
            access_token=access_token,
            max_per_page=max_per_page,
            rate_limit=rate_limit,
            rate_limit_mode=rate_limit_mode,
            rate_limit_retry_after=rate_limit_retry_after,
            sync_delay=sync_delay,
            clock=clock,
        )
        self.integrations = Integrations()
        self._server = ThreadingHTTPServer((host, port), handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}"

    def start(self) -> ParticleSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="particle-sim",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.wake()  # no long poll outlives the server
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ParticleSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Particle Cloud simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--devices", type=int, default=25)
    parser.add_argument("--quarantined", type=int, default=1)
    parser.add_argument("--denied", type=int, default=0)
    parser.add_argument("--product", default="tokenflow-demo")
    parser.add_argument("--org", default="tokenflow-org")
    parser.add_argument("--access-token", default="sim-access-token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")
    parser.add_argument("--rate", default="", help="rate limit as REQUESTS/SECONDS, e.g. 10000/300")
    parser.add_argument(
        "--sync-delay", type=float, default=0.0, help="seconds until a Ledger change reaches an online device"
    )
    args = parser.parse_args(argv)
    sim = ParticleSimulator(
        args.host,
        args.port,
        product=args.product,
        org=args.org,
        access_token=args.access_token,
        sync_delay=args.sync_delay,
    )
    sim.add_devices(args.devices, quarantined=args.quarantined, denied=args.denied)
    if args.latency:
        sim.set_faults(latency=args.latency)
    if args.rate:
        requests, seconds = args.rate.split("/")
        sim.set_rate_limit(int(requests), float(seconds))
    sim.start()
    print(f"Particle simulator on {sim.url} (product {sim.product}, {args.devices} devices)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
