"""What a Blynk static token looks like, and the only ways Tokenflow ever shows one.

An AuthToken is a secret: it is stored, written to a device's Ledger and revealed by one API route.
Everywhere else it appears masked (``xw7I…FAVl``) or as its fingerprint, the first 12 hex characters
of its SHA-256, which the firmware computes too (shared vectors in ``tests/vectors/fingerprint.json``).
Text that came from outside (a file's lines, archive entry names, object keys) goes through
``redact`` before it is echoed anywhere: it may carry a token nobody meant to show.
"""

from __future__ import annotations

import hashlib
import re

AUTH_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
QR_TOKEN_RE = re.compile(r"sqr_[A-Za-z0-9_-]{32}")
TOKEN_ID_RE = re.compile(r"[0-9a-f]{64}")
# A maximal run of token characters, and the prefix that marks a QR token.
_TOKEN_RUN_RE = re.compile(r"[A-Za-z0-9_-]{32,}")
QR_PREFIX = "sqr_"
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


def redact(text: str) -> str:
    """``text`` with every token-shaped run masked, for echoing file content or names anywhere.

    The rule, on each maximal run of token characters (``[A-Za-z0-9_-]``):

    - shorter than 32 characters: kept (words, serial numbers, device ids, fingerprints);
    - exactly 64 lowercase hex characters: kept (a SHA-256: Tokenflow's own token and import ids);
    - otherwise (32 characters or more): masked with ``mask``; a leading ``sqr_`` stays visible.

    Runs longer than 32 are masked too, not only exact ones: ``_`` and ``-`` are token characters,
    so a token glued to a separator (``._<token>.png`` from a macOS resource fork, ``<token>_1.png``,
    ``sqr_<token>``) forms a longer run, and a rule that only masked bounded 32-character runs
    would miss exactly those places. The cost is that a long name (a UUID, a 40-character file
    name) shows masked too; a report loses a little detail, never a secret.

    QR tokens (``sqr_`` + 32) are not secret (they are printed on the label and the API shows
    them), but their 32 characters cannot be told from an AuthToken written after ``sqr_``, so they
    are masked as well; the ``sqr_`` prefix stays so an operator still sees it was a QR token.
    The result never contains a run of 32 token characters, so ``redact`` is idempotent.
    """
    return _TOKEN_RUN_RE.sub(_mask_run, text)


def _mask_run(match: re.Match[str]) -> str:
    run = match.group()
    if TOKEN_ID_RE.fullmatch(run):
        return run
    if run.startswith(QR_PREFIX):
        return QR_PREFIX + mask(run[len(QR_PREFIX) :])
    return mask(run)
