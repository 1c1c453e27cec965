"""On-disk format of the intake queue: append-only segments plus their commit marks.

A segment `<seq>.seg` is an 8-byte magic followed by records

    u32 length | u32 crc32 | u8 uid_len | uid | body

(little endian; `length` and `crc32` cover everything after the crc). Records are appended
and made durable by one fdatasync per batch before the feeder answers, so after a crash the
only possible damage is a torn tail (a record cut short or with a bad crc): it was never
acknowledged, and reading stops there.

Commit marks live beside it in `<seq>.ack`: one decimal record offset per line, appended
(without fsync) once the record's rows are in the database. Losing marks in a crash only
means those measurements are scored and inserted again, which the ReplacingMergeTree keyed
by measurement_uid collapses; a torn last line is ignored.

The spool's WAL (oonibackend/spool/wal.py) uses the same idea with a different payload.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from oonibackend.fileutil import fsync_dir

MAGIC = b"OOFPQ\x00\x01\n"
_HEAD = struct.Struct("<II")
# A record larger than this is corruption, not a measurement (bodies are capped far lower).
MAX_RECORD = 1 << 30
SUFFIX = ".seg"
ACK_SUFFIX = ".ack"


class Record(NamedTuple):
    """A record found in a segment: where it starts, and where its body is."""

    offset: int
    uid: str
    body_offset: int
    body: bytes


def encode(uid: str, body: bytes) -> bytes:
    u = uid.encode("ascii")
    if not 0 < len(u) < 256:
        raise ValueError("uid length must be 1..255")
    payload = b"".join((bytes((len(u),)), u, body))
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: Path) -> tuple[list[Record], int]:
    """The intact records of a segment and the number of trailing bytes ignored (torn)."""
    out: list[Record] = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            return out, size  # created, but the magic never reached the disk
        pos = len(MAGIC)
        while True:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                break
            length, crc = _HEAD.unpack(head)
            if length < 2 or length > MAX_RECORD or pos + _HEAD.size + length > size:
                break
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            ulen = payload[0]
            if ulen == 0 or 1 + ulen > length:
                break
            try:
                uid = payload[1:1 + ulen].decode("ascii")
            except UnicodeDecodeError:
                break
            out.append(Record(pos, uid, pos + _HEAD.size + 1 + ulen, payload[1 + ulen:]))
            pos += _HEAD.size + length
    return out, size - pos


def read_acks(path: Path) -> set[int]:
    """Committed record offsets listed in an ack file (a torn last line is ignored)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    end = data.rfind(b"\n")
    out = set()
    for line in data[:end + 1].split(b"\n"):
        if line.isdigit():
            out.add(int(line))
    return out



def segment_paths(directory: Path) -> list[tuple[int, Path]]:
    """Existing segments as (seq, path), oldest first."""
    out = []
    for p in directory.glob("*" + SUFFIX):
        if p.stem.isdigit():
            out.append((int(p.stem), p))
    return sorted(out)


def segment_name(seq: int) -> str:
    return f"{seq:012d}{SUFFIX}"


def ack_path(segment: Path) -> Path:
    return segment.with_suffix(ACK_SUFFIX)


class SegmentFile:
    """An open segment: appended to by one writer, read at any offset (bodies not kept in
    memory), with its ack file opened lazily."""

    def __init__(self, seq: int, path: Path, *, create: bool, sync: bool) -> None:
        self.seq = seq
        self.path = path
        self.size = 0
        self._wfd = -1
        self._rfd = -1
        self._afd = -1
        if create:
            self._wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            try:
                self.append(MAGIC)
                if sync:
                    # The file and its directory entry must be durable before anything in
                    # it is acknowledged.
                    os.fsync(self._wfd)
                    fsync_dir(path.parent)
            except BaseException:
                self.close()
                raise
        else:
            self.size = os.path.getsize(path)

    @property
    def writable(self) -> bool:
        return self._wfd >= 0

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._wfd, view)
            view = view[n:]
            self.size += n

    def sync(self) -> None:
        os.fdatasync(self._wfd)

    def seal(self) -> None:
        """No more appends (the writer moved on to a new segment)."""
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1

    def read(self, offset: int, length: int) -> bytes:
        if self._rfd < 0:
            self._rfd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._rfd, length, offset)
        if len(data) != length:
            raise OSError(f"short read in {self.path} at {offset}")
        return data

    def ack(self, offsets: Iterable[int]) -> None:
        """Append commit marks; not synced (a lost mark only costs a re-insert)."""
        if self._afd < 0:
            self._afd = os.open(ack_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                0o600)
        data = b"".join(b"%d\n" % o for o in offsets)
        view = memoryview(data)
        while view:
            view = view[os.write(self._afd, view):]

    def close(self) -> None:
        for name in ("_wfd", "_rfd", "_afd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def remove(self) -> None:
        """Delete the segment and its marks (everything in it is committed)."""
        self.close()
        for p in (self.path, ack_path(self.path)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
