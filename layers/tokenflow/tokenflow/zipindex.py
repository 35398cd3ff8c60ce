"""A zip archive's entries read straight from its bytes, one small tuple per entry.

``zipfile`` builds a rich object per entry (about 500 bytes each): with 100,000 QR images that is
50 MB before a single row is read. An export needs far less: name, sizes, CRC, method and offset.
This reader walks the central directory with ``struct`` and reads an entry's bytes by slicing
(stored) or inflating (deflated) at its offset, checking the size and the CRC.

Only what an export can hold is handled here. Anything else (zip64 fields, split archives) raises
``Unsupported`` and the caller lists the archive with ``zipfile`` instead.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from typing import NamedTuple

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_CDIR = struct.Struct("<4s6H3L5H2L")  # central directory file header
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header
_EOCD_SIG, _CDIR_SIG, _LOCAL_SIG = b"PK\x05\x06", b"PK\x01\x02", b"PK\x03\x04"
_MAX_COMMENT = 0xFFFF
_ZIP64_MARK = 0xFFFFFFFF


class Corrupt(Exception):
    """The archive is damaged or truncated."""


class Unsupported(Exception):
    """A valid archive this reader leaves to ``zipfile`` (zip64, multi-disk)."""


class ZipEntry(NamedTuple):
    name: str
    flags: int
    method: int
    crc: int
    compress_size: int
    file_size: int
    offset: int  # of the local header, from the start of the data

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x1)

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


def entries(data: bytes | memoryview) -> list[ZipEntry]:
    """Every entry of the central directory, in order."""
    view = memoryview(data)
    end = bytes(view[-(_MAX_COMMENT + _EOCD.size) :])
    at = end.rfind(_EOCD_SIG)
    if at < 0 or len(end) - at < _EOCD.size:
        raise Corrupt("no end of central directory record: the file is truncated or not a zip")
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(end, at)
    if disk or cd_disk:
        raise Unsupported("multi-disk archive")
    if count == 0xFFFF or cd_size == _ZIP64_MARK or cd_offset == _ZIP64_MARK:
        raise Unsupported("zip64 archive")
    eocd_pos = len(view) - len(end) + at
    # Data may precede the archive (as zipfile allows): the directory sits right before the EOCD.
    shift = eocd_pos - cd_size - cd_offset
    if shift < 0:
        raise Corrupt("the central directory lies outside the file")
    pos, stop = cd_offset + shift, cd_offset + shift + cd_size
    found: list[ZipEntry] = []
    while pos < stop:
        if pos + _CDIR.size > stop:
            raise Corrupt("truncated central directory")
        fields = _CDIR.unpack_from(view, pos)
        if fields[0] != _CDIR_SIG:
            raise Corrupt("bad central directory entry")
        flags, method = fields[3], fields[4]
        crc, csize, usize = fields[7], fields[8], fields[9]
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        offset = fields[16]
        if _ZIP64_MARK in (csize, usize, offset):
            raise Unsupported("zip64 entry")
        raw = bytes(view[pos + _CDIR.size : pos + _CDIR.size + name_len])
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", errors="replace").split("\x00", 1)[0]
        found.append(ZipEntry(name, flags, method, crc, csize, usize, offset + shift))
        pos += _CDIR.size + name_len + extra_len + comment_len
    if len(found) != count:
        raise Corrupt("the central directory does not hold the entries it announces")
    return found


def from_zipfile(data: bytes) -> list[ZipEntry]:
    """The same listing through ``zipfile``, for archives ``entries`` leaves to it."""
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [
            ZipEntry(
                i.filename, i.flag_bits, i.compress_type, i.CRC, i.compress_size, i.file_size, i.header_offset
            )
            for i in archive.infolist()
        ]


def read(data: bytes | memoryview, entry: ZipEntry, limit: int) -> bytes:
    """The entry's content, at most ``limit`` bytes (ValueError beyond), checked against its CRC."""
    if entry.file_size > limit:
        raise ValueError(f"{entry.name} is larger than {limit} bytes")
    view = memoryview(data)
    header = view[entry.offset : entry.offset + _LOCAL.size]
    if len(header) < _LOCAL.size or bytes(header[:4]) != _LOCAL_SIG:
        raise Corrupt(f"bad local header for {entry.name}")
    fields = _LOCAL.unpack_from(header)
    start = entry.offset + _LOCAL.size + fields[9] + fields[10]
    raw = view[start : start + entry.compress_size]
    if len(raw) != entry.compress_size:
        raise Corrupt(f"{entry.name} is truncated")
    if entry.method == zipfile.ZIP_STORED:
        content = bytes(raw)
    elif entry.method == zipfile.ZIP_DEFLATED:
        try:
            content = zlib.decompressobj(-15).decompress(raw, limit + 1)
        except zlib.error as exc:
            raise Corrupt(f"{entry.name} does not inflate ({exc})") from None
    else:
        raise Corrupt(f"{entry.name} uses an unsupported compression method ({entry.method})")
    if len(content) > limit:
        raise ValueError(f"{entry.name} is larger than {limit} bytes")
    if len(content) != entry.file_size or zlib.crc32(content) != entry.crc:
        raise Corrupt(f"{entry.name} fails its size or CRC check")
    return content
