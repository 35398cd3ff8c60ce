"""Items between DynamoDB's attribute values and plain Python (what the rest of Tokenflow reads)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from tokenflow.store.shapes import AttributeValue, PlainItem, RawItem

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_attr(value: Any) -> AttributeValue:
    return _serializer.serialize(value)


def to_item(values: Mapping[str, Any]) -> RawItem:
    """Plain values as a DynamoDB item; None values are left out."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> PlainItem:
    """A DynamoDB item as plain Python: numbers as int (or float), binaries as bytes, sets as lists."""
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        # boto3-stubs has Binary.__bytes__ answer str; boto3's answers the bytes it holds.
        return bytes(value)  # type: ignore[call-overload]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value
