"""Ingest at scale: a retried import continues from its checkpoint, the recent-imports list stays
bounded, unprocessed BatchGetItem keys are retried with backoff, item sizes are counted in bytes, and
transactions carry a ClientRequestToken of their own."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import BUCKET, TABLE
from tests.integration.test_store_tokens import make_tokens
from tests.support.invariants import check_invariants
from tokenflow.ingest import WRITE_BATCH, Importer
from tokenflow.store import RECENT_IMPORTS_KEPT, Keys, NewToken, Store, from_item
from tokenflow.store.table import (
    UNPROCESSED_BACKOFF_BASE,
    Table,
    UnprocessedKeysError,
)
from tokenflow.store.tokens import item_bytes
from tokenflow.tokens import token_id
from tokenflow_local.sample_export import make_export

NOW = "2026-11-29T10:00:00Z"


class Timeout(Exception):
    """Stands for Lambda ending the invocation at its timeout."""


class StopsAfter:
    """A DynamoDB client that lets ``chunks`` TransactWriteItems through, then times out."""

    def __init__(self, client: Any, chunks: int) -> None:
        self._client, self._left = client, chunks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self._left == 0:
            raise Timeout("the function timed out")
        self._left -= 1
        return self._client.transact_write_items(**kwargs)


class RecordsTransactions:
    """A DynamoDB client that records each TransactWriteItems and fails the first ``errors`` of them
    with a 500 (whose outcome the caller cannot know)."""

    def __init__(self, client: Any, errors: int = 0) -> None:
        self._client, self._errors = client, errors
        self.sent: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.sent.append(kwargs)
        if self._errors:
            self._errors -= 1
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "internal error"}}, "TransactWriteItems"
            )
        return self._client.transact_write_items(**kwargs)


def report(s3) -> dict[str, Any]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="processed/").get("Contents", [])
    [key] = [o["Key"] for o in listed if o["Key"].endswith(".report.json")]
    return dict(json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


# ---- checkpoint ------------------------------------------------------------------------------


def test_a_retried_import_continues_from_its_checkpoint_and_writes_only_the_chunks_left(dynamodb, s3, store):
    rows = 3 * WRITE_BATCH + 10  # four chunks
    s3.put_object(Bucket=BUCKET, Key="incoming/big.zip", Body=make_export(rows, real_qr=False))

    stopping = Store(TABLE, StopsAfter(dynamodb, chunks=2))
    with pytest.raises(Timeout):
        Importer(stopping, BUCKET, s3=s3).ingest("incoming/big.zip")
    [record] = store.list_imports()[0]
    assert record["status"] == "processing"
    assert (record["checkpoint_tokens"], record["checkpoint_chunks"]) == (2 * WRITE_BATCH, 2)
    assert record["checkpoint_added"] == 2 * WRITE_BATCH

    # The retry (S3's event again) takes over the claim the stopped attempt left and writes the
    # two chunks left, not four.
    outcome = Importer(store, BUCKET, s3=s3, claim_wait_seconds=0).ingest("incoming/big.zip")
    assert outcome is not None and outcome.tokens_added == rows
    assert store.calls.counts["TransactWriteItems"] == 2
    body = report(s3)
    assert (body["status"], body["tokens_added"], body["tokens_already_known"]) == ("processed", rows, 0)
    record = store.get_import(outcome.sha256)
    assert (record["checkpoint_tokens"], record["checkpoint_chunks"]) == (rows, 4)
    assert check_invariants(store)["tokens"] == {"available": rows}


def test_a_chunk_of_tokens_already_known_moves_the_checkpoint_on(dynamodb, store):
    tokens = make_tokens(WRITE_BATCH + 5)
    store.add_tokens(tokens[:WRITE_BATCH], import_id="first", now=NOW)
    store.calls.counts.clear()

    result = store.add_tokens(tokens, import_id="second", now=NOW, checkpoint_at=0)
    assert (len(result.added), len(result.known)) == (5, WRITE_BATCH)
    # the whole first chunk failed its conditions (1 call) and its checkpoint moved alone (1 call)
    assert store.calls.counts == {"TransactWriteItems": 2, "UpdateItem": 1}
    record = store.get_import("second")
    assert record["checkpoint_tokens"] == WRITE_BATCH + 5
    assert (record["checkpoint_added"], record["checkpoint_known"]) == (5, WRITE_BATCH)


# ---- recent imports --------------------------------------------------------------------------


def test_recent_imports_stay_bounded_after_many_imports(dynamodb, store):
    imports = 3 * RECENT_IMPORTS_KEPT + 3
    for n in range(imports):
        summary = {"status": "processed", "source_key": f"incoming/{n}.zip", "tokens_added": n}
        store.finish_import(f"{n:064x}", summary, f"2026-11-29T10:{n:02d}:00Z")
        item = from_item(dynamodb.get_item(TableName=TABLE, Key=Keys.recent_imports())["Item"])
        assert len(item["imports"]) < 2 * RECENT_IMPORTS_KEPT
    newest = [f"{n:064x}" for n in range(imports - 1, imports - 1 - RECENT_IMPORTS_KEPT, -1)]
    assert [i["id"] for i in store.summary()["recent_imports"]] == newest
    # bounded without reading it back: no GetItem, one trim per RECENT_IMPORTS_KEPT imports
    assert "GetItem" not in store.calls.counts


# ---- BatchGetItem ----------------------------------------------------------------------------


class LeavesKeysUnprocessed:
    """A DynamoDB client whose first ``times`` BatchGetItem answers process only the first key
    (``processed=1``) or none."""

    def __init__(self, client: Any, times: int, processed: int = 1) -> None:
        self._client, self._times, self._processed = client, times, processed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        if not self._times:
            return dict(self._client.batch_get_item(RequestItems=RequestItems))
        self._times -= 1
        [(table, request)] = RequestItems.items()
        first, rest = request["Keys"][: self._processed], request["Keys"][self._processed :]
        answer: dict[str, Any] = {"Responses": {table: []}}
        if first:
            answer = dict(self._client.batch_get_item(RequestItems={table: {**request, "Keys": first}}))
        answer["UnprocessedKeys"] = {table: {**request, "Keys": rest}}
        return answer


def test_unprocessed_keys_are_asked_for_again_after_growing_jittered_pauses(dynamodb, store):
    tokens = make_tokens(5)
    store.add_tokens(tokens, import_id="imp", now=NOW)
    pauses: list[float] = []
    table = Table(TABLE, LeavesKeysUnprocessed(dynamodb, times=2), rng=random.Random(3), sleep=pauses.append)

    found = table.batch_get([Keys.token(token_id(t.token)) for t in tokens])
    assert sorted(i["token"] for i in found) == sorted(t.token for t in tokens)
    assert table.calls.counts == {"BatchGetItem": 3}
    assert len(pauses) == 2
    # full jitter: each pause random below its cap, the cap doubling per retry
    assert 0 < pauses[0] <= UNPROCESSED_BACKOFF_BASE
    assert 0 < pauses[1] <= 2 * UNPROCESSED_BACKOFF_BASE


def test_keys_still_unprocessed_after_every_retry_raise_a_clear_error(dynamodb, store):
    tokens = make_tokens(3)
    store.add_tokens(tokens, import_id="imp", now=NOW)
    pauses: list[float] = []
    table = Table(
        TABLE,
        LeavesKeysUnprocessed(dynamodb, times=100, processed=0),
        rng=random.Random(3),
        sleep=pauses.append,
        max_unprocessed_retries=4,
    )
    with pytest.raises(UnprocessedKeysError, match="left 3 of 3 keys unprocessed after 5 attempts"):
        table.batch_get([Keys.token(token_id(t.token)) for t in tokens])
    assert table.calls.counts == {"BatchGetItem": 5}
    assert len(pauses) == 4


# ---- sizes in bytes --------------------------------------------------------------------------


def test_item_size_counts_utf8_bytes_of_names_and_values():
    assert item_bytes({"pk": {"S": "abc"}}) == 2 + 3
    assert item_bytes({"pk": {"S": "€"}}) == 2 + 3  # one character, three bytes
    assert item_bytes({"png": {"B": b"\x89PNG"}, "n": {"N": "1234"}}) == 3 + 4 + 1 + 3
    assert item_bytes({"m": {"M": {"é": {"S": "x"}}}}) == 1 + 3 + 1 + 2 + 1


def test_multibyte_metadata_is_sized_in_bytes_and_splits_the_chunk(store):
    # 15,000 characters of a 3-byte character: 45 KB an item in bytes, 15 KB in characters. 98 of
    # them are 1.5 MB counted in characters (one transaction) but 4.4 MB in bytes, over the 4 MB a
    # transaction may hold: two transactions.
    note = "€" * 15_000
    tokens = [NewToken(token=t.token, metadata={"note": note}) for t in make_tokens(WRITE_BATCH)]
    result = store.add_tokens(tokens, import_id="imp", now=NOW, checkpoint_at=0)
    assert len(result.added) == WRITE_BATCH
    assert store.calls.counts["TransactWriteItems"] == 2
    assert store.get_token(token_id(tokens[-1].token))["metadata"] == {"note": note}
    assert store.get_import("imp")["checkpoint_tokens"] == WRITE_BATCH


# ---- ClientRequestToken ----------------------------------------------------------------------


def test_a_chunk_retried_after_a_server_error_sends_the_same_client_request_token(dynamodb):
    client = RecordsTransactions(dynamodb, errors=1)
    store = Store(TABLE, client, sleep=lambda _: None)
    store.add_tokens(make_tokens(2 * WRITE_BATCH), import_id="imp", now=NOW, checkpoint_at=0)

    tokens = [sent["ClientRequestToken"] for sent in client.sent]
    assert len(tokens) == 3  # chunk 1 twice (a 500, then its retry), chunk 2 once
    assert tokens[0] == tokens[1]  # the same request again: DynamoDB applies it at most once
    assert tokens[2] != tokens[0]  # another chunk: another request
    assert all(1 <= len(t) <= 36 for t in tokens)
    assert client.sent[0] == client.sent[1]


def test_a_chunk_resent_without_its_known_tokens_gets_a_token_of_its_own(dynamodb, store):
    tokens = make_tokens(10)
    store.add_tokens(tokens[:3], import_id="first", now=NOW)
    client = RecordsTransactions(dynamodb)
    Store(TABLE, client).add_tokens(tokens, import_id="second", now=NOW, checkpoint_at=0)
    first, second = (sent["ClientRequestToken"] for sent in client.sent)
    # the retry is a different request (fewer items): the same token would fail it with
    # IdempotentParameterMismatch within the token's 10 minutes
    assert first != second
    assert len(client.sent[1]["TransactItems"]) == len(client.sent[0]["TransactItems"]) - 3


def test_a_lifecycle_plan_retried_after_a_server_error_sends_the_same_client_request_token(dynamodb):
    from tests.integration.test_available_shards import claim

    Store(TABLE, dynamodb).add_tokens(make_tokens(1), import_id="imp", now=NOW)
    client = RecordsTransactions(dynamodb, errors=1)
    assert claim(Store(TABLE, client, sleep=lambda _: None)) is not None
    first, retry = client.sent
    assert first["ClientRequestToken"] == retry["ClientRequestToken"]
