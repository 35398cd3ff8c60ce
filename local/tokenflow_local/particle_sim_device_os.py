"""The Particle simulator's devices' side, as Device OS keeps it.

Every simulated device holds its OWN copy of each of its Cloud-to-Device Ledger instances (its
flash). A PUT reaches the copy of an online device after ``sync_delay`` seconds (0: at once), or at
the device's next connect when it is offline; a DELETE never reaches it (Particle documents no way for
a deleted instance to reach the device). Each device also has a boot number and, per Ledger, whether
it has synced since that boot (``Ledger.lastSynced()`` reads the flash copy at boot, before any sync).

This room owns the per-device records (``DeviceSide``, ``LedgerCopy``), the queue of syncs on their
way (applied by ``settle``, which every reader calls first), connecting, going offline and rebooting,
and the views of what a device holds (``device_ledger``, ``device_view``, ``device_views``). The cloud's
own instances live in ``SimState.ledgers``; the routes that change them (``particle_sim_cloud``) call
``_schedule_sync``.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenflow_local.particle_sim_state import DEFAULT_LEDGER, SimState, now_iso


@dataclass
class LedgerCopy:
    """A device's own copy of one Ledger instance, as its flash holds it."""

    data: dict[str, Any]
    synced_at: str  # when it last synced (wall time)
    cloud_updated_at: str  # the cloud instance's updated_at it came from


@dataclass
class DeviceSide:
    """What the device itself knows: online or not, which boot, its Ledger copies."""

    online: bool
    boot: int = 1
    copies: dict[tuple[str, str], LedgerCopy] = field(default_factory=dict)  # (prefix, ledger)
    synced_since_boot: set[tuple[str, str]] = field(default_factory=set)
    pending: dict[tuple[str, str], float] = field(default_factory=dict)  # sync due at (sim clock)
    syncs: int = 0


class DeviceOS(SimState):
    """Each device's flash copies and the syncs that bring the cloud's instances to them."""

    def __init__(self, *, sync_delay: float, clock: Callable[[], float], **state: Any) -> None:
        super().__init__(**state)
        self.device_side: dict[str, DeviceSide] = {}  # what each device holds (its flash)
        # Seconds from a cloud change (or a connect) to the device's copy; Particle says an online
        # device usually has it "within 30 seconds" (docs: Ledger configuration).
        self.sync_delay = float(sync_delay)
        self.clock = clock
        # Syncs on their way: (due, sequence, device id, (prefix, ledger)); an entry whose device no
        # longer expects it (offline, rebooted) is skipped when it comes due.
        self._sync_queue: list[tuple[float, int, str, tuple[str, str]]] = []
        self._sync_seq = 0
        # Every change to what a device holds or is (a sync landing, online, a boot, its product
        # fields, joining or leaving the fleet) bumps ``version`` and wakes ``changes``: the
        # simulated fleet waits on it (``wait_for_changes``) instead of reading every device in turn.
        self.version = 0
        self.changes = threading.Condition(self.lock)
        self._changed: dict[str, int] = {}  # device id -> the version of its last change
        self._wakes = 0

    def device_ledger(
        self, device_id: str, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER
    ) -> dict[str, Any] | None:
        """What the device itself sees: its last synced copy (None: it never received one)."""
        with self.lock:
            self._settle()
            side = self.device_side[device_id]
            copy = side.copies.get((prefix, ledger))
            return dict(copy.data) if copy else None

    def device_view(
        self, device_id: str, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER
    ) -> dict[str, Any]:
        """The device's state for one Ledger: online, boot, its copy, when it synced."""
        with self.lock:
            self._settle()
            return self._device_view(device_id, (prefix, ledger))

    def device_views(self, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER) -> list[dict[str, Any]]:
        with self.lock:
            self._settle()
            return [self._device_view(d, (prefix, ledger)) for d in self.fleet]

    def wait_for_changes(
        self, since: int, timeout: float, prefix: str = "/v1", ledger: str = DEFAULT_LEDGER
    ) -> tuple[int, list[dict[str, Any]]]:
        """Block until some device changed after ``since`` (a ``version``) or ``timeout`` seconds
        pass; the current version and the views of the devices changed since (none at a timeout).
        A sync on its way (``sync_delay``) wakes the wait when it is due."""
        deadline = self.clock() + max(0.0, timeout)
        with self.lock:
            wakes = self._wakes
            while True:
                self._settle()
                if self._wakes != wakes:  # wake(): the waiter is stopping
                    return self.version, []
                if self.version > since:
                    key = (prefix, ledger)
                    changed = [d for d, v in self._changed.items() if v > since and d in self.fleet]
                    return self.version, [self._device_view(d, key) for d in changed]
                left = deadline - self.clock()
                if left <= 0:
                    return self.version, []
                due = self._sync_queue[0][0] - self.clock() if self._sync_queue else left
                self.changes.wait(max(0.001, min(left, due)))

    def wake(self) -> None:
        """End every ``wait_for_changes`` now (with no changes): its caller is stopping."""
        with self.lock:
            self._wakes += 1
            self.changes.notify_all()

    def _touch(self, device_id: str) -> None:
        """Note a change to ``device_id`` (callers hold ``lock``) and wake whoever waits for one."""
        self.version += 1
        self._changed[device_id] = self.version
        self.changes.notify_all()

    def _device_view(self, device_id: str, key: tuple[str, str]) -> dict[str, Any]:
        device, side = self.fleet[device_id], self.device_side[device_id]
        copy = side.copies.get(key)
        return {
            "device_id": device_id,
            "online": side.online,
            "quarantined": bool(device.get("quarantined")),
            "denied": bool(device.get("denied")),
            "boot": side.boot,
            "prefix": key[0],
            "ledger": key[1],
            "data": dict(copy.data) if copy else None,
            "synced_at": copy.synced_at if copy else None,
            "synced_since_boot": key in side.synced_since_boot,
            "syncs": side.syncs,
        }

    def set_online(self, device_id: str, online: bool) -> None:
        """Connect a device to the cloud (it syncs its Ledgers) or take it offline."""
        with self.lock:
            self._settle()
            device, side = self.fleet[device_id], self.device_side[device_id]
            was = side.online
            side.online = device["online"] = bool(online)
            if side.online and not was:
                device["last_heard"] = device["last_handshake_at"] = now_iso()
                self._connect(device_id)
            elif not side.online:
                side.pending.clear()  # a sync under way is lost; the next connect syncs again
            self._touch(device_id)

    def reboot(self, device_id: str, *, online: bool | None = None) -> int:
        """Restart a device: it keeps its flash copies but has not synced since this boot; it
        reconnects (and syncs) when it is, or is told to be, online. The new boot number."""
        with self.lock:
            self._settle()
            device, side = self.fleet[device_id], self.device_side[device_id]
            side.boot += 1
            side.synced_since_boot.clear()
            side.pending.clear()
            if online is not None:
                side.online = device["online"] = bool(online)
            if side.online:
                device["last_heard"] = device["last_handshake_at"] = now_iso()
                self._connect(device_id)
            self._touch(device_id)
            return side.boot

    def set_sync_delay(self, seconds: float) -> None:
        with self.lock:
            self.sync_delay = max(0.0, float(seconds))

    def settle(self) -> None:
        """Apply every sync whose time has come (every reader does this first)."""
        with self.lock:
            self._settle()

    def _reachable(self, device_id: str) -> bool:
        """Online, and neither quarantined nor denied (such a device gets no product services:
        an assumption; Particle documents only that a quarantined device cannot publish)."""
        device, side = self.fleet.get(device_id), self.device_side.get(device_id)
        if device is None or side is None:
            return False
        return side.online and not device.get("quarantined") and not device.get("denied")

    def _connect(self, device_id: str) -> None:
        """A connect: every instance the cloud holds for the device syncs to it."""
        for prefix, ledger, device in list(self.ledgers):
            if device == device_id:
                self._schedule_sync(device_id, (prefix, ledger))

    def _schedule_sync(self, device_id: str, key: tuple[str, str]) -> None:
        if not self._reachable(device_id):
            return  # offline: it syncs at its next connect
        side = self.device_side[device_id]
        if key in side.pending:
            return  # a change while a sync is on its way rides along: it carries what the cloud holds
        due = self.clock() + self.sync_delay
        side.pending[key] = due
        self._sync_seq += 1
        heapq.heappush(self._sync_queue, (due, self._sync_seq, device_id, key))
        self._settle()
        # A waiting ``wait_for_changes`` sleeps until the sync it knew of is due: this one may be
        # due sooner, so it looks again.
        self.changes.notify_all()

    def _settle(self) -> None:
        now = self.clock()
        while self._sync_queue and self._sync_queue[0][0] <= now:
            due, _, device_id, key = heapq.heappop(self._sync_queue)
            side = self.device_side.get(device_id)
            if side is None or side.pending.get(key) != due:
                continue  # went offline or rebooted meanwhile: the next connect syncs
            del side.pending[key]
            if not self._reachable(device_id):
                continue
            instance = self.ledgers.get((*key, device_id))
            if instance is None:
                continue  # deleted in the cloud: nothing reaches the device, which keeps its copy
            side.copies[key] = LedgerCopy(dict(instance["data"]), now_iso(), instance["updated_at"])
            side.synced_since_boot.add(key)
            side.syncs += 1
            self._touch(device_id)
