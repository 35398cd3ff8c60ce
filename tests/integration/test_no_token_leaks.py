"""No AuthToken of an export escapes ingest: not into S3 keys, reports, records, API answers or logs.

Real zip files (and bare CSVs) carry tokens everywhere a token can hide: a CSV without a header
(whose first line a rejection quotes), entry names (``qr/<token>.png``, macOS resource forks
``__MACOSX/qr/._<token>.png``, a second image of the same name, a folder, a dot-file, the CSV's own
name), encrypted archives (a real ZipCrypto archive, which ``zipfile`` opens with the password)
whose entry names carry tokens, malformed rows, metadata columns and the upload's own key. They go
through the ingest handler with S3 events, against moto; then every S3 key, every report, every
DynamoDB item but each token's own ``TOKEN#`` item, the API's ``GET /imports`` and
``GET /imports/{id}`` answers and every captured log line and metric are searched for every token.

And a table of ``tokens.redact`` cases: the one rule every echo goes through.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import struct
import zipfile
import zlib

import boto3
import pytest

from tests.conftest import BUCKET, TABLE
from tests.support.events import load_event
from tests.support.factories import BLYNK_DOC_TOKEN
from tests.support.invariants import scan_all
from tokenflow.observability import logger
from tokenflow.tokens import is_auth_token, redact, token_id
from tokenflow_local import lambda_runtime
from tokenflow_local.lambda_runtime import LambdaContext, s3_put_event
from tokenflow_local.sample_export import SampleToken, make_tokens, qr_png
from tokenflow_local.stack import forget_clients

T = make_tokens(40, seed=31)
ALL_TOKENS = [t.token for t in T]
PASSWORD = b"export-password"
PNG = qr_png("sqr_placeholder")
HEADER = ["Device Token", "QR Token", "Serial Number", "Device Name"]


# ---- building the files ---------------------------------------------------------------------------


def csv_lines(rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def row(t: SampleToken, n: int) -> list[str]:
    return [t.token, t.qr_token, f"SN-{n}", f"Pump {n}"]


def zip_of(entries: list[tuple[str, bytes | str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def _crc_byte(crc: int, byte: int) -> int:
    # One step of the CRC-32 that ZipCrypto's key schedule uses (zlib's, without its inversions).
    return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def zipcrypto_zip(entries: list[tuple[str, bytes]], password: bytes) -> bytes:
    """A password-protected zip in the traditional PKWARE encryption ("ZipCrypto"), entries stored.

    The algorithm is APPNOTE.TXT section 6.1 (https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT):
    three keys updated with every plaintext byte, a 12-byte encryption header whose last byte is
    the high byte of the CRC, general purpose bit 0 set in both headers. zipfile decrypts it,
    which the test checks, so this is the archive a zip tool makes when asked for a password.
    """
    local = bytearray()
    central = bytearray()
    for index, (name, data) in enumerate(entries):
        keys = [0x12345678, 0x23456789, 0x34567890]

        def update(byte: int, keys: list[int] = keys) -> None:
            keys[0] = _crc_byte(keys[0], byte)
            keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
            keys[2] = _crc_byte(keys[2], keys[1] >> 24)

        def encrypt(plain: bytes, keys: list[int] = keys) -> bytes:
            out = bytearray()
            for byte in plain:
                temp = (keys[2] | 2) & 0xFFFF
                out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
                update(byte)
            return bytes(out)

        for byte in password:
            update(byte)
        crc = zlib.crc32(data)
        header = bytes([(index * 37 + i) & 0xFF for i in range(11)]) + bytes([crc >> 24])
        payload = encrypt(header) + encrypt(data)
        encoded = name.encode()
        offset = len(local)
        fields = (20, 0x1, 0, 0, 0x5C21, crc, len(payload), len(data), len(encoded), 0)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + encoded + payload
        central += (
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields[:-1], 0, 0, 0, 0, 0o644 << 16, offset)
            + encoded
        )
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(local), 0
    )
    return bytes(local + central + end)


def crc_damaged_zip(csv_name: str, text: str) -> bytes:
    data = bytearray(zip_of([(csv_name, text)]))
    # Flip one byte of the deflated CSV: the archive still lists, the entry fails its CRC on reading.
    data[30 + len(csv_name.encode()) + 5] ^= 0xFF
    return bytes(data)


def exports() -> dict[str, bytes]:
    """Upload key -> bytes. Each file hides tokens in another place; tokens are never reused."""
    header = [*HEADER, T[18].token]  # a column named after a token; one row has a token in it
    good = [[*row(t, n), T[27].token if n == 0 else ""] for n, t in enumerate(T[4:10])]
    bad = [
        [T[10].token + "x", T[10].qr_token, "SN-bad", "too long", ""],
        [T[11].token, T[11].qr_token, "SN-bad", "one field", "too", "many"],
        [T[12].token, "sqr_" + T[13].token[:20], "SN-bad", "bad QR token", ""],
        [T[4].token, T[4].qr_token, "SN-dup", "duplicate row", ""],
        [f" {T[14].token}-", "", "SN-bad", "token with a dash after it", ""],
    ]
    text = csv_lines([header, *good, *bad])
    junk_zip = zip_of([("inner.csv", "x")])
    return {
        # A CSV without a header row: the rejection quotes its first line.
        "incoming/headerless.csv": csv_lines([row(T[0], 0), row(T[1], 1)]).encode(),
        "incoming/headerless.zip": zip_of(
            [("tokens.csv", csv_lines([row(T[2], 2)])), (f"qr/{T[2].token}.png", PNG)]
        ),
        # Tab-separated and quoted with repr: the tab becomes "\t", glued to the token as "t<token>".
        "incoming/headerless-tab.csv": csv_lines([["SN-3", T[3].token, T[3].qr_token]], "\t").encode(),
        # A good export under a key named after a token, with tokens in names and rows around it.
        f"incoming/{T[4].token}.zip": zip_of(
            [
                (f"{T[26].token}.csv", text),
                *[(f"qr/{t.token}.png", PNG) for t in T[4:10]],
                (f"__MACOSX/qr/._{T[5].token}.png", b"\x00\x05\x16\x07resource fork"),
                (f"__MACOSX/qr/._{T[15].token}.png", b"\x00\x05\x16\x07resource fork"),
                (f"qr/again/{T[6].token}.png", PNG),  # the same image name twice
                (f"{T[16].token}/readme.txt", "a folder named after a token"),
                (f".{T[17].token}", "a dot-file"),
                (f"qr/{T[28].token}_1.png", PNG),  # an image no row pairs with
            ]
        ),
        # Encrypted: the rejection names the first encrypted entry.
        "incoming/encrypted.zip": zipcrypto_zip(
            [(f"qr/{T[19].token}.png", PNG), ("tokens.csv", csv_lines([HEADER, row(T[29], 0)]).encode())],
            PASSWORD,
        ),
        "incoming/encrypted-fork.zip": zipcrypto_zip(
            [(f"__MACOSX/qr/._{T[20].token}.png", b"fork"), (f"{T[30].token}.csv", b"x")], PASSWORD
        ),
        "incoming/two-csvs.zip": zip_of([(f"{T[21].token}.csv", "a"), (f"b/{T[22].token}.csv", "b")]),
        "incoming/nested.zip": zip_of([(f"{T[23].token}.zip", junk_zip), ("tokens.csv", "x")]),
        "incoming/unsafe.zip": zip_of([(f"../{T[24].token}.png", PNG), ("tokens.csv", "x")]),
        "incoming/damaged.zip": crc_damaged_zip(
            f"{T[25].token}.csv", csv_lines([HEADER, row(T[31], 0)]) * 50
        ),
        # A key that glues a token between separators, over a header-less file.
        f"incoming/export_{T[32].token}_final.csv": csv_lines([row(T[33], 0)]).encode(),
    }


# ---- running them ---------------------------------------------------------------------------------


@pytest.fixture
def world(monkeypatch, dynamodb, s3):
    queue_url = boto3.client("sqs").create_queue(QueueName="assign")["QueueUrl"]
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("EXPORTS_BUCKET", BUCKET)
    monkeypatch.setenv("ASSIGN_QUEUE_URL", queue_url)
    monkeypatch.setenv("SWEEP_FUNCTION_NAME", "")
    forget_clients()
    yield {
        "s3": s3,
        "dynamodb": dynamodb,
        "ingest": lambda_runtime.load_handler("ingest", fresh=True),
        "api": lambda_runtime.load_handler("api", fresh=True),
    }
    forget_clients()


def api_get(world, path: str) -> tuple[int, str]:
    fixture = "get-imports.json" if path == "/imports" else "get-summary.json"
    event = load_event(f"api/{fixture}")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    if path != "/imports":
        event["queryStringParameters"], event["rawQueryString"] = None, ""
    answer = world["api"].lambda_handler(event, LambdaContext(function_name="api"))
    return answer["statusCode"], answer["body"]


def all_keys(s3) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_encrypted_exports_are_real_password_protected_archives():
    data = exports()["incoming/encrypted.zip"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert all(info.flag_bits & 0x1 for info in archive.infolist())
        with pytest.raises(RuntimeError, match="password required"):
            archive.read(f"qr/{T[19].token}.png")
        assert archive.read(f"qr/{T[19].token}.png", pwd=PASSWORD) == PNG
        assert archive.read("tokens.csv", pwd=PASSWORD).startswith(b"Device Token,")


def test_no_auth_token_of_any_export_escapes_ingest(world, capsys, caplog):
    caplog.set_level(logging.INFO)
    s3 = world["s3"]
    files = exports()
    for key, data in files.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        world["ingest"].lambda_handler(s3_put_event(BUCKET, key), LambdaContext(function_name="ingest"))
    # The good export again under another key (named after a token too): a duplicate, whose report
    # quotes the first upload's key; and a rejected file again, whose report quotes the old reason.
    again = {f"incoming/copy of {T[34].token}.zip": files[f"incoming/{T[4].token}.zip"]}
    again[f"incoming/{T[35].token}-retry.csv"] = files["incoming/headerless.csv"]
    for key, data in again.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        world["ingest"].lambda_handler(s3_put_event(BUCKET, key), LambdaContext(function_name="ingest"))

    # What happened is what the files call for (so the search below looks at real output).
    keys = all_keys(s3)
    assert not [k for k in keys if k.startswith("incoming/")]
    reports = {
        k: json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())
        for k in keys
        if k.endswith(".report.json")
    }
    assert len(reports) == len(files) + len(again)
    statuses = sorted(r["status"] for r in reports.values())
    assert statuses.count("processed") == 1 and statuses.count("duplicate") == 1
    reasons = "\n".join(r.get("reason", "") for r in reports.values())
    for expected in (
        "no device-token column",
        "encrypted",
        "2 CSV files",
        "another archive",
        "unsafe entry name",
    ):
        assert expected in reasons
    assert "cannot read" in reasons
    [good] = [r for r in reports.values() if r["status"] == "processed"]
    assert good["tokens_added"] == 6
    assert len(good["ignored_entries"]) == 5 and len(good["problems"]) == 5
    assert f"{T[0].token[:4]}…{T[0].token[-4:]}" in reasons  # masked, yet still pointing at the line

    items = scan_all(world["dynamodb"], TABLE)
    imports = [i for i in items if i["pk"].startswith("IMPORT#")]
    assert len(imports) == len(files)  # the two uploads again are the same imports
    own = {f"TOKEN#{token_id(t.token)}": t.token for t in T}
    stored = [i for i in items if i["pk"] in own and i.get("kind") == "token"]
    assert sorted(own[i["pk"]] for i in stored) == sorted(t.token for t in T[4:10])

    answers = []
    status, body = api_get(world, "/imports")
    assert status == 200 and len(json.loads(body)["imports"]) == len(imports)
    answers.append(body)
    for record in imports:
        status, body = api_get(world, f"/imports/{record['pk'].removeprefix('IMPORT#')}")
        assert status == 200 and json.loads(body)["report"], body
        answers.append(body)

    printed = capsys.readouterr()
    logs = "\n".join(logger.registered_formatter.format(r) for r in caplog.records)
    assert '"message":"Export rejected"' in logs and '"message":"Export imported"' in logs
    assert "ImportsRejected" in printed.out  # the metrics were captured too

    places = {
        "S3 keys": "\n".join(keys),
        "reports": "\n".join(json.dumps(r, ensure_ascii=False) for r in reports.values()),
        "API answers": "\n".join(answers),
        "logs": logs + printed.out + printed.err,
    }
    for item in items:
        text = json.dumps(item, default=str, ensure_ascii=False)
        for token in ALL_TOKENS:
            if token in text:
                assert own.get(item["pk"]) == token, f"{token[:4]}… in {item['pk']}"
    for where, text in places.items():
        leaked = [t[:4] + "…" for t in ALL_TOKENS if t in text]
        assert not leaked, f"AuthTokens in {where}: {leaked}"


# ---- the rule -------------------------------------------------------------------------------------

TOKEN = BLYNK_DOC_TOKEN
SHA = "f5ba9f63d7729b7300c0b7b1167947156ee6ff038554125a0f549e388dbcf438"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TOKEN, "xw7I…FAVl"),
        (f"first line was '{TOKEN},sqr_x,SN-1'", "first line was 'xw7I…FAVl,sqr_x,SN-1'"),
        (f"qr/{TOKEN}.png", "qr/xw7I…FAVl.png"),
        (f"__MACOSX/qr/._{TOKEN}.png", "__MACOSX/qr/._xw7…FAVl.png"),  # "_" is a token character
        (f"sqr_{TOKEN}", "sqr_xw7I…FAVl"),  # QR tokens are masked too, their prefix kept
        (f"{TOKEN}_1.png", "xw7I…Vl_1.png"),
        (f"incoming/export_{TOKEN}_final.csv", "incoming/expo…inal.csv"),
        (f"SN-3\\t{TOKEN}", "SN-3\\txw7…FAVl"),  # a repr()-quoted tab: "\\t" glued to the token
        (f"{TOKEN}{TOKEN}", "xw7I…FAVl"),
        (f"{TOKEN},{TOKEN};{TOKEN}", "xw7I…FAVl,xw7I…FAVl;xw7I…FAVl"),
        (f"é{TOKEN}é", "éxw7I…FAVlé"),  # only ASCII letters are token characters
        (SHA, SHA),  # a SHA-256: Tokenflow's own import and token ids
        (f"processed/2026-11-29/{SHA[:16]}-a.zip", f"processed/2026-11-29/{SHA[:16]}-a.zip"),
        ("e00fce68a1b2c3d4e5f60718", "e00fce68a1b2c3d4e5f60718"),  # a device id
        ("3f2a9c1b7d4e", "3f2a9c1b7d4e"),  # a fingerprint
        (TOKEN[:31], TOKEN[:31]),  # one character short of a token
        ("Blynk export (2026-11).zip", "Blynk export (2026-11).zip"),
        ("", ""),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent: a redacted text redacts to itself


def test_redact_leaves_no_token_shaped_run_in_any_text():
    samples = [
        f"{a}{t.token}{b}"
        for t in T[:5]
        for a in ("", "_", "-", "x", "sqr_", ".")
        for b in ("", "_1", "x", ".png")
    ]
    for text in samples:
        shown = redact(text)
        assert not any(is_auth_token(shown[i : i + 32]) for i in range(len(shown) - 31)), (text, shown)
