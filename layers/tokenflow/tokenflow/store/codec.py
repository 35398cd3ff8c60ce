"""Items between DynamoDB's attribute values and plain Python (what the rest of Tokenflow reads)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

from tokenflow.store.shapes import AttributeValue, PlainItem, RawItem

if TYPE_CHECKING:
    from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer


@cache
def _types() -> tuple[TypeSerializer, TypeDeserializer, type[Binary]]:
    """boto3's own (de)serializer and Binary, imported at the first item: ``boto3.dynamodb.types``
    runs all of boto3/__init__ and botocore (170 to 240 ms of every handler's cold start,
    bench/README.md), which the first DynamoDB client loads anyway."""
    from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer(), Binary


def to_attr(value: Any) -> AttributeValue:
    return _types()[0].serialize(value)


def to_item(values: Mapping[str, Any]) -> RawItem:
    """Plain values as a DynamoDB item; None values are left out."""
    serializer = _types()[0]
    return {k: serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> PlainItem:
    """A DynamoDB item as plain Python: numbers as int (or float), binaries as bytes, sets as lists."""
    deserializer = _types()[1]
    return {k: _plain(deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, _types()[2]):
        # boto3-stubs has Binary.__bytes__ answer str; boto3's answers the bytes it holds.
        return bytes(value)  # type: ignore[call-overload]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value
