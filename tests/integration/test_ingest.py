"""The ingest handler and Importer against moto: S3 events in, tokens and reports out, exactly once."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import BUCKET, TABLE
from tests.support import seed
from tests.support.events import invoke, load_event
from tests.support.invariants import check_invariants, scan_all
from tests.support.moto_atomic import AtomicClient
from tokenflow import aws
from tokenflow.ingest import Importer
from tokenflow.observability import logger
from tokenflow.store import Store
from tokenflow.tokens import token_id
from tokenflow_local.lambda_runtime import LambdaContext, load_handler, s3_put_event
from tokenflow_local.sample_export import make_export, make_tokens

TOKENS = make_tokens(40)


@pytest.fixture
def env(monkeypatch, dynamodb, s3):
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("EXPORTS_BUCKET", BUCKET)
    monkeypatch.setenv("SWEEP_FUNCTION_NAME", "")
    return s3


def run_event(event: dict) -> dict:
    return invoke("ingest", event)


def keys(s3, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def report(s3, prefix: str) -> dict:
    [key] = [k for k in keys(s3, prefix) if k.endswith(".report.json")]
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_event_with_url_encoded_key_imports_every_token_and_files_the_export(env, store):
    s3 = env
    event = load_event("ingest/s3-put-zip-key-with-spaces.json")
    key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    assert key == "incoming/Blynk export (2026-11).zip"
    s3.put_object(Bucket=BUCKET, Key=key, Body=make_export(TOKENS[:30]))

    result = run_event(event)

    [outcome] = result["imports"]
    assert outcome["status"] == "processed"
    assert outcome["tokens_added"] == 30
    assert keys(s3, "incoming/") == []
    processed = keys(s3, "processed/")
    assert len(processed) == 2
    assert any(k.endswith("-Blynk_export_2026-11_.zip") for k in processed)
    body = report(s3, "processed/")
    assert body["rows_read"] == 30
    assert body["tokens_added"] == 30
    assert body["tokens_already_known"] == 0
    assert body["qr_images_matched"] == 30
    assert body["qr_images_missing"] == 0
    assert body["problems"] == []
    token = store.get_token(token_id(TOKENS[0].token), with_image=True)
    assert token["state"] == "available"
    assert token["qr_token"] == TOKENS[0].qr_token
    assert token["metadata"] == {
        "Serial Number": TOKENS[0].serial_number,
        "Device Name": TOKENS[0].device_name,
    }
    assert bytes(token["qr_png"]).startswith(b"\x89PNG")
    record = store.get_import(outcome["import_id"])
    assert record["status"] == "processed"
    assert record["summary"]["tokens_added"] == 30
    assert check_invariants(store)["tokens"] == {"available": 30}


def test_bare_csv_upload_is_imported(env, store):
    s3 = env
    text = "Device Token,QR Token\n" + "".join(f"{t.token},{t.qr_token}\n" for t in TOKENS[:5])
    s3.put_object(Bucket=BUCKET, Key="incoming/tokens.csv", Body=text.encode())
    [outcome] = run_event(load_event("ingest/s3-put-csv.json"))["imports"]
    assert outcome["tokens_added"] == 5
    assert report(env, "processed/")["format"] == "csv"


def test_same_event_delivered_twice_imports_once(env, store):
    s3 = env
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=make_export(TOKENS[:10]))
    event = s3_put_event(BUCKET, "incoming/a.zip")
    first = run_event(event)
    before = store.summary()
    second = run_event(event)
    assert first["imports"][0]["tokens_added"] == 10
    assert second["imports"] == []
    assert store.summary() == before
    assert len(keys(s3, "processed/")) == 2


def test_event_redelivered_before_the_file_left_incoming_finishes_the_filing(env, store):
    """A crash after the import record was finished but before the delete: the retry only files away."""
    s3 = env
    data = make_export(TOKENS[:10])
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=data)
    run_event(s3_put_event(BUCKET, "incoming/a.zip"))
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=data)  # as if the delete never happened
    result = run_event(s3_put_event(BUCKET, "incoming/a.zip"))
    assert result["imports"][0]["tokens_added"] == 0
    assert keys(s3, "incoming/") == []
    assert check_invariants(store)["tokens"] == {"available": 10}


def test_same_file_under_two_keys_is_a_duplicate(env, store):
    s3 = env
    data = make_export(TOKENS[:10])
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=data)
    s3.put_object(Bucket=BUCKET, Key="incoming/copy of a.zip", Body=data)
    run_event(s3_put_event(BUCKET, "incoming/a.zip"))
    [second] = run_event(s3_put_event(BUCKET, "incoming/copy of a.zip"))["imports"]
    assert second["status"] == "duplicate"
    assert second["tokens_added"] == 0
    assert keys(s3, "incoming/") == []
    reports = [
        json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys(s3) if "report" in k
    ]
    assert sorted(r["status"] for r in reports) == ["duplicate", "processed"]
    assert check_invariants(store)["tokens"] == {"available": 10}


def test_overlapping_imports_run_concurrently_store_each_token_once(env, dynamodb):
    s3 = env
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=make_export(TOKENS[:30], real_qr=False))
    s3.put_object(Bucket=BUCKET, Key="incoming/b.zip", Body=make_export(TOKENS[15:], real_qr=False))
    lock = threading.Lock()
    outcomes = {}

    def ingest(key: str) -> None:
        store = Store(TABLE, AtomicClient(dynamodb, lock))
        importer = Importer(store, BUCKET, s3=AtomicClient(boto3.client("s3"), lock))
        outcomes[key] = importer.ingest(key)

    threads = [threading.Thread(target=ingest, args=(k,)) for k in ("incoming/a.zip", "incoming/b.zip")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    added = sum(o.tokens_added for o in outcomes.values())
    known = sum(o.report["tokens_already_known"] for o in outcomes.values())
    assert added == 40
    assert known == 15  # a holds tokens 0-29, b 15-39
    assert check_invariants(Store(TABLE, dynamodb))["tokens"] == {"available": 40}


def test_reimport_never_turns_an_assigned_token_back_into_available(env, store):
    s3 = env
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=make_export(TOKENS[:3]))
    run_event(s3_put_event(BUCKET, "incoming/a.zip"))
    [(tid, token)] = store.available_candidates(1)
    seed.claim(store, "e00fce68000000000000000a", tid, token, "2026-11-22T00:00:00Z")

    # A different file (another name, another row order) carrying the same tokens.
    s3.put_object(Bucket=BUCKET, Key="incoming/again.zip", Body=make_export(list(reversed(TOKENS[:3]))))
    [outcome] = run_event(s3_put_event(BUCKET, "incoming/again.zip"))["imports"]
    assert outcome["status"] == "processed"
    assert outcome["tokens_added"] == 0
    assert store.get_token(tid)["state"] == "assigned"
    assert check_invariants(store)["tokens"] == {"available": 2, "assigned": 1}


def test_rejected_export_is_filed_with_its_reason_and_writes_no_token(env, store, dynamodb):
    s3 = env
    s3.put_object(Bucket=BUCKET, Key="incoming/broken.zip", Body=make_export(TOKENS[:5])[:300])
    [outcome] = run_event(s3_put_event(BUCKET, "incoming/broken.zip"))["imports"]
    assert outcome["status"] == "rejected"
    body = report(s3, "rejected/")
    assert "corrupt or truncated" in body["reason"]
    assert keys(s3, "incoming/") == []
    assert store.get_import(outcome["import_id"])["status"] == "rejected"
    assert not [i for i in scan_all(dynamodb, TABLE) if i["pk"].startswith("TOKEN#")]


def test_row_problems_are_reported_and_good_rows_imported(env, store):
    s3 = env
    rows = [f"{t.token},{t.qr_token}" for t in TOKENS[:4]] + ["not-a-token,", f"{TOKENS[0].token},"]
    s3.put_object(
        Bucket=BUCKET, Key="incoming/t.csv", Body=("Device Token,QR Token\n" + "\n".join(rows)).encode()
    )
    [outcome] = run_event(s3_put_event(BUCKET, "incoming/t.csv"))["imports"]
    assert outcome["tokens_added"] == 4
    body = report(s3, "processed/")
    assert [p["row"] for p in body["problems"]] == [6, 7]
    assert body["rows_rejected"] == 2


def test_counters_equal_true_counts_after_many_imports(env, store):
    s3 = env
    for n, chunk in enumerate((TOKENS[:12], TOKENS[6:25], TOKENS[20:])):
        s3.put_object(Bucket=BUCKET, Key=f"incoming/{n}.zip", Body=make_export(chunk, real_qr=False))
        run_event(s3_put_event(BUCKET, f"incoming/{n}.zip"))
    assert check_invariants(store)["tokens"] == {"available": 40}


def test_no_auth_token_in_logs_or_reports(env, store, capsys, caplog):
    s3 = env
    bad = TOKENS[1].token
    text = (
        "Device Token,QR Token\n" + f"{TOKENS[0].token},{TOKENS[0].qr_token}\n{bad},{TOKENS[1].qr_token},x\n"
    )
    s3.put_object(Bucket=BUCKET, Key="incoming/t.csv", Body=text.encode())
    s3.put_object(Bucket=BUCKET, Key="incoming/z.zip", Body=make_export(TOKENS[:8]))
    s3.put_object(Bucket=BUCKET, Key="incoming/r.zip", Body=b"PK\x03\x04broken")
    for key in ("incoming/t.csv", "incoming/z.zip", "incoming/r.zip"):
        run_event(s3_put_event(BUCKET, key))
    printed = capsys.readouterr()  # EMF metrics
    logs = "\n".join(logger.registered_formatter.format(r) for r in caplog.records)
    reports = [s3.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode() for k in keys(s3) if "report" in k]
    records = [
        json.dumps(i, default=str) for i in scan_all(store.client, TABLE) if i["pk"].startswith("IMPORT")
    ]
    assert len(reports) == 3
    assert '"message":"Export imported"' in logs  # the structured logs were captured
    assert "TokensImported" in printed.out  # and the metrics
    haystack = logs + printed.out + printed.err + "".join(reports) + "".join(records) + "".join(keys(s3))
    for t in TOKENS[:8]:
        assert t.token not in haystack
    assert f"{bad[:4]}…{bad[-4:]}" in "".join(reports)


def test_import_that_adds_tokens_asks_for_a_sweep(env, store):
    s3 = env
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=make_export(TOKENS[:3]))
    s3.put_object(Bucket=BUCKET, Key="incoming/b.zip", Body=make_export(TOKENS[:3], seed=1))
    calls: list[int] = []
    importer = Importer(store, BUCKET, on_tokens_added=calls.append)
    importer.ingest("incoming/a.zip")
    importer.ingest("incoming/b.zip")  # same tokens in another file: nothing added, no sweep
    assert calls == [3]


def test_object_outside_incoming_is_ignored(env, store):
    s3 = env
    s3.put_object(Bucket=BUCKET, Key="processed/a.zip", Body=make_export(TOKENS[:3]))
    assert Importer(store, BUCKET).ingest("processed/a.zip") is None
    assert keys(s3, "processed/") == ["processed/a.zip"]


# ---- two deliveries of one event at the same time --------------------------------------------------


@pytest.fixture
def atomic_aws(monkeypatch):
    """The handlers' clients serialise each request, as AWS applies each one atomically (see
    tests/support/moto_atomic.py); the threads interleave freely between requests."""
    lock = threading.Lock()
    clients: dict[str, AtomicClient] = {}

    def client(service: str) -> AtomicClient:
        if service not in clients:
            clients[service] = AtomicClient(boto3.client(service), lock)
        return clients[service]

    client.cache_clear = clients.clear  # type: ignore[attr-defined]  # aws.reset() calls it at teardown
    monkeypatch.setattr(aws, "client", client)
    return client


def race(handlers: list, event: dict) -> list[dict]:
    """Run every handler on ``event`` at once; each one's answer, or the exception it raised."""
    barrier = threading.Barrier(len(handlers))
    results: list[Any] = [None] * len(handlers)

    def deliver(n: int) -> None:
        barrier.wait()
        try:
            results[n] = handlers[n].lambda_handler(event, LambdaContext(function_name="ingest"))
        except Exception as exc:  # the assertion below reports it
            results[n] = exc

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(len(handlers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.mark.slow
def test_two_deliveries_of_one_event_at_once_import_it_once_and_neither_fails(env, store, atomic_aws, caplog):
    """S3 may deliver one event twice, to two Lambda environments at the same moment."""
    s3 = env
    caplog.set_level(logging.INFO)
    handlers = [load_handler("ingest", fresh=True, instance=f"race{n}") for n in range(2)]
    tokens = make_tokens(600, seed=5)
    rounds = 8
    for n in range(rounds):
        chunk = tokens[n * 75 : (n + 1) * 75]
        key = f"incoming/race {n}.zip"
        s3.put_object(Bucket=BUCKET, Key=key, Body=make_export(chunk, real_qr=False))
        results = race(handlers, s3_put_event(BUCKET, key))

        assert not [r for r in results if isinstance(r, Exception)], results
        outcomes = [o for r in results for o in r["imports"]]
        assert sum(o["tokens_added"] for o in outcomes) == 75, outcomes
        assert keys(s3, "incoming/") == []
        filed = [k for k in keys(s3, "processed/") if f"race_{n}.zip" in k]
        assert len(filed) == 2, filed  # the file and one report
        [report_key] = [k for k in filed if k.endswith(".report.json")]
        body = json.loads(s3.get_object(Bucket=BUCKET, Key=report_key)["Body"].read())
        assert (body["status"], body["tokens_added"], body["tokens_already_known"]) == ("processed", 75, 0)
        [import_id] = {o["import_id"] for o in outcomes}
        record = store.get_import(import_id)
        assert (record["status"], record["summary"]["tokens_added"]) == ("processed", 75)
    assert check_invariants(store)["tokens"] == {"available": 75 * rounds}
    losers = [r.getMessage() for r in caplog.records if "already" in r.getMessage().lower()]
    assert len(losers) >= rounds  # every round's second delivery said why it had nothing to do
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class MovesTheObjectAfterRead:
    """An S3 client whose first GetObject returns and then lets ``meanwhile`` run (the other
    delivery), so the object is gone by the time this delivery copies it."""

    def __init__(self, client: Any, meanwhile: Callable[[], None]) -> None:
        self._client = client
        self._meanwhile: Callable[[], None] | None = meanwhile
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            try:
                return attr(*args, **kwargs)
            except ClientError as exc:
                self.calls.append(f"{name}:{exc.response['Error']['Code']}")
                raise
            finally:
                if name == "get_object" and self._meanwhile:
                    meanwhile, self._meanwhile = self._meanwhile, None
                    meanwhile()

        return call


def test_object_moved_between_the_read_and_the_copy_is_already_handled(env, store, capsys, caplog):
    s3 = env
    caplog.set_level(logging.INFO)
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=make_export(TOKENS[:10]))
    winner = Importer(store, BUCKET)
    filed: list[Any] = []
    client = MovesTheObjectAfterRead(
        boto3.client("s3"), lambda: filed.append(winner.ingest("incoming/a.zip"))
    )
    loser = Importer(store, BUCKET, s3=client)

    assert loser.ingest("incoming/a.zip") is None
    assert filed[0].tokens_added == 10
    # The loser read the file, then found it filed: its copy met NoSuchKey and that was the end.
    assert client.calls[0] == "get_object" and "copy_object:NoSuchKey" in client.calls
    assert "put_object" not in client.calls and "delete_object" not in client.calls
    messages = [r.getMessage() for r in caplog.records]
    assert "Object already handled by another delivery" in messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert keys(s3, "incoming/") == [] and len(keys(s3, "processed/")) == 2
    assert report(s3, "processed/")["tokens_added"] == 10  # the winner's report, not overwritten
    assert check_invariants(store)["tokens"] == {"available": 10}
    assert "Error" not in capsys.readouterr().out


def test_a_delivery_that_finds_the_import_claimed_waits_for_it_and_writes_nothing(env, store, dynamodb):
    s3 = env
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=make_export(TOKENS[:10]))
    # The winner claims the import first and stops there, before its first token.
    finish_winner = claim_then_pause(Importer(store, BUCKET), "incoming/a.zip")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        # While the loser waits on the claim, the winner finishes the import.
        waits.append(seconds)
        if len(waits) == 1:
            finish_winner()

    class CountingStore(Store):
        token_writes = 0

        def add_tokens(self, *args: Any, **kwargs: Any) -> Any:
            CountingStore.token_writes += 1
            return super().add_tokens(*args, **kwargs)

    loser = Importer(CountingStore(TABLE, dynamodb), BUCKET, sleep=sleep)

    assert loser.ingest("incoming/a.zip") is None
    assert waits  # it waited for the winner
    assert CountingStore.token_writes == 0  # and wrote no token: the winner's counts stay whole
    body = report(s3, "processed/")
    assert (body["status"], body["tokens_added"], body["tokens_already_known"]) == ("processed", 10, 0)
    assert keys(s3, "incoming/") == []
    assert check_invariants(store)["tokens"] == {"available": 10}


def claim_then_pause(importer: Importer, key: str) -> Callable[[], None]:
    """Start ``importer`` on ``key`` in a thread that stops right after it has claimed the import;
    the returned function lets it finish (and waits for it)."""
    claimed, go = threading.Event(), threading.Event()
    original = importer._claim

    def claim(*args: Any, **kwargs: Any) -> bool:
        held = original(*args, **kwargs)
        claimed.set()
        go.wait(timeout=30)
        return held

    importer._claim = claim  # type: ignore[method-assign]
    thread = threading.Thread(target=importer.ingest, args=(key,))
    thread.start()
    assert claimed.wait(timeout=30)

    def finish() -> None:
        go.set()
        thread.join(timeout=30)

    return finish


def test_a_delivery_leaves_a_slow_live_import_to_its_holder_however_long_it_takes(env, store, dynamodb):
    """The holder's checkpoint is its heartbeat: a second delivery of the event that finds the import
    claimed and its checkpoint moving stops as handled, even when the import outlasts the claim
    wait (a 500,000-row import runs for minutes), and writes no token beside it."""
    s3 = env
    tokens = make_tokens(400)  # five chunks of tokens
    s3.put_object(Bucket=BUCKET, Key="incoming/big.zip", Body=make_export(tokens))
    writing = threading.Event()

    class SlowStore(Store):
        def add_tokens(self, *args: Any, **kwargs: Any) -> Any:
            writing.set()
            threading.Event().wait(0.3)  # 1.5 s in all: longer than the second delivery waits
            return super().add_tokens(*args, **kwargs)

    holder = threading.Thread(
        target=Importer(SlowStore(TABLE, dynamodb), BUCKET).ingest, args=("incoming/big.zip",)
    )
    holder.start()
    assert writing.wait(timeout=30)

    class CountingStore(Store):
        token_writes = 0

        def add_tokens(self, *args: Any, **kwargs: Any) -> Any:
            CountingStore.token_writes += 1
            return super().add_tokens(*args, **kwargs)

    second = Importer(CountingStore(TABLE, dynamodb), BUCKET, claim_wait_seconds=0.8)
    assert second.ingest("incoming/big.zip") is None
    holder.join(timeout=60)
    assert CountingStore.token_writes == 0
    body = report(s3, "processed/")
    assert (body["status"], body["tokens_added"], body["tokens_already_known"]) == ("processed", 400, 0)
    assert check_invariants(store)["tokens"] == {"available": 400}


def test_a_claim_left_by_an_attempt_that_died_is_taken_over(env, store, dynamodb, caplog):
    s3 = env
    caplog.set_level(logging.INFO)
    s3.put_object(Bucket=BUCKET, Key="incoming/a.zip", Body=make_export(TOKENS[:10]))

    class DiesWritingTokens(Store):
        def add_tokens(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the function timed out")

    with pytest.raises(RuntimeError):
        Importer(DiesWritingTokens(TABLE, dynamodb), BUCKET).ingest("incoming/a.zip")
    assert report(s3, "processed/")["status"] == "processing"  # the claim it left behind

    outcome = Importer(store, BUCKET, claim_wait_seconds=0.2).ingest("incoming/a.zip")
    assert outcome is not None and outcome.tokens_added == 10
    assert "Taking over an import whose earlier attempt stopped" in [r.getMessage() for r in caplog.records]
    assert report(s3, "processed/")["status"] == "processed"
    assert store.get_import(outcome.sha256)["status"] == "processed"
    assert keys(s3, "incoming/") == []
    assert check_invariants(store)["tokens"] == {"available": 10}
