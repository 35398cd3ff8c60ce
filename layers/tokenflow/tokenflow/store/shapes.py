"""The shapes that go to and come from DynamoDB, named for signatures (nothing imported from AWS)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, TypedDict


class AttributeValue(TypedDict, total=False):
    """One attribute value as the low-level client speaks it: ``{"S": "abc"}``, ``{"N": "3"}``; exactly
    one member is set (DynamoDB API Reference, "AttributeValue"). The members of boto3-stubs'
    ``TypeSerializer.serialize`` answer, so what boto3 serializes is one of these."""

    S: str
    N: str
    B: bytes
    SS: Sequence[str]
    NS: Sequence[str]
    BS: Sequence[bytes]
    M: Mapping[str, Any]
    L: Sequence[Any]
    NULL: bool
    BOOL: bool


RawItem: TypeAlias = dict[str, AttributeValue]
"""An item or a key in that form: a ``Key``, an ``ExclusiveStartKey``, an entry of a Query's ``Items``."""

PlainItem: TypeAlias = dict[str, Any]
"""An item read back as plain Python (``codec.from_item``): str, int, float, bytes, lists and maps."""

Request: TypeAlias = dict[str, Any]
"""One request or answer of the low-level client: a TransactWriteItems entry, a Query's answer."""
