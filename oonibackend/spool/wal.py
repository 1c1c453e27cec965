"""Write-ahead log segments: the durable copy of every acknowledged measurement.

A segment is a file `wal/<seq>.wal` of append-only records (oonibackend/spool/records.py:
magic, then `u32 length | u32 crc32 | payload`, torn-tail rule) whose payload is

    u8 uid_len | u8 dir_len | uid | hour dir | body

A batch is acknowledged after its fdatasync, so a record cut short or with a bad crc was never
acknowledged: recovery ignores it and what follows.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from oonibackend.spool import records

MAGIC = b"OOWAL\x00\x01\n"
_LENS = struct.Struct("<BB")


class Record(NamedTuple):
    uid: str
    hour_dir: str
    body: bytes


def encode(uid: str, hour_dir: str, body: bytes) -> bytes:
    u, d = uid.encode("ascii"), hour_dir.encode("ascii")
    if len(u) > 255 or len(d) > 255:
        raise ValueError("uid or hour dir too long")
    return records.frame(b"".join((_LENS.pack(len(u), len(d)), u, d, body)))


def _parse(_offset: int, payload: bytes) -> Record | None:
    if len(payload) < _LENS.size:
        return None
    ulen, dlen = _LENS.unpack_from(payload, 0)
    p = _LENS.size
    if p + ulen + dlen > len(payload):
        return None
    try:
        uid = payload[p:p + ulen].decode("ascii")
        hour_dir = payload[p + ulen:p + ulen + dlen].decode("ascii")
    except UnicodeDecodeError:
        return None
    return Record(uid, hour_dir, payload[p + ulen + dlen:])


def decode(data: bytes | memoryview) -> tuple[list[Record], int]:
    """Records in `data` (without the magic) and the offset where intact records end."""
    scan = records.Scan(data, _parse)
    return list(scan), scan.end


class SegmentReader:
    """Iterate the intact records of a segment without loading it whole; afterwards `torn`
    is the number of trailing bytes ignored (a torn tail, or corruption)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._scan = records.Scan(path, _parse, MAGIC)

    @property
    def torn(self) -> int:
        return self._scan.torn

    def __iter__(self) -> Iterator[Record]:
        for record in self._scan:
            self.count += 1
            yield record


def read_segment(path: Path) -> tuple[list[Record], int]:
    """All intact records of a segment, and the number of trailing bytes ignored."""
    reader = SegmentReader(path)
    out = list(reader)
    return out, reader.torn


class Segment(records.Appender):
    """An open segment, appended to by the spool's writer thread only."""

    def __init__(self, path: Path, sync: bool) -> None:
        # Records in this segment that were acknowledged (set by the spool after each
        # successful commit): a segment without any holds nothing to keep after a failure.
        self.acknowledged = 0
        super().__init__(path, MAGIC, sync=sync, remove_on_failure=True)

    def discard(self) -> None:
        """Close and delete a segment holding no acknowledged record (after a failed append:
        its content was never acknowledged, so recovery would ignore it anyway)."""
        assert not self.acknowledged
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def segments(wal_dir: Path) -> list[Path]:
    """Existing segments, oldest first (names are zero-padded sequence numbers)."""
    return sorted(p for p in wal_dir.glob("*.wal") if p.stem.isdigit())
