"""The ``available`` index spread over shards: new tokens land in random shards, a claim draws a shard
and falls back to the others, tokens stored before the shards (one partition) are still claimed."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from tests.conftest import TABLE
from tests.integration.test_store_tokens import make_tokens
from tests.support.invariants import check_invariants
from tokenflow import rules
from tokenflow.model import Plan, TokenRef, Write
from tokenflow.store import Keys, Store, from_item
from tokenflow.store.keys import AVAILABLE_PARTITION, AVAILABLE_SHARDS, available_partition
from tokenflow.tokens import fingerprint, mask, token_id

NOW = "2026-11-29T10:00:00Z"
DEVICE = "e00fce68aaaaaaaaaaaaaaaa"


class DrawsShard(random.Random):
    """A random source whose shard draws are fixed (everything else stays random)."""

    def __init__(self, shard: int) -> None:
        super().__init__(7)
        self.shard = shard

    def randrange(self, stop: int, *args: Any, **kwargs: Any) -> int:
        return self.shard % stop


def index_partitions(dynamodb) -> Counter[str]:
    """How many tokens each ``available`` partition holds, read from the table itself."""
    partitions: Counter[str] = Counter()
    for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE):
        for raw in page["Items"]:
            item = from_item(raw)
            if item.get("kind") == "token" and "apk" in item:
                partitions[item["apk"]] += 1
    return partitions


def store_one_token_in_shard(dynamodb, shard: int, n: int = 0) -> str:
    token = make_tokens(1, start=n)[0]
    Store(TABLE, dynamodb, rng=DrawsShard(shard)).add_tokens([token], import_id="imp", now=NOW)
    return token.token


def claim(store: Store, device_id: str = DEVICE) -> str | None:
    """The assignment service's claim: a few candidates from the index, the first one bound."""
    candidates = store.available_candidates(5)
    if not candidates:
        return None
    tid, token = candidates[0]
    store.apply(rules.claim(device_id, None, TokenRef(tid, fingerprint(token), mask(token)), {}, NOW), NOW)
    return token


def test_new_tokens_spread_over_every_shard_and_none_goes_to_the_old_partition(dynamodb, store):
    store.add_tokens(make_tokens(400), import_id="imp", now=NOW)
    partitions = index_partitions(dynamodb)
    assert set(partitions) == {available_partition(n) for n in range(AVAILABLE_SHARDS)}
    # 50 a shard on average: a shard with fewer than 20 would mean the draw is not spread
    assert min(partitions.values()) >= 20, partitions
    assert sum(partitions.values()) == 400


def test_a_claim_finds_a_token_whatever_shard_it_draws(dynamodb):
    token = store_one_token_in_shard(dynamodb, shard=3)
    for drawn in range(AVAILABLE_SHARDS):
        found = Store(TABLE, dynamodb, rng=DrawsShard(drawn)).available_candidates(5)
        assert [t for _, t in found] == [token], f"drew shard {drawn}"


def test_a_claim_whose_shard_is_empty_falls_back_to_the_others_one_query_each(dynamodb):
    token = store_one_token_in_shard(dynamodb, shard=3)
    own = Store(TABLE, dynamodb, rng=DrawsShard(3))
    assert [t for _, t in own.available_candidates(5)] == [token]
    assert own.calls.counts["Query"] == 1
    # Drawn shard 5: empty (1), the old partition (1), shards 6, 7, 0, 1, 2 empty (5), shard 3 (1).
    other = Store(TABLE, dynamodb, rng=DrawsShard(5))
    assert [t for _, t in other.available_candidates(5)] == [token]
    assert other.calls.counts["Query"] == 1 + 1 + 5 + 1


def test_a_shard_found_empty_is_not_drawn_again_but_still_asked_last(dynamodb):
    token = store_one_token_in_shard(dynamodb, shard=4)
    store = Store(TABLE, dynamodb, rng=DrawsShard(5))
    store.available_candidates(5)  # finds every partition but shard 4 empty, 4 last
    assert store.calls.counts["Query"] == AVAILABLE_SHARDS + 1
    store.calls.counts.clear()
    for _ in range(5):
        assert [t for _, t in store.available_candidates(5)] == [token]
    assert store.calls.counts["Query"] == 5  # shard 4, the one left to draw, each time
    # A token that lands in a shard found empty is still found, after the others.
    later = store_one_token_in_shard(dynamodb, shard=5, n=1)
    assert claim(Store(TABLE, dynamodb, rng=DrawsShard(4))) == token
    assert [t for _, t in store.available_candidates(5)] == [later]


def test_an_empty_pool_answers_no_candidate_after_querying_every_partition_once(dynamodb):
    store = Store(TABLE, dynamodb, rng=DrawsShard(0))
    assert store.available_candidates(5) == []
    assert store.calls.counts["Query"] == AVAILABLE_SHARDS + 1


def test_a_token_stored_before_the_shards_is_still_claimed(dynamodb, store):
    token = make_tokens(1)[0]
    store.add_tokens([token], import_id="imp", now=NOW)
    # The item as the single-partition layout wrote it.
    dynamodb.update_item(
        TableName=TABLE,
        Key=Keys.token(token_id(token.token)),
        UpdateExpression="SET apk = :legacy",
        ExpressionAttributeValues={":legacy": {"S": AVAILABLE_PARTITION}},
    )
    assert index_partitions(dynamodb) == {AVAILABLE_PARTITION: 1}

    assert claim(Store(TABLE, dynamodb, rng=DrawsShard(6))) == token.token
    item = store.get_token(token_id(token.token))
    assert (item["state"], item["device_id"]) == ("assigned", DEVICE)
    assert index_partitions(dynamodb) == {}  # out of the index once claimed
    assert check_invariants(store)["tokens"] == {"assigned": 1}


def test_claims_drain_a_pool_spread_over_the_shards_and_the_old_partition(dynamodb, store):
    tokens = make_tokens(12)
    store.add_tokens(tokens[:9], import_id="imp", now=NOW)
    old = tokens[9:]
    store.add_tokens(old, import_id="imp", now=NOW)
    for t in old:
        dynamodb.update_item(
            TableName=TABLE,
            Key=Keys.token(token_id(t.token)),
            UpdateExpression="SET apk = :legacy",
            ExpressionAttributeValues={":legacy": {"S": AVAILABLE_PARTITION}},
        )
    claimed = {claim(Store(TABLE, dynamodb, rng=random.Random(n)), f"e00fce68{n:016x}") for n in range(12)}
    assert claimed == {t.token for t in tokens}
    assert claim(store, "e00fce68ffffffffffffffff") is None
    assert check_invariants(store)["tokens"] == {"assigned": 12}


def test_a_token_returned_to_stock_goes_to_a_drawn_shard(dynamodb):
    token = store_one_token_in_shard(dynamodb, shard=1)
    store = Store(TABLE, dynamodb, rng=DrawsShard(6))
    assert claim(store) == token
    tid = token_id(token)
    # Back to stock, as a replacement's token goes back to available: the write draws a shard.
    held = store.get_token(tid)
    back = Write("token", tid, held, {"state": "available", "device_id": None, "assigned_at": None})
    store.apply(Plan(writes=(back,)), NOW)
    assert index_partitions(dynamodb) == {available_partition(6): 1}
    assert [t for _, t in store.available_candidates(5)] == [token]
