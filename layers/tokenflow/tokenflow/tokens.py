"""What a Blynk static token looks like, and the only ways Tokenflow ever shows one.

An AuthToken is a secret: it is stored, written to a device's Ledger and revealed by one API route.
Everywhere else it appears masked (``xw7I…FAVl``) or as its fingerprint, the first 12 hex characters
of its SHA-256, which the firmware computes too (shared vectors in ``tests/vectors/fingerprint.json``).
"""

from __future__ import annotations

import hashlib
import re

AUTH_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
QR_TOKEN_RE = re.compile(r"sqr_[A-Za-z0-9_-]{32}")
TOKEN_ID_RE = re.compile(r"[0-9a-f]{64}")
FINGERPRINT_LENGTH = 12


def is_auth_token(value: str) -> bool:
    return AUTH_TOKEN_RE.fullmatch(value) is not None


def is_qr_token(value: str) -> bool:
    return QR_TOKEN_RE.fullmatch(value) is not None


def is_token_id(value: str) -> bool:
    """A token id (and an import id: both are SHA-256 hex digests)."""
    return TOKEN_ID_RE.fullmatch(value) is not None


def token_id(token: str) -> str:
    """The stable identifier of a token in the table: its full SHA-256, so keys never carry the secret."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def fingerprint(token: str) -> str:
    """First 12 hex characters of SHA-256(token): identifies a token without revealing anything usable."""
    return token_id(token)[:FINGERPRINT_LENGTH]


def mask(value: str) -> str:
    """``xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl`` -> ``xw7I…FAVl``; short or odd values are hidden whole."""
    if len(value) < 16:
        return "…"
    return f"{value[:4]}…{value[-4:]}"
