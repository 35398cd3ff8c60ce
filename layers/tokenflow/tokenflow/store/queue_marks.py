"""Queued marks: which devices have a message in the assign queue that no worker has handled yet.

One small item per device (``keys.Keys.queued``) with ``queued_at``, the time its message was
sent. A mark is its own item, not an attribute of the device item: a device Tokenflow has never
seen has no item yet, and the rules create it with a Put that requires it to be absent
(``transactions.write_item``); an attribute on the device item would also race the rules' guarded
writes for nothing. A handled mark stays as its key and device id (a few dozen bytes per device).

- ``mark``: a conditional UpdateItem that sets ``queued_at`` only when no mark is there or the one
  there is older than the window (its message was lost, or went to the dead-letter queue): True
  means "send it now", False "a message for it is already waiting".
- ``unmark``: the worker handled the message that carried ``queued_at`` (or the send failed):
  the mark goes, but only if it is still that message's, so a worker holding an old message never
  removes the mark of a newer one.

The sweep marks a page of devices at a time (``read`` then ``put``: one BatchGetItem per 100 devices
and one BatchWriteItem per 25, rather than one conditional write per device); a worker's claim
deletes the mark inside its own transaction (``Keys.queued`` in ``transactions.apply``), so a
served device costs no call of its own for its mark. ``unmark`` is left for the few messages that
end without a transaction (a device already done, one that keeps waiting).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenflow.store.codec import to_item
from tokenflow.store.keys import Keys
from tokenflow.store.table import Table


class QueueMarks:
    def __init__(self, db: Table) -> None:
        self.db = db

    def mark(self, device_id: str, queued_at: str, stale_before: str) -> bool:
        """Mark the device queued at ``queued_at``; False when a mark newer than ``stale_before`` is there."""
        answer = self.db.update_if(
            Keys.queued(device_id),
            ConditionExpression="attribute_not_exists(queued_at) OR queued_at < :stale",
            UpdateExpression="SET queued_at = :at, device_id = :device",
            ExpressionAttributeValues=to_item(
                {":stale": stale_before, ":at": queued_at, ":device": device_id}
            ),
        )
        return answer is not None

    def unmark(self, device_id: str, queued_at: str) -> bool:
        """Remove the mark set at ``queued_at``; False when there is none, or a newer one."""
        answer = self.db.update_if(
            Keys.queued(device_id),
            ConditionExpression="queued_at = :at",
            UpdateExpression="REMOVE queued_at",
            ExpressionAttributeValues=to_item({":at": queued_at}),
        )
        return answer is not None

    def read(self, device_ids: Sequence[str]) -> dict[str, str]:
        """The marks of these devices (device id -> ``queued_at``), one BatchGetItem per 100; a
        device without a mark is left out."""
        found = self.db.batch_get([Keys.queued(d) for d in dict.fromkeys(device_ids)])
        return {str(i["device_id"]): str(i["queued_at"]) for i in found if i.get("queued_at")}

    def put(self, device_ids: Sequence[str], queued_at: str) -> None:
        """Mark these devices queued at ``queued_at``, unconditionally: one BatchWriteItem per 25.

        Why no condition is needed here, where ``mark`` has one: the sweep calls this for devices it
        has just read without a fresh mark (``read``), and the sweep's lease lets one sweep run at a
        time, so no other sweep writes these marks meanwhile. The one other writer, a status report
        (``mark``, conditional), can mark a device between the sweep's read and this write: the
        device then gets two messages. That costs one message, nothing more: exactly once rests on
        the claim transaction (``rules.claim`` guards the token and the device), never on the mark,
        and the second message finds the device served (``Assigner.assign`` answers ``done`` or
        ``in-flight``). BatchWriteItem takes no conditions; a conditional write per device is what
        this replaces (one call per device).
        """
        puts = [
            {"PutRequest": {"Item": {**Keys.queued(d), **to_item({"queued_at": queued_at, "device_id": d})}}}
            for d in dict.fromkeys(device_ids)
        ]
        self.db.batch_write(puts)

    def queued_at(self, device_id: str) -> str | None:
        """When the device's waiting message was sent (None: no mark)."""
        item = self.db.get(Keys.queued(device_id))
        value = item.get("queued_at") if item else None
        return str(value) if value else None
