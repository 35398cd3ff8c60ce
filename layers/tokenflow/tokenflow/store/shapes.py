"""The shapes that go to and come from DynamoDB, named for signatures (nothing imported from AWS)."""

from __future__ import annotations

from typing import Any, TypeAlias

AttributeValue: TypeAlias = dict[str, Any]
"""One attribute value as the low-level client speaks it: ``{"S": "abc"}``, ``{"N": "3"}``, ``{"M": ...}``."""

RawItem: TypeAlias = dict[str, AttributeValue]
"""An item or a key in that form: a ``Key``, an ``ExclusiveStartKey``, an entry of a Query's ``Items``."""

PlainItem: TypeAlias = dict[str, Any]
"""An item read back as plain Python (``codec.from_item``): str, int, float, bytes, lists and maps."""

Request: TypeAlias = dict[str, Any]
"""One request or answer of the low-level client: a TransactWriteItems entry, a Query's answer."""
