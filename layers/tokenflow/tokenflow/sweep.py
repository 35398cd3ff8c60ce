"""Find the devices that need work and queue them for the assign workers.

Pages through every device of the Particle product (one Particle request and one BatchGetItem per
page) and queues, in batches of ten messages:
- devices Tokenflow has never seen;
- waiting devices, when tokens are available;
- devices whose Ledger write (or cleared state) is pending for longer than ``stale_after`` seconds
  (a worker died), or failed with a retryable error (``tokenflow.rules.needs_work``).
Quarantined and denied devices are skipped: they never get a token. A fleet where every device is
done costs no writes and no messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tokenflow import rules
from tokenflow.assign_queue import AssignQueue
from tokenflow.assignment import AssignRequest
from tokenflow.observability import logger, metrics
from tokenflow.particle import Device, DevicePage
from tokenflow.store import Store


class DeviceLister(Protocol):
    def iter_device_pages(self, per_page: int = 100) -> Iterator[DevicePage]: ...


@dataclass
class SweepResult:
    pages: int = 0
    devices: int = 0
    skipped_quarantined: int = 0
    skipped_denied: int = 0
    queued: dict[str, int] = field(default_factory=dict)
    available_tokens: int = 0

    @property
    def queued_total(self) -> int:
        return sum(self.queued.values())


class Sweeper:
    def __init__(
        self,
        store: Store,
        particle: DeviceLister,
        queue: AssignQueue,
        *,
        stale_after: int = 900,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.particle = particle
        self.queue = queue
        self.stale_after = stale_after
        self.now = now

    def sweep(self, per_page: int = 100) -> SweepResult:
        result = SweepResult()
        result.available_tokens = self.store.summary()["tokens"]["available"]
        stale_before = (self.now() - timedelta(seconds=self.stale_after)).isoformat().replace("+00:00", "Z")
        for page in self.particle.iter_device_pages(per_page=per_page):
            result.pages += 1
            result.devices += len(page.devices)
            eligible: list[Device] = []
            for device in page.devices:
                if device.quarantined:
                    result.skipped_quarantined += 1
                elif device.denied:
                    result.skipped_denied += 1
                else:
                    eligible.append(device)
            known = self.store.get_devices([d.id for d in eligible]) if eligible else {}
            requests = []
            for device in eligible:
                reason = rules.needs_work(known.get(device.id), result.available_tokens, stale_before)
                if reason:
                    item = known.get(device.id)
                    requests.append(
                        AssignRequest(device.id, item.get("state") if item else None, reason, _fields(device))
                    )
                    result.queued[reason] = result.queued.get(reason, 0) + 1
            # Devices that could not be queued are found again by the next sweep.
            self.queue.send(requests)
        metrics.add_metric(name="AvailableTokens", unit="Count", value=result.available_tokens)
        metrics.add_metric(name="DevicesQueued", unit="Count", value=result.queued_total)
        logger.info("Sweep finished", extra={"result": result.__dict__})
        return result


def _fields(device: Device) -> dict[str, Any]:
    return {
        k: v
        for k, v in (
            ("name", device.name),
            ("serial_number", device.serial_number),
            ("platform_id", device.platform_id),
        )
        if v is not None
    }
