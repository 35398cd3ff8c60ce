"""moto with tokenflow_local.moto_speedups answers exactly as moto without them.

Each scenario runs twice against a fresh in-process moto, once with moto's own code and once
patched, and the answers (items, counts, LastEvaluatedKey, cancellation reasons, receive counts,
queue attributes) must be equal. The scenarios cover what the patches change: index and table
queries with and without range conditions, Limit and ExclusiveStartKey (the heap short cut and the
unsorted reads), comparisons of S, N and BOOL values, transactions that commit and that roll back,
and SQS visibility, delays and redrive (the clock). The patches are forced onto whatever moto is
installed, so this test is also the check to run before ``WRITTEN_FOR`` moves to a new moto.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models.table import Table

from tokenflow_local import moto_speedups
from tokenflow_local.resources import create_table

TABLE = "parity"
REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements-dev.txt"


def moto_answers_queries() -> bool:
    """Whether ``Table.query`` is moto's own code (not the patched one)."""
    return Table.query.__module__ == "moto.dynamodb.models.table"


@pytest.fixture
def both_ways() -> Iterator[Callable[[Callable[[], Any]], tuple[Any, Any]]]:
    """Runs a scenario on moto unpatched, then patched; leaves the patches as it found them."""
    was_installed = moto_speedups.installed()

    def run(scenario: Callable[[], Any]) -> tuple[Any, Any]:
        answers = []
        for patched in (False, True):
            moto_speedups.uninstall()
            if patched:
                assert moto_speedups.install(force=True)
            assert moto_answers_queries() != patched
            with mock_aws():
                answers.append(scenario())
        return answers[0], answers[1]

    yield run
    moto_speedups.uninstall()
    if was_installed:
        moto_speedups.install(force=True)


# ---- DynamoDB -------------------------------------------------------------------------------------


def _fill(dynamodb: Any) -> None:
    """Tokens on three shards of the ``available`` index (some sort keys shared, some claimed tokens
    off the index), devices on ``by-state`` (ties in the sort key), QR codes on ``by-qr``, and one
    partition with many sort keys."""
    rng = random.Random(11)
    items: list[dict[str, Any]] = []
    for n in range(120):
        item: dict[str, Any] = {
            "pk": {"S": f"TOKEN#{n:04d}"},
            "sk": {"S": "META"},
            "token": {"S": f"t{n:04d}"},
            "qr_token": {"S": f"QR{n % 60:03d}"},
            "n": {"N": str(n % 17)},
            "flag": {"BOOL": n % 2 == 0},
        }
        if n % 9:  # every ninth token is claimed: off the index
            # Ties on the index's sort key: the table's keys order them.
            ask = "80000000" if n % 10 == 0 else f"{rng.getrandbits(32):08x}"
            item.update(apk={"S": f"AVAIL#{n % 3}"}, ask={"S": ask})
        elif n % 2:
            item["apk"] = {"S": f"AVAIL#{n % 3}"}  # a hash key without its sort key: not indexed
        items.append(item)
    for n in range(30):
        items.append(
            {
                "pk": {"S": f"DEVICE#{n:03d}"},
                "sk": {"S": "META"},
                "gsi1pk": {"S": f"STATE#{('waiting', 'delivered', 'confirmed')[n % 3]}"},
                "gsi1sk": {"S": f"2026-01-0{n % 4 + 1}T00:00:00Z"},
                "n": {"N": f"{n}.5"},
            }
        )
    for n in range(40):
        items.append(
            {
                "pk": {"S": "IMPORT#1"},
                "sk": {"S": f"ROW#{n:03d}"},
                "n": {"N": str(40 - n)},
                "flag": {"BOOL": n % 3 == 0},
                "tags": {"L": [{"S": "a"}, {"N": str(n % 2)}]},
            }
        )
    # Written out of key order: an item's place in moto's dict must not decide which ties a query sees.
    rng.shuffle(items)
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={TABLE: batch})


def _fill_numbers(dynamodb: Any) -> None:
    """A table with number keys (the template's are all strings): sort keys whose text order is not
    their numeric order, and index hash keys written two ways ("1" and "1.0": one number)."""
    number = "N"
    dynamodb.create_table(
        TableName=NUMBERS,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": number},
            {"AttributeName": "level", "AttributeType": number},
            {"AttributeName": "score", "AttributeType": number},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": LEVELS,
                "KeySchema": [
                    {"AttributeName": "level", "KeyType": "HASH"},
                    {"AttributeName": "score", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for n in range(48):
        level = str(n % 3) + (".0" if n % 2 else "")
        item = {
            "pk": {"S": f"P{n % 2}"},
            "sk": {number: str(Decimal(n) / 4)},
            "level": {number: level},
            "score": {number: str((n * 7) % 23 - 11)},
        }
        dynamodb.put_item(TableName=NUMBERS, Item=item)


def _pages(dynamodb: Any, operation: str, **request: Any) -> list[dict[str, Any]]:
    """Every page of a Query or Scan, following LastEvaluatedKey as ExclusiveStartKey."""
    call = getattr(dynamodb, operation)
    pages = []
    while True:
        answer = call(**{"TableName": TABLE, **request})
        answer.pop("ResponseMetadata")
        pages.append(answer)
        if "LastEvaluatedKey" not in answer or len(pages) > 200:
            return pages
        request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def _values(**values: Any) -> dict[str, Any]:
    typed = {}
    for name, value in values.items():
        if isinstance(value, bool):
            typed[f":{name}"] = {"BOOL": value}
        elif isinstance(value, int | Decimal):
            typed[f":{name}"] = {"N": str(value)}
        else:
            typed[f":{name}"] = {"S": value}
    return typed


AVAILABLE = "available"
NUMBERS, LEVELS = "parity-numbers", "by-level"
QUERIES: list[dict[str, Any]] = [
    # How an assign worker claims: the first token at or after a random point, one at a time.
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND ask >= :s", "Limit": 1},
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND ask >= :s", "Limit": 7},
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND ask > :tie", "Limit": 1},
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND ask >= :tie", "Limit": 2},
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND ask BETWEEN :a AND :b", "Limit": 3},
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND begins_with(ask, :s)", "Limit": 2},
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND ask < :s", "Limit": 4},
    {
        "IndexName": AVAILABLE,
        "KeyConditionExpression": "apk = :p AND ask <= :s",
        "Limit": 4,
        "ScanIndexForward": False,
    },
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p", "Limit": 5},
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :p AND ask >= :s"},
    {
        "IndexName": AVAILABLE,
        "KeyConditionExpression": "apk = :p AND ask >= :s",
        "Limit": 3,
        "Select": "COUNT",
    },
    {
        "IndexName": AVAILABLE,
        "KeyConditionExpression": "apk = :p AND ask >= :s",
        "Limit": 6,
        "FilterExpression": "#t > :t",
        "ExpressionAttributeNames": {"#t": "token"},
    },
    {"IndexName": AVAILABLE, "KeyConditionExpression": "apk = :none AND ask >= :s", "Limit": 1},
    {
        "IndexName": "by-state",
        "KeyConditionExpression": "gsi1pk = :w AND begins_with(gsi1sk, :d)",
        "Limit": 4,
    },
    {
        "IndexName": "by-state",
        "KeyConditionExpression": "gsi1pk = :w",
        "Limit": 10,
        "ScanIndexForward": False,
    },
    {"IndexName": "by-state", "KeyConditionExpression": "gsi1pk = :w AND gsi1sk > :d", "Limit": 3},
    {"IndexName": "by-qr", "KeyConditionExpression": "qr_token = :q"},
    {
        "KeyConditionExpression": "pk = :i AND begins_with(sk, :r)",
        "Limit": 6,
        "FilterExpression": "flag = :yes AND n >= :n",
        "ProjectionExpression": "pk, sk, n, tags",
    },
    {"KeyConditionExpression": "pk = :i AND sk > :row", "Limit": 5, "ScanIndexForward": False},
    {"KeyConditionExpression": "pk = :i AND sk BETWEEN :row AND :last"},
    {"TableName": NUMBERS, "KeyConditionExpression": "pk = :p0 AND sk >= :x", "Limit": 3},
    {
        "TableName": NUMBERS,
        "KeyConditionExpression": "pk = :p0 AND sk BETWEEN :x AND :y",
        "Limit": 4,
        "ScanIndexForward": False,
    },
    {
        "TableName": NUMBERS,
        "IndexName": LEVELS,
        "KeyConditionExpression": "level = :one AND score > :neg",
        "Limit": 2,
    },
    {"TableName": NUMBERS, "IndexName": LEVELS, "KeyConditionExpression": "level = :one", "Limit": 5},
]
VALUES = _values(
    p="AVAIL#1",
    s="8",
    tie="80000000",
    a="3",
    b="c",
    t="t0100",
    none="AVAIL#9",
    w="STATE#waiting",
    d="2026-01-02",
    q="QR007",
    i="IMPORT#1",
    r="ROW#0",
    row="ROW#010",
    last="ROW#030",
    yes=True,
    n=10,
    p0="P0",
    x=Decimal("2.5"),
    y=10,
    one=1,
    neg=-3,
)
SCANS: list[dict[str, Any]] = [
    {"Limit": 50},
    {"IndexName": AVAILABLE, "Limit": 20},
    {
        "Limit": 30,
        "FilterExpression": "n BETWEEN :lo AND :hi",
        "ExpressionAttributeValues": _values(lo=3, hi=7),
    },
    {"TableName": NUMBERS, "Limit": 7},
    {"TableName": NUMBERS, "IndexName": LEVELS, "Limit": 9},
]


def _used_values(request: dict[str, Any]) -> dict[str, Any]:
    expressions = " ".join(str(request.get(k, "")) for k in ("KeyConditionExpression", "FilterExpression"))
    return {name: value for name, value in VALUES.items() if re.search(rf"{name}\b", expressions)}


def _queries_and_scans(
    dynamodb: Any, queries: list[dict[str, Any]] = QUERIES, scans: list[dict[str, Any]] = SCANS
) -> list[Any]:
    answers: list[Any] = []
    for query in queries:
        answers.append(_pages(dynamodb, "query", **query, ExpressionAttributeValues=_used_values(query)))
    for scan in scans:
        answers.append(_pages(dynamodb, "scan", **scan))
    return answers


def _table(dynamodb: Any) -> list[dict[str, Any]]:
    items = [item for page in _pages(dynamodb, "scan") for item in page["Items"]]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def test_index_and_table_queries_answer_the_same_with_and_without_the_patches(both_ways):
    def scenario() -> list[Any]:
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table(dynamodb, TABLE)
        _fill(dynamodb)
        _fill_numbers(dynamodb)
        return _queries_and_scans(dynamodb)

    unpatched, patched = both_ways(scenario)

    assert patched == unpatched
    # The scenario means something: the claim query finds one token and pages on, and ties and
    # paging happened where they were meant to.
    claim_pages = unpatched[0]
    assert len(claim_pages[0]["Items"]) == 1 and "LastEvaluatedKey" in claim_pages[0]
    assert len(claim_pages) > 10
    assert sum(page["Count"] for page in unpatched[3]) >= 2  # the shared sort key "80000000"
    assert unpatched[12] == [{"Items": [], "Count": 0, "ScannedCount": 0}]
    levels = {item["level"]["N"] for page in unpatched[23] for item in page["Items"]}
    assert levels == {"1", "1.0"}  # one number, written two ways
    sort_keys = [Decimal(item["sk"]["N"]) for page in unpatched[20] for item in page["Items"]]
    assert sort_keys == sorted(sort_keys) and len(sort_keys) > 3  # numeric order, not text order


def test_transactions_commit_and_roll_back_the_same_with_and_without_the_patches(both_ways):
    def claim(token: str, device: str, *, when: str = "attribute_exists(apk)") -> dict[str, Any]:
        return {
            "Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": token}, "sk": {"S": "META"}},
                "UpdateExpression": "REMOVE apk, ask SET holder = :d",
                "ConditionExpression": when,
                "ExpressionAttributeValues": {":d": {"S": device}},
            }
        }

    def scenario() -> list[Any]:
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table(dynamodb, TABLE)
        _fill(dynamodb)
        # The index queried before the writes too: the patched moto's kept index partitions are built
        # now, and every write below must keep them right (the queries at the end say so).
        answers: list[Any] = [_queries_and_scans(dynamodb, QUERIES[:4], [])]
        committed = [
            claim("TOKEN#0001", "DEVICE#001"),
            {
                "Put": {
                    "TableName": TABLE,
                    "Item": {"pk": {"S": "DEVICE#001"}, "sk": {"S": "TOKEN"}, "token": {"S": "TOKEN#0001"}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        dynamodb.transact_write_items(TransactItems=committed)
        cancelled = [
            [  # updates, a new item and a delete before the failing check: all must be undone
                claim("TOKEN#0002", "DEVICE#002"),
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "NEW#1"}, "sk": {"S": "META"}}}},
                {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "TOKEN#0004"}, "sk": {"S": "META"}}}},
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "TOKEN#0001"}, "sk": {"S": "META"}},
                        "ConditionExpression": "attribute_exists(apk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ],
            [claim("TOKEN#0001", "DEVICE#003"), claim("TOKEN#0005", "DEVICE#003")],  # fails first
            [claim("TOKEN#0007", "DEVICE#004"), claim("TOKEN#0009", "DEVICE#004", when="n = :d")],
        ]
        for items in cancelled:
            with pytest.raises(ClientError) as failure:
                dynamodb.transact_write_items(TransactItems=items)
            error = failure.value.response
            answers.append((error["Error"], error.get("CancellationReasons")))
        answers.append(_table(dynamodb))
        # The index after claims and rollbacks (the claim queries; the whole table is compared above).
        answers.append(_queries_and_scans(dynamodb, QUERIES[:4], []))
        # And after single writes: a claim, a release back onto another shard, a new token, a delete,
        # a batch of puts and deletes, a put replacing an indexed token with an unindexed one.
        token = {"sk": {"S": "META"}}
        dynamodb.update_item(
            TableName=TABLE, Key={"pk": {"S": "TOKEN#0010"}, **token}, UpdateExpression="REMOVE apk, ask"
        )
        dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "TOKEN#0001"}, **token},
            UpdateExpression="SET apk = :p, ask = :a REMOVE holder",
            ExpressionAttributeValues={":p": {"S": "AVAIL#1"}, ":a": {"S": "80000001"}},
        )
        dynamodb.put_item(
            TableName=TABLE,
            Item={"pk": {"S": "TOKEN#0500"}, **token, "apk": {"S": "AVAIL#1"}, "ask": {"S": "9"}},
        )
        dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "TOKEN#0013"}, **token})
        dynamodb.batch_write_item(
            RequestItems={
                TABLE: [
                    {
                        "PutRequest": {
                            "Item": {
                                "pk": {"S": "TOKEN#0501"},
                                **token,
                                "apk": {"S": "AVAIL#1"},
                                "ask": {"S": "90"},
                            }
                        }
                    },
                    {"DeleteRequest": {"Key": {"pk": {"S": "TOKEN#0016"}, **token}}},
                ]
            }
        )
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "TOKEN#0019"}, **token, "token": {"S": "t0019"}})
        answers.append(_queries_and_scans(dynamodb, QUERIES[:4], []))
        return answers

    unpatched, patched = both_ways(scenario)

    assert patched == unpatched
    # The single writes moved tokens on and off the AVAIL#1 shard: the first claim query sees them.
    first_after, first_before = unpatched[-1][0][0]["Items"], unpatched[-2][0][0]["Items"]
    assert first_after != first_before
    reasons = [[r["Code"] for r in cancellation] for _, cancellation in unpatched[1:4]]
    assert reasons == [
        ["None", "None", "None", "ConditionalCheckFailed"],
        ["ConditionalCheckFailed", "None"],
        ["None", "ConditionalCheckFailed"],
    ]
    table = {(item["pk"]["S"], item["sk"]["S"]): item for item in unpatched[4]}
    assert table[("TOKEN#0001", "META")]["holder"] == {"S": "DEVICE#001"}
    assert "holder" not in table[("TOKEN#0002", "META")] and ("TOKEN#0004", "META") in table
    assert ("NEW#1", "META") not in table


def test_update_expressions_answer_the_same_with_and_without_the_kept_syntax_trees(both_ways):
    """The same expression strings again and again (the kept tree), with other values each time,
    on items that exist and that do not, in transactions, and strings that do not parse."""
    expressions = [
        ("SET n = n + :one, holder = :d", {":one": {"N": "1"}, ":d": {"S": "DEVICE#1"}}),
        ("SET n = n + :one, holder = :d", {":one": {"N": "5"}, ":d": {"S": "DEVICE#2"}}),
        ("REMOVE apk, ask SET holder = :d", {":d": {"S": "DEVICE#3"}}),
        (
            "SET tags = list_append(if_not_exists(tags, :empty), :t)",
            {":empty": {"L": []}, ":t": {"L": [{"S": "a"}]}},
        ),
        (
            "SET tags = list_append(if_not_exists(tags, :empty), :t)",
            {":empty": {"L": []}, ":t": {"L": [{"S": "b"}]}},
        ),
        ("ADD seen :s", {":s": {"SS": ["x", "y"]}}),
        ("ADD seen :s", {":s": {"SS": ["y", "z"]}}),
        ("SET n = n + :one", {":one": {"S": "not a number"}}),  # a type error, every time
        ("SET = :d", {":d": {"S": "x"}}),  # does not parse
        ("SET = :d", {":d": {"S": "x"}}),  # still does not parse (the error is not kept)
    ]

    def scenario() -> list[Any]:
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table(dynamodb, TABLE)
        _fill(dynamodb)
        answers: list[Any] = []
        for n, (expression, values) in enumerate(expressions):
            for key in (f"TOKEN#{n:04d}", f"MISSING#{n}"):
                request = {
                    "TableName": TABLE,
                    "Key": {"pk": {"S": key}, "sk": {"S": "META"}},
                    "UpdateExpression": expression,
                    "ExpressionAttributeValues": values,
                }
                try:
                    answers.append(dynamodb.update_item(**request, ReturnValues="ALL_NEW").get("Attributes"))
                except ClientError as exc:
                    answers.append(exc.response["Error"])
                try:
                    dynamodb.transact_write_items(TransactItems=[{"Update": request}])
                    answers.append("committed")
                except ClientError as exc:
                    answers.append((exc.response["Error"], exc.response.get("CancellationReasons")))
        answers.append(_table(dynamodb))
        return answers

    unpatched, patched = both_ways(scenario)

    assert patched == unpatched
    errors = [a for a in unpatched if isinstance(a, dict) and "Code" in a]
    assert len(errors) >= 4  # the type error and the unparsable strings fail, patched or not


# ---- SQS ------------------------------------------------------------------------------------------


class _Queue:
    """One queue, read as the assign pollers read it; remembers each body's last receipt handle."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url
        self.handles: dict[str, str] = {}
        self.sent_ages: list[float] = []  # ms between a message's SentTimestamp and its receive

    def receive(self, **request: Any) -> list[tuple[str, str]]:
        """(body, receive count) of what one receive returns, in moto's order."""
        request = {"MaxNumberOfMessages": 10, "WaitTimeSeconds": 0, **request}
        answer = self.sqs.receive_message(
            QueueUrl=self.url, AttributeNames=["ApproximateReceiveCount", "SentTimestamp"], **request
        )
        messages = answer.get("Messages", [])
        now = time.time() * 1000
        self.sent_ages += [now - int(m["Attributes"]["SentTimestamp"]) for m in messages]
        self.handles.update({m["Body"]: m["ReceiptHandle"] for m in messages})
        return [(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in messages]

    def release(self, bodies: list[str]) -> None:
        """Visible again at once, as the local pollers return a failed message."""
        for body in bodies:
            self.sqs.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=self.handles[body], VisibilityTimeout=0
            )

    def delete(self, bodies: list[str]) -> None:
        entries = [{"Id": str(n), "ReceiptHandle": self.handles[body]} for n, body in enumerate(bodies)]
        self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)

    def attributes(self, names: list[str]) -> dict[str, str]:
        return self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)["Attributes"]

    def counts(self) -> dict[str, str]:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        return self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)["Attributes"]


def test_sqs_send_receive_visibility_and_redrive_answer_the_same_with_and_without_the_patches(both_ways):
    def scenario() -> dict[str, Any]:
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = _Queue(sqs, sqs.create_queue(QueueName="parity-dlq")["QueueUrl"])
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq.url, AttributeNames=["QueueArn"])["Attributes"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn["QueueArn"], "maxReceiveCount": "2"})
        attributes = {"VisibilityTimeout": "30", "RedrivePolicy": redrive}
        queue = _Queue(sqs, sqs.create_queue(QueueName="parity", Attributes=attributes)["QueueUrl"])
        entries = [{"Id": str(n), "MessageBody": f"m{n}"} for n in range(10)]
        sqs.send_message_batch(QueueUrl=queue.url, Entries=entries)
        sqs.send_message(QueueUrl=queue.url, MessageBody="late", DelaySeconds=1)
        brief = _Queue(sqs, sqs.create_queue(QueueName="parity-brief")["QueueUrl"])
        sqs.send_message(QueueUrl=brief.url, MessageBody="brief")
        steps: dict[str, Any] = {"sent": queue.counts()}
        steps["brief"] = brief.receive(VisibilityTimeout=1)
        steps["brief in flight"] = brief.receive()
        steps["first"] = queue.receive(MaxNumberOfMessages=4)
        steps["after first"] = queue.counts()
        queue.release([body for body, _ in steps["first"]])
        steps["second"] = queue.receive()
        steps["after second"] = queue.counts()
        queue.release(["m0", "m1"])  # received twice already: the next receive redrives them
        steps["third"] = queue.receive()
        steps["after third"] = queue.counts()
        steps["dead-letter counts"] = dlq.counts()
        steps["dead letters"] = sorted(dlq.receive())
        steps["nothing due"] = queue.receive()
        time.sleep(1.1)  # "late" is due now, and the brief visibility has run out
        steps["late"] = queue.receive()
        steps["brief again"] = brief.receive()
        queue.delete(["late"])
        steps["end"] = queue.counts()
        # Every attribute, in moto's order (the timestamps and ARN differ from run to run: names only).
        for name, q in (("all attributes", queue), ("all attributes of the dead-letter queue", dlq)):
            every = q.attributes(["All"])
            steps[name] = [
                (k, v if "Timestamp" not in k and k != "QueueArn" and "deadLetterTargetArn" not in v else "~")
                for k, v in every.items()
            ]
        # moto's clock (the patched one) is the wall clock in ms: sent in this scenario, a few s ago.
        steps["sent timestamps on the clock"] = all(
            0 <= age < 5000 for age in queue.sent_ages + brief.sent_ages
        )
        return steps

    unpatched, patched = both_ways(scenario)

    assert patched == unpatched
    first = unpatched["first"]
    assert len(first) == 4 and {count for _, count in first} == {"1"}
    expected_second = [(body, "2") for body, _ in first] + [(f"m{n}", "1") for n in range(4, 10)]
    assert sorted(unpatched["second"]) == sorted(expected_second)
    assert unpatched["third"] == []
    assert [body for body, _ in unpatched["dead letters"]] == ["m0", "m1"]
    assert unpatched["nothing due"] == []
    assert unpatched["brief"] == [("brief", "1")] and unpatched["brief in flight"] == []
    assert unpatched["late"] == [("late", "1")]
    assert unpatched["brief again"] == [("brief", "2")]
    assert unpatched["sent timestamps on the clock"] is True
    names = [name for name, _ in unpatched["all attributes"]]
    assert {"RedrivePolicy", "VisibilityTimeout", "ApproximateNumberOfMessagesNotVisible"} <= set(names)
    assert dict(unpatched["all attributes"])["VisibilityTimeout"] == "30"
    assert unpatched["end"] == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "8",  # m2..m9, still in their 30 s
        "ApproximateNumberOfMessagesDelayed": "0",
    }


# ---- the version guard -----------------------------------------------------------------------------


def test_the_patches_are_written_for_the_moto_that_requirements_pin():
    pinned = re.search(r"^moto==(\S+)$", REQUIREMENTS.read_text(), re.MULTILINE)
    assert pinned is not None
    assert pinned.group(1) == moto_speedups.WRITTEN_FOR


def test_another_moto_version_is_left_unpatched_with_a_warning(both_ways, monkeypatch):
    moto_speedups.uninstall()
    monkeypatch.setattr(moto_speedups, "MOTO_VERSION", "5.0.0")
    written_for = re.escape(moto_speedups.WRITTEN_FOR)
    with pytest.warns(RuntimeWarning, match=rf"moto 5\.0\.0 is installed .* written for moto {written_for}"):
        assert moto_speedups.install() is False
    assert not moto_speedups.installed()
    assert moto_answers_queries()
