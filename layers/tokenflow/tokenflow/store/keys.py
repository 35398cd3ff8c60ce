"""The table's key layout: the one module that knows it (the grep in tests/unit/test_key_layout.py
keeps it so). Every other module builds keys, index queries and listing cursors through here.

One table, composite key ``pk``/``sk``:

- token: ``TOKEN#<token id>`` / ``TOKEN``; the token id is the SHA-256 of the AuthToken, so no
  key ever carries the secret; its history events: ``TOKEN#<token id>`` / ``EVENT#<when>#<what>#<rand>``;
- device: ``DEVICE#<device id>`` / ``DEVICE``: its state and the token it holds;
- import: ``IMPORT#<sha256 of the file>`` / ``IMPORT``;
- counter shard: ``STATS#<n>`` / ``STATS``: per-state counters, changed in the same transaction as
  the state they count;
- recent imports: ``IMPORTS#RECENT`` / ``IMPORTS``, read together with the counters in one call;
- sweep state: ``SWEEP#STATE`` / ``SWEEP``: the sweep's lease and its page cursor (store/sweep_state.py);
- queued mark: ``QUEUED#<device id>`` / ``QUEUED``: the device has a message in the assign queue
  that no worker has handled yet (store/queue_marks.py).
- hourly activity: ``ACTIVITY#<YYYY-MM-DD>`` / ``<HH>#<n>``: tokens assigned and confirmed in that
  hour (UTC), counted in shard ``n`` by the transactions that move them; expire by the table's TTL.

Indexes (sparse, so each holds only the items that carry its key; template.yaml defines them and
the test above checks that the names here are the template's):
- ``available``: ``apk``/``ask`` on available tokens only; ``apk`` is one of ``AVAILABLE_SHARDS``
  partitions (``AVAILABLE#<n>``, drawn at random per token) so that claims are not bound to the
  throughput of one index partition, and ``ask`` is random, so either end of a shard is a random
  token. Tokens stored before the shards carry the single ``AVAILABLE`` partition: claims query it
  as one more shard, so they need no migration (and a token returned to stock moves to a shard).
  Projects the key and the token.
- ``by-state``: ``gsi1pk``/``gsi1sk``: devices by state (``DEVSTATE#<state>``, sorted by device id)
  and imports by time (``IMPORTS``, sorted by ``<started at>#<sha256>``). Keys only.
- ``by-qr``: ``qr_token``: which token a QR code belongs to. Keys only.

Items read back carry their key; ``token_id_of``, ``import_id_of`` and ``without_key`` read it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from tokenflow.store.shapes import RawItem

PK = "pk"
SK = "sk"
KEY_ATTRIBUTES = (PK, SK)
# Condition of a write that creates an item: none with its key exists yet.
ITEM_ABSENT = f"attribute_not_exists({PK})"

TOKEN_PREFIX = "TOKEN#"  # noqa: S105 (a key prefix, not a secret)
DEVICE_PREFIX = "DEVICE#"
IMPORT_PREFIX = "IMPORT#"
STATS_PREFIX = "STATS#"
EVENT_PREFIX = "EVENT#"
DEVICE_STATE_PREFIX = "DEVSTATE#"
RECENT_IMPORTS_PK = "IMPORTS#RECENT"
SWEEP_STATE_PK = "SWEEP#STATE"
QUEUED_PREFIX = "QUEUED#"

INDEX_AVAILABLE = "available"
INDEX_BY_STATE = "by-state"
INDEX_BY_QR = "by-qr"
AVAILABLE_PK = "apk"
AVAILABLE_SK = "ask"
BY_STATE_PK = "gsi1pk"
BY_STATE_SK = "gsi1sk"
BY_QR_PK = "qr_token"  # the token's own QR token attribute is the index key
# The partition every available token had before the shards; still queried (see the docstring).
AVAILABLE_PARTITION = "AVAILABLE"
# Shards of the ``available`` index. Each GSI partition has its own write and read throughput
# (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-sharding.html:
# "write sharding" by a random suffix); 8 spreads the claims of a fleet's workers, while a claim
# whose shard is empty costs one more query per shard it falls back to.
AVAILABLE_SHARDS = 8
IMPORTS_PARTITION = "IMPORTS"
# The token state whose tokens the sparse ``available`` index holds.
_AVAILABLE_STATE = "available"


class Keys:
    """Key of every item kind, as DynamoDB attribute values."""

    @staticmethod
    def token(tid: str) -> RawItem:
        return {PK: {"S": f"{TOKEN_PREFIX}{tid}"}, SK: {"S": "TOKEN"}}

    @staticmethod
    def device(device_id: str) -> RawItem:
        return {PK: {"S": f"{DEVICE_PREFIX}{device_id}"}, SK: {"S": "DEVICE"}}

    @staticmethod
    def import_(sha256: str) -> RawItem:
        return {PK: {"S": f"{IMPORT_PREFIX}{sha256}"}, SK: {"S": "IMPORT"}}

    @staticmethod
    def stats(shard: int) -> RawItem:
        return {PK: {"S": f"{STATS_PREFIX}{shard}"}, SK: {"S": "STATS"}}

    @staticmethod
    def recent_imports() -> RawItem:
        return {PK: {"S": RECENT_IMPORTS_PK}, SK: {"S": "IMPORTS"}}

    @staticmethod
    def pause() -> RawItem:
        """The stack-wide pause of assignment (one item: ``STACK#PAUSE`` / ``PAUSE``)."""
        return {PK: {"S": "STACK#PAUSE"}, SK: {"S": "PAUSE"}}

    @staticmethod
    def sweep_state() -> RawItem:
        return {PK: {"S": SWEEP_STATE_PK}, SK: {"S": "SWEEP"}}

    @staticmethod
    def queued(device_id: str) -> RawItem:
        return {PK: {"S": f"{QUEUED_PREFIX}{device_id}"}, SK: {"S": "QUEUED"}}

    @staticmethod
    def device_state_partition(state: str) -> str:
        return f"{DEVICE_STATE_PREFIX}{state}"


def item_key(kind: str, item_id: str) -> RawItem:
    """The key of a token or device item (what a rule's ``Write`` names)."""
    return Keys.token(item_id) if kind == "token" else Keys.device(item_id)


def event_key(tid: str, now: str, what: str, rng: random.Random) -> dict[str, str]:
    """Key of one history event of a token, next to the token in its partition. The random suffix
    keeps two events of the same kind in the same second apart."""
    return {PK: f"{TOKEN_PREFIX}{tid}", SK: f"{EVENT_PREFIX}{now}#{what}#{rng.getrandbits(32):08x}"}


def random_sort_key(rng: random.Random) -> str:
    """A point in the ``available`` index's sort order, drawn at random."""
    return f"{rng.getrandbits(64):016x}"


# ---- index entries: the attributes that put an item in (or take it out of) an index ------------


def available_partition(shard: int) -> str:
    """The ``available`` index partition of one shard."""
    return f"{AVAILABLE_PARTITION}#{shard}"


def available_entry(rng: random.Random) -> dict[str, str]:
    """Attributes of a token in the ``available`` index: a random shard, a random place in it."""
    shard = rng.randrange(AVAILABLE_SHARDS)
    return {AVAILABLE_PK: available_partition(shard), AVAILABLE_SK: random_sort_key(rng)}


def token_index_change(before: str | None, after: str | None, rng: random.Random) -> dict[str, Any]:
    """Index attributes a token's move from state ``before`` to ``after`` sets (None: removes).

    Only available tokens are in the ``available`` index; any other move leaves the indexes alone.
    """
    if after == _AVAILABLE_STATE:
        return available_entry(rng)
    if before == _AVAILABLE_STATE:
        return {AVAILABLE_PK: None, AVAILABLE_SK: None}
    return {}


def device_index_change(after: str) -> dict[str, str]:
    """The ``by-state`` partition of a device in state ``after``."""
    return {BY_STATE_PK: Keys.device_state_partition(after)}


def new_device_entry(device_id: str) -> dict[str, str]:
    """A new device's sort key in the ``by-state`` index (its partition comes with its state)."""
    return {BY_STATE_SK: device_id}


def import_listing_sort_key(started_at: str, sha256: str) -> str:
    """An import's place in the ``by-state`` index's ``IMPORTS`` partition: by start time."""
    return f"{started_at}#{sha256}"


# ---- queries -------------------------------------------------------------------------------------


def available_partitions() -> list[str]:
    """Every shard's partition of the ``available`` index, in shard order."""
    return [available_partition(n) for n in range(AVAILABLE_SHARDS)]


def available_query(
    partition: str, *, at_or_after: str | None = None, before: str | None = None
) -> dict[str, Any]:
    """The tokens of one ``available`` partition (a shard, or the partition of tokens stored before
    the shards), in their random sort order (``IndexName``, ``KeyConditionExpression``, values);
    only those from the point ``at_or_after``, or only those before the point ``before``, when given
    (a point of ``random_sort_key``)."""
    if at_or_after is not None:
        condition, values = f" AND {AVAILABLE_SK} >= :s", {":s": {"S": at_or_after}}
    elif before is not None:
        condition, values = f" AND {AVAILABLE_SK} < :s", {":s": {"S": before}}
    else:
        condition, values = "", {}
    return {
        "IndexName": INDEX_AVAILABLE,
        "KeyConditionExpression": f"{AVAILABLE_PK} = :p{condition}",
        "ExpressionAttributeValues": {":p": {"S": partition}, **values},
    }


def qr_query(qr_token: str) -> dict[str, Any]:
    """The ``by-qr`` index entry of a QR token."""
    return {
        "IndexName": INDEX_BY_QR,
        "KeyConditionExpression": f"{BY_QR_PK} = :q",
        "ExpressionAttributeValues": {":q": {"S": qr_token}},
    }


def device_state_query(state: str) -> dict[str, Any]:
    """The devices in one state, by device id, from the ``by-state`` index."""
    return _by_state_query(Keys.device_state_partition(state))


def imports_query() -> dict[str, Any]:
    """The imports, by start time (oldest first unless the Query says otherwise)."""
    return _by_state_query(IMPORTS_PARTITION)


def _by_state_query(partition: str) -> dict[str, Any]:
    return {
        "IndexName": INDEX_BY_STATE,
        "KeyConditionExpression": f"{BY_STATE_PK} = :p",
        "ExpressionAttributeValues": {":p": {"S": partition}},
    }


def history_query(tid: str) -> dict[str, Any]:
    """A token's history events (its partition, event sort keys only), oldest first."""
    return {
        "KeyConditionExpression": f"{PK} = :pk AND begins_with({SK}, :event)",
        "ExpressionAttributeValues": {":pk": {"S": f"{TOKEN_PREFIX}{tid}"}, ":event": {"S": EVENT_PREFIX}},
    }


# ---- reading keys back ---------------------------------------------------------------------------


def key_of(raw: Mapping[str, Any]) -> RawItem:
    """The table key of a raw item (e.g. an index entry), to read the item itself."""
    return {PK: raw[PK], SK: raw[SK]}


def raw_pk(raw: Mapping[str, Any]) -> str:
    """The partition key of a raw item or key."""
    pk: str = raw[PK]["S"]
    return pk


def pk_of(item: Mapping[str, Any]) -> str:
    """The partition key of an item read back as plain values."""
    pk: str = item[PK]
    return pk


def token_id_from_pk(pk: str) -> str:
    return pk.removeprefix(TOKEN_PREFIX)


def token_id_of(item: Mapping[str, Any]) -> str:
    """The token id of a token item (or index entry) read back as plain values."""
    return token_id_from_pk(item[PK])


def import_id_of(item: Mapping[str, Any]) -> str | None:
    """The import id (the file's SHA-256) of an import item, or None for something without a key
    (such as an entry of the recent-imports list)."""
    return item[PK].removeprefix(IMPORT_PREFIX) if PK in item else None


def device_id_of_listing_entry(item: Mapping[str, Any]) -> str:
    """The device id of an entry of the ``by-state`` index's device listing (plain values)."""
    device_id: str = item[BY_STATE_SK]
    return device_id


def is_recent_imports(item: Mapping[str, Any]) -> bool:
    """Whether an item (plain values) is the recent-imports list."""
    return item.get(PK) == RECENT_IMPORTS_PK


def is_pause(item: Mapping[str, Any]) -> bool:
    """Whether an item (plain values) is the pause of assignment."""
    return item.get(PK) == Keys.pause()[PK]["S"]


def without_key(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item's attributes without its table key."""
    return {k: v for k, v in item.items() if k not in KEY_ATTRIBUTES}


# ---- cursors -------------------------------------------------------------------------------------

# A Query on the by-state index stops at a LastEvaluatedKey made of the table's and the index's keys.
_LISTING_KEY_ATTRIBUTES = frozenset({PK, SK, BY_STATE_PK, BY_STATE_SK})


def is_device_listing_key(state: str, key: object) -> bool:
    """Whether ``key`` can resume the listing of devices in ``state`` (``ExclusiveStartKey``).

    Only the listing's key attributes, each one string, and the partition of that state: a key
    from anywhere else (another state, the imports, a table key) cannot be slipped in. An empty
    key is the start of the listing.
    """
    if not isinstance(key, dict) or set(key) - _LISTING_KEY_ATTRIBUTES:
        return False
    if not all(isinstance(v, dict) and isinstance(v.get("S"), str) and len(v) == 1 for v in key.values()):
        return False
    return not key or key.get(BY_STATE_PK, {}).get("S") == Keys.device_state_partition(state)


# ---- liveness (store/liveness.py): the Blynk verification pass's walk and its latest result -------

LIVENESS_PK = "LIVENESS#STATE"


def liveness_key() -> RawItem:
    """The one item holding the verification pass's cursor, its partial counts and the counts of
    its last complete walk over the confirmed devices (``LIVENESS#STATE`` / ``LIVENESS``)."""
    return {PK: {"S": LIVENESS_PK}, SK: {"S": "LIVENESS"}}


def is_liveness(item: Mapping[str, Any]) -> bool:
    """Whether an item (plain values) is the liveness item."""
    return item.get(PK) == LIVENESS_PK


def device_listing_key(state: str, device_id: str) -> RawItem:
    """Where the listing of devices in ``state`` resumes after ``device_id`` (an ``ExclusiveStartKey``
    of the ``by-state`` index: the table's key and the index's key of that device's entry)."""
    return {
        **Keys.device(device_id),
        BY_STATE_PK: {"S": Keys.device_state_partition(state)},
        BY_STATE_SK: {"S": device_id},
    }


# ---- hourly activity (store/counters.py): tokens assigned and confirmed per hour -------------------

ACTIVITY_PREFIX = "ACTIVITY#"
# The table's TimeToLiveSpecification attribute (template.yaml): epoch seconds after which DynamoDB
# deletes the item by itself.
TTL_ATTRIBUTE = "expires_at"


def activity_key(hour: str, shard: int) -> RawItem:
    """One shard of one hour's activity counts; ``hour`` is ``YYYY-MM-DDTHH`` (UTC). One partition
    per day, so the last hours are one Query per day they span."""
    day, hh = hour[:10], hour[11:13]
    return {PK: {"S": f"{ACTIVITY_PREFIX}{day}"}, SK: {"S": f"{hh}#{shard}"}}


def activity_query(day: str, from_hh: str) -> dict[str, Any]:
    """The activity shards of ``day`` (``YYYY-MM-DD``) from hour ``from_hh`` (``HH``) on."""
    return {
        "KeyConditionExpression": f"{PK} = :pk AND {SK} >= :from",
        "ExpressionAttributeValues": {":pk": {"S": f"{ACTIVITY_PREFIX}{day}"}, ":from": {"S": from_hh}},
    }


def activity_hour_of(item: Mapping[str, Any]) -> str:
    """The ``YYYY-MM-DDTHH`` hour an activity shard item (plain values) counts."""
    pk: str = item[PK]
    sk: str = item[SK]
    return f"{pk.removeprefix(ACTIVITY_PREFIX)}T{sk.split('#', 1)[0]}"
