"""Write-ahead log segments: the durable copy of every acknowledged measurement.

A segment is a file `wal/<seq>.wal`: an 8-byte magic, then records

    u32 length | u32 crc32 | u8 uid_len | u8 dir_len | uid | hour dir | body

(little endian; `length` and `crc32` cover everything after the crc). Records are only ever
appended, and a batch is acknowledged after its fdatasync, so after a crash the only damage is
a torn tail: a record cut short, or with a bad crc, ends the segment. That record was never
acknowledged, so recovery ignores it.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from oonibackend.fileutil import fsync_dir

MAGIC = b"OOWAL\x00\x01\n"
_HEAD = struct.Struct("<II")
_LENS = struct.Struct("<BB")
# A record larger than this is corruption, not a measurement (bodies are capped far lower).
MAX_RECORD = 1 << 30


class Record(NamedTuple):
    uid: str
    hour_dir: str
    body: bytes


def encode(uid: str, hour_dir: str, body: bytes) -> bytes:
    u, d = uid.encode("ascii"), hour_dir.encode("ascii")
    if len(u) > 255 or len(d) > 255:
        raise ValueError("uid or hour dir too long")
    payload = b"".join((_LENS.pack(len(u), len(d)), u, d, body))
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes | memoryview) -> tuple[list[Record], int]:
    """Records in `data` (without the magic) and the offset where intact records end."""
    out: list[Record] = []
    pos, end = 0, len(data)
    mv = memoryview(data)
    while pos + _HEAD.size <= end:
        length, crc = _HEAD.unpack_from(mv, pos)
        start = pos + _HEAD.size
        if length < _LENS.size or length > MAX_RECORD or start + length > end:
            break
        payload = mv[start:start + length]
        if zlib.crc32(payload) != crc:
            break
        ulen, dlen = _LENS.unpack_from(payload, 0)
        if _LENS.size + ulen + dlen > length:
            break
        p = _LENS.size
        try:
            uid = bytes(payload[p:p + ulen]).decode("ascii")
            hour_dir = bytes(payload[p + ulen:p + ulen + dlen]).decode("ascii")
        except UnicodeDecodeError:
            break
        out.append(Record(uid, hour_dir, bytes(payload[p + ulen + dlen:])))
        pos = start + length
    return out, pos


class SegmentReader:
    """Iterate the intact records of a segment without loading it whole; afterwards `torn`
    is the number of trailing bytes ignored (a torn tail, or corruption)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.torn = 0
        self.count = 0

    def __iter__(self) -> Iterator[Record]:
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                # Created but the magic never reached the disk: nothing in it was acknowledged.
                self.torn = size
                return
            pos = len(MAGIC)
            while True:
                head = f.read(_HEAD.size)
                if len(head) < _HEAD.size:
                    break
                length, _ = _HEAD.unpack(head)
                if length > MAX_RECORD:
                    break
                payload = f.read(length)
                records, used = decode(head + payload)
                if not records or used != len(head) + len(payload):
                    break
                pos += used
                self.count += 1
                yield records[0]
            self.torn = size - pos


def read_segment(path: Path) -> tuple[list[Record], int]:
    """All intact records of a segment, and the number of trailing bytes ignored."""
    reader = SegmentReader(path)
    records = list(reader)
    return records, reader.torn


class Segment:
    """An open segment, appended to by the spool's writer thread only."""

    def __init__(self, path: Path, sync: bool) -> None:
        self.path = path
        self.size = 0
        # Records in this segment that were acknowledged (set by the spool after each
        # successful commit): a segment without any holds nothing to keep after a failure.
        self.acknowledged = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            self.append(MAGIC)
            if sync:
                # The new file and its directory entry must survive before anything in it
                # is acknowledged.
                os.fsync(self._fd)
                fsync_dir(path.parent)
        except BaseException:
            # Nothing in it was acknowledged: leave no empty segment behind (a full disk
            # would otherwise leave one per failed append).
            os.close(self._fd)
            self._fd = -1
            try:
                os.unlink(path)
            except OSError:
                pass
            raise

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self.size += n

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

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
