"""Storing tokens: conditional batched writes, counters in the same transaction, no overwrite ever."""

from __future__ import annotations

import threading

import boto3

from tests.conftest import TABLE
from tests.support.moto_atomic import AtomicClient
from tokenflow.store import STATS_SHARDS, Keys, NewToken, Store, from_item
from tokenflow.tokens import token_id


def make_tokens(count: int, start: int = 0) -> list[NewToken]:
    return [
        NewToken(token=f"tok{n:09d}".ljust(32, "x"), qr_token=f"sqr_{n:032d}")
        for n in range(start, start + count)
    ]


def test_new_tokens_are_stored_available_with_counters(store: Store):
    tokens = make_tokens(5)
    result = store.add_tokens(tokens, import_id="imp1", now="2026-01-01T00:00:00Z")
    assert [t.token for t in result.added] == [t.token for t in tokens]
    assert result.known == []
    item = store.get_token(token_id(tokens[0].token))
    assert item["state"] == "available"
    assert item["qr_token"] == tokens[0].qr_token
    assert item["token_mask"] == "tok0…xxxx"
    assert "token" not in item  # a plain read never returns the secret
    assert store.summary()["tokens"]["available"] == 5


def test_batches_of_99_tokens_plus_counter_make_one_transaction_each(store: Store):
    store.add_tokens(make_tokens(250), import_id="imp1", now="t")
    assert store.calls.counts == {"TransactWriteItems": 3}


def test_known_tokens_are_skipped_and_the_rest_stored(store: Store):
    store.add_tokens(make_tokens(10), import_id="imp1", now="t")
    store.calls.counts.clear()
    result = store.add_tokens(make_tokens(20, start=5), import_id="imp2", now="t")
    assert len(result.added) == 15
    assert sorted(t.token for t in result.known) == sorted(t.token for t in make_tokens(5, start=5))
    # one cancelled attempt, one successful retry without the known tokens
    assert store.calls.counts == {"TransactWriteItems": 2}
    assert store.summary()["tokens"]["available"] == 25


def test_reimport_never_changes_an_assigned_token(store: Store, dynamodb):
    token = make_tokens(1)[0]
    store.add_tokens([token], import_id="imp1", now="t")
    key = Keys.token(token_id(token.token))
    dynamodb.update_item(
        TableName=TABLE,
        Key=key,
        UpdateExpression="SET #s = :a, device_id = :d REMOVE apk, ask",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":a": {"S": "assigned"}, ":d": {"S": "e00fce68ffffffffffffffff"}},
    )
    result = store.add_tokens([token], import_id="imp2", now="t2")
    assert result.added == [] and result.known == [token]
    item = from_item(dynamodb.get_item(TableName=TABLE, Key=key)["Item"])
    assert item["state"] == "assigned"
    assert item["device_id"] == "e00fce68ffffffffffffffff"
    assert item["import_id"] == "imp1"
    assert "apk" not in item


def test_large_images_split_a_batch_below_the_transaction_size_limit(store: Store):
    png = b"\x89PNG" + b"\0" * 30_000
    tokens = [NewToken(token=t.token, qr_png=png) for t in make_tokens(150)]
    result = store.add_tokens(tokens, import_id="imp1", now="t")
    assert len(result.added) == 150
    assert store.calls.counts["TransactWriteItems"] >= 2
    assert store.get_token(token_id(tokens[0].token), with_image=True)["qr_png"] == png


def test_summary_reads_every_shard_in_one_call(store: Store, dynamodb):
    for shard in range(STATS_SHARDS):
        store.transact(
            [store.counter_update({"tokens_available": shard + 1, "devices_waiting": 1}, shard=shard)]
        )
    store.calls.counts.clear()
    summary = store.summary()
    assert summary["tokens"]["available"] == sum(range(1, STATS_SHARDS + 1))
    assert summary["devices"]["waiting"] == STATS_SHARDS
    assert store.calls.counts == {"BatchGetItem": 1}


def test_overlapping_concurrent_imports_store_each_token_once_with_exact_counters(dynamodb):
    client = AtomicClient(boto3.client("dynamodb"))
    batches = [make_tokens(300, start=n * 100) for n in range(4)]  # each overlaps the next by 200
    results = []

    def run(batch):
        results.append(Store(TABLE, client).add_tokens(batch, import_id="imp", now="t"))

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    distinct = {t.token for b in batches for t in b}
    added = [t.token for r in results for t in r.added]
    assert sorted(added) == sorted(distinct)  # every token added exactly once, by one import
    assert Store(TABLE, client).summary()["tokens"]["available"] == len(distinct)


def test_tokens_read_together_are_plain_reads_without_the_secret_or_the_image(store: Store):
    png = b"\x89PNG" + b"\0" * 100
    tokens = [
        NewToken(token=t.token, qr_token=t.qr_token, qr_png=png, metadata={"Serial Number": f"SN-{n}"})
        for n, t in enumerate(make_tokens(150))
    ]
    store.add_tokens(tokens, import_id="imp1", now="t")
    ids = [token_id(t.token) for t in tokens]
    store.calls.counts.clear()

    found = store.get_tokens([*ids, "0" * 64])  # an unknown id is left out

    assert store.calls.counts == {"BatchGetItem": 2}  # 100 keys per call
    assert set(found) == set(ids)
    for n, tid in enumerate(ids):
        assert found[tid] == store.get_token(tid)  # what a plain read of one token gives
        assert "token" not in found[tid] and "qr_png" not in found[tid]
        assert found[tid]["metadata"] == {"Serial Number": f"SN-{n}"}
