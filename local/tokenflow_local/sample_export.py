"""Sample Blynk.Console static-token exports, in the shape REFERENCE.md describes.

A zip with one CSV (``Device Token``, ``QR Token`` and metadata columns) and a folder of QR PNGs,
each named after its AuthToken and encoding ``<qrToken>+<orgId>`` as the Blynk apps expect. Used by
the tests, ``make run`` and the benchmarks; variants (delimiter, BOM, line endings, layout) let tests
cover what the real export may look like.

    python -m tokenflow_local.sample_export --tokens 30 -o export.zip
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import segno

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
DEFAULT_ORG = "ORG-1234"

EXPORT_TIME = (2026, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SampleToken:
    token: str
    qr_token: str
    serial_number: str
    device_name: str


def make_tokens(count: int, seed: int = 0) -> list[SampleToken]:
    """``count`` distinct tokens; the same seed gives the same tokens (different seeds: disjoint)."""
    rng = random.Random(f"tokenflow-sample-{seed}")
    tokens = []
    for n in range(count):
        token = "".join(rng.choice(ALPHABET) for _ in range(32))
        qr = "sqr_" + "".join(rng.choice(ALPHABET) for _ in range(32))
        tokens.append(SampleToken(token, qr, f"SN-{seed:03d}-{n:06d}", f"Pump {seed}-{n}"))
    return tokens


@lru_cache(maxsize=1)
def _placeholder_png() -> bytes:
    return qr_png("sqr_placeholder")


def qr_png(payload: str) -> bytes:
    """A QR code PNG that decodes to ``payload``."""
    out = io.BytesIO()
    segno.make(payload, error="m", micro=False).save(out, kind="png", scale=4, border=2)
    return out.getvalue()


def csv_text(
    tokens: Sequence[SampleToken],
    *,
    delimiter: str = ",",
    crlf: bool = True,
    headers: Sequence[str] = ("Device Token", "QR Token", "Serial Number", "Device Name"),
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(headers)
    for t in tokens:
        writer.writerow([t.token, t.qr_token, t.serial_number, t.device_name][: len(headers)])
    return out.getvalue()


def make_export(
    tokens: Sequence[SampleToken] | int,
    *,
    org_id: str = DEFAULT_ORG,
    seed: int = 0,
    delimiter: str = ",",
    bom: bool = False,
    crlf: bool = True,
    csv_name: str = "static_tokens.csv",
    png_folder: str = "qr/",
    with_png: bool = True,
    real_qr: bool = True,
) -> bytes:
    """The bytes of an export zip. ``real_qr=False`` reuses one image (fast, for large benchmarks)."""
    if isinstance(tokens, int):
        tokens = make_tokens(tokens, seed)
    text = csv_text(tokens, delimiter=delimiter, crlf=crlf)
    buffer = io.BytesIO()
    # Fixed entry times: the same tokens make the same bytes, so the same export has the same hash.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_entry(csv_name, zipfile.ZIP_DEFLATED), ("\ufeff" if bom else "") + text)
        if with_png:
            for t in tokens:
                image = qr_png(f"{t.qr_token}+{org_id}") if real_qr else _placeholder_png()
                # PNGs are already compressed: store them as they are, as most zip tools do.
                archive.writestr(_entry(f"{png_folder}{t.token}.png", zipfile.ZIP_STORED), image)
    return buffer.getvalue()


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=EXPORT_TIME)
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a sample Blynk static-token export (.zip).")
    parser.add_argument("--tokens", type=int, default=30, help="number of tokens (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="different seeds give different tokens")
    parser.add_argument("--org", default=DEFAULT_ORG, help="Blynk organization id in the QR payload")
    parser.add_argument("-o", "--output", required=True, help="where to write the .zip")
    args = parser.parse_args(argv)
    data = make_export(args.tokens, org_id=args.org, seed=args.seed)
    with open(args.output, "wb") as handle:
        handle.write(data)
    print(f"wrote {args.output}: {args.tokens} tokens, {len(data)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
