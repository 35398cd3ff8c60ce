"""The table's key layout lives in one module, ``tokenflow/store/keys.py``, and it is the template's.

Every key prefix, index name and index key attribute is searched for in the source tree (layers/,
functions/, cli/, local/); one found anywhere but keys.py fails the test with its place. Tests may
spell keys out (they check the layout from outside), so tests/ is not searched. The local stack
builds the table from template.yaml's own definition, which is not source and not searched either.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from tokenflow.store import keys
from tokenflow_local.resources import resource

ROOT = Path(__file__).resolve().parents[2]
SEARCHED = ("layers", "functions", "cli", "local")
KEYS_MODULE = ROOT / "layers" / "tokenflow" / "tokenflow" / "store" / "keys.py"
SKIPPED_DIRS = {"__pycache__", ".aws-sam", "build", ".pytest_cache", ".mypy_cache", ".ruff_cache"}

# Distinctive enough to be searched for anywhere in a file, comments and docstrings included.
PREFIXES = ("TOKEN#", "DEVICE#", "IMPORT#", "IMPORTS#", "STATS#", "EVENT#", "DEVSTATE#", "ACTIVITY#")
DISTINCTIVE = (*PREFIXES, "gsi1pk", "gsi1sk", "by-state", "by-qr")
# Too common as words ("ask") or as data ("qr_token" is also the token's own attribute, "available"
# also a state) to search for in prose: found in code only, as a whole string literal, a keyword
# argument, a key condition, or the literal value of an IndexName.
KEY_ATTRIBUTES = ("pk", "sk", "apk", "ask")
_DISTINCTIVE_RE = re.compile("|".join(re.escape(p) for p in DISTINCTIVE))
_CONDITION_RE = re.compile(
    r"\b(pk|sk|apk|ask|qr_token)\s*(=|<|>)|attribute_(not_)?exists\((pk|sk)\)|begins_with\((pk|sk)\b"
)
_INDEX_NAME_RE = re.compile(r"""IndexName["']?\s*[=:]\s*f?["']""")


def key_literals(path: str, text: str) -> list[str]:
    """Every place in ``text`` (a file's content) that spells out part of the key layout."""
    found = [
        f"{path}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}" for m in _DISTINCTIVE_RE.finditer(text)
    ]
    found += [
        f"{path}:{text.count(chr(10), 0, m.start()) + 1}: IndexName given as a literal"
        for m in _INDEX_NAME_RE.finditer(text)
    ]
    if path.endswith(".py"):
        found += _literals_in_code(path, text)
    return found


def _literals_in_code(path: str, text: str) -> list[str]:
    found = []
    depth = 0  # brackets open: a NAME followed by "=" in a call's arguments is a keyword argument
    previous = None
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        line = token.start[0]
        if token.type == tokenize.STRING:
            body = token.string.lstrip("rbuRBU").strip("'\"")
            if body in KEY_ATTRIBUTES:
                found.append(f"{path}:{line}: key attribute {body!r}")
            elif match := _CONDITION_RE.search(token.string):
                at = line + token.string.count("\n", 0, match.start())
                found.append(f"{path}:{at}: key condition {match.group()!r}")
        elif token.type == tokenize.FSTRING_MIDDLE and (match := _CONDITION_RE.search(token.string)):
            found.append(f"{path}:{line}: key condition {match.group()!r}")
        elif _is_keyword_argument(token, previous, depth):
            found.append(f"{path}:{line}: key attribute {previous.string}= as a keyword")  # type: ignore[union-attr]
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            previous = token
    return found


def _is_keyword_argument(token: tokenize.TokenInfo, previous: tokenize.TokenInfo | None, depth: int) -> bool:
    """``apk=`` inside brackets: a keyword argument named after a key attribute."""
    return (
        token.type == tokenize.OP
        and token.string == "="
        and depth > 0
        and previous is not None
        and previous.type == tokenize.NAME
        and previous.string in KEY_ATTRIBUTES
    )


def source_files() -> list[Path]:
    files = []
    for top in SEARCHED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
                files.append(path)
    return files


def test_no_key_literal_outside_the_key_module() -> None:
    searched = 0
    found: list[str] = []
    for path in source_files():
        if path == KEYS_MODULE:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files (images, archives) carry no source
        searched += 1
        found += key_literals(str(path.relative_to(ROOT)), text)
    assert searched > 40  # the tree was really searched (the handlers, the layer, the CLI, local)
    assert found == [], "key layout outside store/keys.py:\n" + "\n".join(found)


def test_the_search_is_for_the_layout_the_key_module_defines() -> None:
    # A renamed prefix or index would leave the search looking for names no one uses any more.
    text = KEYS_MODULE.read_text()
    for literal in (*DISTINCTIVE, *(f'"{a}"' for a in KEY_ATTRIBUTES)):
        assert literal in text, literal
    assert len(key_literals("keys.py", text)) > len(DISTINCTIVE)


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ('pk = f"DEVSTATE#{state}"\n', "DEVSTATE#"),
        ("# the by-qr index\n", "by-qr"),
        ('x = item["pk"].removeprefix("TOKEN")\n', "key attribute 'pk'"),
        ("values.update(apk=None)\n", "apk= as a keyword"),
        ('q = "ask >= :s"\n', "key condition"),
        ('q = f"pk = :p AND begins_with(sk, {e})"\n', "key condition"),
        ('c = "attribute_not_exists(pk)"\n', "key condition"),
        ('client.query(IndexName="available")\n', "IndexName given as a literal"),
        ('{"IndexName": "by-x"}\n', "IndexName given as a literal"),
    ],
)
def test_the_search_finds_each_kind_of_key_literal(source: str, what: str) -> None:
    found = key_literals("example.py", source)
    assert any(what in f for f in found), found


@pytest.mark.parametrize(
    "source",
    [
        '"""Ask for it again: the token is available."""\n',
        'view = {"qr_token": item.get("qr_token"), "state": "available"}\n',
        "ask = 3\n",
        'UpdateExpression="SET #kind = :kind"\n',
    ],
)
def test_the_search_leaves_words_and_data_attributes_alone(source: str) -> None:
    assert key_literals("example.py", source) == []


def test_the_key_module_names_the_templates_table_keys_and_indexes() -> None:
    table = resource("Table")
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {
        keys.PK: "HASH",
        keys.SK: "RANGE",
    }
    indexes = {
        index["IndexName"]: {k["AttributeName"]: k["KeyType"] for k in index["KeySchema"]}
        for index in table["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        keys.INDEX_AVAILABLE: {keys.AVAILABLE_PK: "HASH", keys.AVAILABLE_SK: "RANGE"},
        keys.INDEX_BY_STATE: {keys.BY_STATE_PK: "HASH", keys.BY_STATE_SK: "RANGE"},
        keys.INDEX_BY_QR: {keys.BY_QR_PK: "HASH"},
    }


def test_the_items_that_expire_carry_the_templates_time_to_live_attribute() -> None:
    assert resource("Table")["TimeToLiveSpecification"] == {
        "AttributeName": keys.TTL_ATTRIBUTE,
        "Enabled": True,
    }


WAITING = keys.Keys.device_state_partition("waiting")


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ({}, True),  # the start of the listing
        (
            {
                keys.PK: {"S": "x"},
                keys.SK: {"S": "y"},
                keys.BY_STATE_PK: {"S": WAITING},
                keys.BY_STATE_SK: {"S": "e00f"},
            },
            True,
        ),
        ({keys.BY_STATE_PK: {"S": keys.Keys.device_state_partition("delivered")}}, False),
        ({keys.BY_STATE_PK: {"S": keys.IMPORTS_PARTITION}}, False),
        ({keys.PK: {"S": "x"}}, False),  # a table key without the listing's partition
        ({keys.BY_STATE_PK: {"S": WAITING}, keys.AVAILABLE_PK: {"S": "x"}}, False),
        ({keys.BY_STATE_PK: {"N": "1"}}, False),
        ({keys.BY_STATE_PK: {"S": WAITING, "N": "1"}}, False),
        ({keys.BY_STATE_PK: WAITING}, False),
        ([], False),
        (None, False),
    ],
)
def test_a_device_listing_cursor_is_a_key_of_that_states_listing_only(key: object, valid: bool) -> None:
    assert keys.is_device_listing_key("waiting", key) is valid
