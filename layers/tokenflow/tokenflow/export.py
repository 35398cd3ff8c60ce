"""Read a Blynk.Console static-token export: a .zip (a CSV of tokens and QR PNGs) or a bare .csv.

(One module, a little over the usual size: the reader's rules below are one sequence of checks on
one archive, clearer read in order than split.)

The export's exact layout is not documented (REFERENCE.md), so the reader is tolerant of what may
vary and strict about what would corrupt state:

- the CSV may sit anywhere in the archive; ``__MACOSX/`` and dot-files are ignored; UTF-8 with or
  without BOM; CRLF or LF; ``,`` ``;`` or tab, sniffed from the header; headers matched trimmed and
  case-insensitively; quoted fields; extra columns kept as metadata; PNGs paired by base name with
  the AuthToken (or the QR Token) they show;
- structural problems reject the whole file (``ExportRejected``) before anything is written: not a
  zip, corrupt, encrypted, a zip bomb, nested archives, unsafe entry names, no CSV, several CSVs, no
  device-token column, no rows, non-UTF-8 text, too many rows;
- row problems (malformed token, wrong number of fields, a huge field, a duplicate) skip the row and
  are listed in the summary, with the row number and the token only masked.

Whatever this module says about the file (a rejection reason quoting a line or an entry name, the
ignored entries, the CSV's name and columns, a row's problem, a token's metadata) goes through
``tokens.redact``: an entry may be named after the AuthToken its image shows, and a CSV without a
header starts with one. Only a row's own AuthToken and QR Token leave this module whole.

The archive is read in memory and never extracted. The constructor validates every row (one pass
over the CSV, keeping only the set of tokens seen), so a file is rejected before its first write;
``batches()`` then parses the CSV again and reads the PNGs of one batch at a time, so memory does
not grow with the number of images.

Several CSVs in one archive are rejected rather than merged or chosen between: a Console export has
one, and guessing which one the operator meant could silently import the wrong tokens.
"""

from __future__ import annotations

import csv
import io
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tokenflow import zipindex
from tokenflow.tokens import is_auth_token, is_qr_token, mask, redact

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst", ".jar")
TOKEN_HEADERS = ("device token", "auth token", "authtoken", "token", "device auth token", "blynk auth token")
QR_HEADERS = ("qr token", "qrtoken", "qr code token", "qr")
DELIMITERS = (",", ";", "\t")
HEADER_SEARCH_LINES = 5  # a title line or two above the header is tolerated
# Absolute paths, drive letters, backslashes and ".." components (zipfile already cuts names at NUL).
_UNSAFE_NAME = re.compile(r"^[/\\]|^[A-Za-z]:|\\|(?:^|/)\.\.(?:/|$)")
# Names that need a closer look: unsafe ones, dot-files and macOS resource forks.
_SPECIAL_NAME = re.compile(r"^[/\\]|^[A-Za-z]:|\\|(?:^|/)\.|^__MACOSX/")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile or broken file from exhausting the function."""

    max_archive_bytes: int = 200 * 1024 * 1024
    max_uncompressed_bytes: int = 1024 * 1024 * 1024
    max_entries: int = 250_000
    max_compression_ratio: int = 200  # checked for entries over ratio_floor_bytes
    ratio_floor_bytes: int = 1024 * 1024
    max_csv_bytes: int = 100 * 1024 * 1024
    max_png_bytes: int = 32 * 1024
    max_field_chars: int = 4096
    max_rows: int = 500_000


class ExportRejected(Exception):
    """The whole file is unusable; ``reason`` says why in words an operator can act on.

    The reason is redacted here, once for every rejection: several quote the file (its first line,
    an entry name, zipfile's own messages, which name entries too).
    """

    def __init__(self, reason: str) -> None:
        reason = redact(reason)
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ExportToken:
    token: str
    qr_token: str | None
    metadata: dict[str, str]
    qr_png: bytes | None
    row: int  # spreadsheet row: the header is row 1


@dataclass
class RowProblem:
    row: int
    reason: str
    token: str | None = None  # masked

    def as_dict(self) -> dict[str, Any]:
        # The reasons are this module's own words or the csv module's, which quote no field; the
        # redaction is there so that stays true whatever a later reason says.
        fields = (("row", self.row), ("reason", redact(self.reason)), ("token", self.token))
        return {k: v for k, v in fields if v}


@dataclass
class _Stats:
    rows_read: int = 0
    tokens_valid: int = 0
    duplicates_in_file: int = 0
    qr_images_matched: int = 0
    qr_images_missing: int = 0
    qr_images_left_out: list[dict[str, Any]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


class ExportReader:
    """One export, validated on construction; ``batches()`` yields its good tokens."""

    def __init__(self, data: bytes, name: str, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.name = name
        self.stats = _Stats()
        self.ignored_entries: list[str] = []
        self._data: memoryview | None = None
        self._pngs: dict[str, zipindex.ZipEntry] = {}
        self.png_count = 0
        if not data:
            raise ExportRejected("the file is empty")
        if len(data) > self.limits.max_archive_bytes:
            raise ExportRejected(f"the file is larger than {self.limits.max_archive_bytes} bytes")
        if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
            self.format = "zip"
            self.csv_entry, raw = self._open_zip(data)
        elif name.lower().endswith(".csv"):
            self.format = "csv"
            self.csv_entry, raw = name, data
        else:
            raise ExportRejected(
                "not a zip archive (and not named .csv): upload the .zip Blynk.Console exported"
            )
        self._text = _decode(raw)
        self._delimiter, self._header_index, self.columns, self._token_col, self._qr_col = self._header()
        self._bad_rows: set[int] = set()
        self._validate()

    # ---- archive -----------------------------------------------------------------------------

    def _open_zip(self, data: bytes) -> tuple[str, bytes]:
        try:
            try:
                listing = zipindex.entries(data)
            except zipindex.Unsupported:
                listing = zipindex.from_zipfile(data)
        except (zipindex.Corrupt, zipfile.BadZipFile, EOFError, ValueError, struct.error) as exc:
            raise ExportRejected(f"corrupt or truncated zip archive ({exc})") from None
        limits = self.limits
        if len(listing) > limits.max_entries:
            raise ExportRejected(
                f"the archive has {len(listing)} entries; at most {limits.max_entries} allowed"
            )
        total = 0
        csvs: list[zipindex.ZipEntry] = []
        for entry in listing:
            name = entry.name
            special = _SPECIAL_NAME.search(name) is not None
            if special:
                _check_entry_name(name)
            if entry.flags & 0x1:
                raise ExportRejected(f"the archive is encrypted ({name}): export it again without a password")
            total += entry.file_size
            if total > limits.max_uncompressed_bytes:
                raise ExportRejected(
                    f"the archive expands to more than {limits.max_uncompressed_bytes} bytes (zip bomb?)"
                )
            if (
                entry.file_size > limits.ratio_floor_bytes
                and entry.file_size > limits.max_compression_ratio * max(entry.compress_size, 1)
            ):
                raise ExportRejected(
                    f"entry {name} is compressed more than {limits.max_compression_ratio}:1 (zip bomb?)"
                )
            if name.endswith("/"):
                continue
            if special:  # __MACOSX/ or a dot-file (unsafe names were rejected above)
                self.ignored_entries.append(redact(name))
                continue
            lower = name.lower()
            if lower.endswith(ARCHIVE_SUFFIXES):
                raise ExportRejected(
                    f"the archive contains another archive ({name}): upload the Blynk export itself"
                )
            if lower.endswith(".csv"):
                csvs.append(entry)
            elif lower.endswith(".png"):
                self.png_count += 1
                base = name.rpartition("/")[2][:-4]
                if base in self._pngs:  # a second image of the same name: the first one counts
                    self.ignored_entries.append(redact(name))
                else:
                    self._pngs[base] = entry
            else:
                self.ignored_entries.append(redact(name))
        if not csvs:
            raise ExportRejected("the archive holds no CSV file of tokens")
        if len(csvs) > 1:
            names = ", ".join(e.name for e in csvs[:5])
            raise ExportRejected(
                f"the archive holds {len(csvs)} CSV files ({names}): upload one export per file"
            )
        csv_entry = csvs[0]
        self._data = memoryview(data)
        try:
            text = zipindex.read(self._data, csv_entry, limits.max_csv_bytes)
        except ValueError:
            raise ExportRejected(f"the CSV is larger than {limits.max_csv_bytes} bytes") from None
        except zipindex.Corrupt as exc:
            raise ExportRejected(f"cannot read {csv_entry.name} from the archive ({exc})") from None
        return csv_entry.name, text

    def _read_png(self, entry: zipindex.ZipEntry) -> tuple[bytes | None, str | None]:
        """An image's bytes straight from the archive (CRC-checked), or None and the reason."""
        assert self._data is not None
        limit = self.limits.max_png_bytes
        try:
            data = zipindex.read(self._data, entry, limit)
        except ValueError:
            return None, f"QR image larger than {limit} bytes"
        except zipindex.Corrupt:
            return None, "QR image entry is damaged"
        if not data.startswith(PNG_SIGNATURE):
            return None, "QR image is not a PNG"
        return data, None

    # ---- CSV ---------------------------------------------------------------------------------

    def _header(self) -> tuple[str, int, list[str], int, int | None]:
        lines = self._text.splitlines()[:HEADER_SEARCH_LINES]
        if not any(line.strip() for line in lines):
            raise ExportRejected(f"{self.csv_entry} is empty")
        seen: list[str] = []
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            delimiter = max(DELIMITERS, key=line.count)
            cells = next(csv.reader([line], delimiter=delimiter))
            names = [_normal(c) for c in cells]
            token_col = next((names.index(h) for h in TOKEN_HEADERS if h in names), None)
            if token_col is not None:
                qr_col = next((names.index(h) for h in QR_HEADERS if h in names), None)
                columns = [c.strip() for c in cells]
                return delimiter, index, columns, token_col, qr_col
            seen.append(line[:120])
        raise ExportRejected(
            "no device-token column: expected a header such as 'Device Token' or 'Auth Token'; "
            f"first line was {seen[0]!r}"
        )

    def _records(self) -> Iterator[tuple[int, list[str] | None, str | None]]:
        """(row, fields, error) for every data record; fields None when the record is unreadable."""
        csv.field_size_limit(self.limits.max_field_chars)
        lines = io.StringIO(self._text, newline=None)
        for _ in range(self._header_index + 1):
            lines.readline()
        reader = csv.reader(lines, delimiter=self._delimiter)
        row = self._header_index + 1  # the header's spreadsheet row
        while True:
            row += 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield row, None, f"unreadable row: {exc}"
                continue
            if not fields or (not fields[0].strip() and not any(f.strip() for f in fields)):
                row -= 1  # blank lines are not rows
                continue
            yield row, fields, None

    def _validate(self) -> None:
        seen_tokens: dict[str, int] = {}
        seen_qr: dict[str, int] = {}
        width = len(self.columns)
        stats = self.stats
        for row, fields, error in self._records():
            stats.rows_read += 1
            if stats.rows_read > self.limits.max_rows:
                raise ExportRejected(f"more than {self.limits.max_rows} rows: split the export")
            problem = error or self._row_problem(fields, width)
            token = fields[self._token_col].strip() if fields and len(fields) > self._token_col else ""
            qr = self._qr(fields)
            if problem is None:
                if token in seen_tokens:
                    problem = f"duplicate AuthToken (first seen in row {seen_tokens[token]})"
                    stats.duplicates_in_file += 1
                elif qr and qr in seen_qr:
                    problem = f"duplicate QR Token (first seen in row {seen_qr[qr]})"
                    stats.duplicates_in_file += 1
            if problem is not None:
                self._bad_rows.add(row)
                shown = mask(token) if token and len(token) <= 64 else None
                stats.problems.append(RowProblem(row, problem, shown))
                continue
            seen_tokens[token] = row
            if qr:
                seen_qr[qr] = row
            stats.tokens_valid += 1
        if stats.rows_read == 0:
            raise ExportRejected(f"{self.csv_entry} has a header but no rows")

    def _qr(self, fields: list[str] | None) -> str | None:
        if fields is None or self._qr_col is None or len(fields) <= self._qr_col:
            return None
        return fields[self._qr_col].strip() or None

    def _row_problem(self, fields: list[str] | None, width: int) -> str | None:
        assert fields is not None
        if len(fields) != width:
            return f"{len(fields)} fields where the header has {width}"
        token = fields[self._token_col].strip()
        if not token:
            return "no AuthToken"
        if not is_auth_token(token):
            return "AuthToken is not 32 characters of A-Z, a-z, 0-9, '_' and '-'"
        qr = self._qr(fields)
        if qr is not None and not is_qr_token(qr):
            return "QR Token is not 'sqr_' followed by 32 characters of A-Z, a-z, 0-9, '_' and '-'"
        return None

    # ---- output ------------------------------------------------------------------------------

    def batches(self, size: int) -> Iterator[list[ExportToken]]:
        """The valid tokens in file order, ``size`` at a time, each with its QR image when paired."""
        batch: list[ExportToken] = []
        self.stats.qr_images_matched = self.stats.qr_images_missing = 0
        self.stats.qr_images_left_out = []
        for row, fields, _ in self._records():
            if row in self._bad_rows or fields is None:
                continue
            token = fields[self._token_col].strip()
            qr = self._qr(fields)
            # The other columns are shown by the API with the device: a column that holds another
            # token (a replaced one, say) must not show it there.
            metadata = {
                redact(name): redact(value.strip())
                for i, (name, value) in enumerate(zip(self.columns, fields, strict=True))
                if i not in (self._token_col, self._qr_col) and name and value.strip()
            }
            batch.append(ExportToken(token, qr, metadata, self._png_for(token, qr, row), row))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _png_for(self, token: str, qr: str | None, row: int) -> bytes | None:
        if self.format != "zip":
            return None
        entry = self._pngs.get(token) or (self._pngs.get(qr) if qr else None)
        if entry is None:
            self.stats.qr_images_missing += 1
            return None
        data, reason = self._read_png(entry)
        if data is None:
            self.stats.qr_images_missing += 1
            self.stats.qr_images_left_out.append({"row": row, "token": mask(token), "reason": reason})
            return None
        self.stats.qr_images_matched += 1
        return data

    def summary(self) -> dict[str, Any]:
        """The report's view of the file; complete once ``batches()`` has been consumed."""
        stats = self.stats
        return {
            "format": self.format,
            "csv_entry": redact(self.csv_entry),
            "delimiter": {",": "comma", ";": "semicolon", "\t": "tab"}[self._delimiter],
            "columns": [redact(c) for c in self.columns],
            "rows_read": stats.rows_read,
            "tokens_valid": stats.tokens_valid,
            "duplicates_in_file": stats.duplicates_in_file,
            "qr_images_in_file": self.png_count,
            "qr_images_matched": stats.qr_images_matched,
            "qr_images_missing": stats.qr_images_missing,
            "qr_images_left_out": stats.qr_images_left_out[:1000],
            "ignored_entries": self.ignored_entries[:100],
            "problems": [p.as_dict() for p in stats.problems],
        }


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ExportRejected(
            f"the CSV is not UTF-8 text (byte {exc.start}, line {line}): save it as UTF-8"
        ) from None


def _normal(header: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", header.replace("\ufeff", "")).lower().split())


def _check_entry_name(name: str) -> None:
    """Entry names are never used as paths here, but a hostile one marks a file not to trust."""
    if _UNSAFE_NAME.search(name):
        raise ExportRejected(f"unsafe entry name in the archive: {name[:100]!r}")
