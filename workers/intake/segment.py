"""On-disk format of the intake queue: append-only segments plus their commit marks.

A segment `<seq>.seg` is a file of append-only records (oonibackend/spool/records.py: magic,
then `u32 length | u32 crc32 | payload`, torn-tail rule) whose payload is

    u8 uid_len | uid | body

Records are made durable by one fdatasync per batch before the feeder answers, so a record
cut short or with a bad crc was never acknowledged, and reading stops there.

Commit marks live beside it in `<seq>.ack`: one decimal record offset per line, appended
(without fsync) once the record's rows are in the database. Losing marks in a crash only
means those measurements are scored and inserted again, which the ReplacingMergeTree keyed
by measurement_uid collapses; a torn last line is ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from oonibackend.spool import delivery, records

MAGIC = b"OOFPQ\x00\x01\n"
SUFFIX = ".seg"
ACK_SUFFIX = ".ack"


class Record(NamedTuple):
    """A record found in a segment: where it starts, and where its body is."""

    offset: int
    uid: str
    body_offset: int
    body: bytes


def encode(uid: str, body: bytes) -> bytes:
    """A record: the same bytes the API sends in a batch (oonibackend/spool/delivery.py)."""
    return delivery.encode(uid, body)


def _parse(offset: int, payload: bytes) -> Record | None:
    split = delivery.split_payload(payload)
    if split is None:
        return None
    uid, at = split
    return Record(offset, uid, offset + records.HEAD.size + at, payload[at:])


def read_records(path: Path) -> tuple[list[Record], int]:
    """The intact records of a segment and the number of trailing bytes ignored (torn)."""
    scan = records.Scan(path, _parse, MAGIC)
    return list(scan), scan.torn


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
        self._rfd = -1
        self._afd = -1
        self._writer = records.Appender(path, MAGIC, sync=sync) if create else None
        self._size = 0 if create else os.path.getsize(path)

    @property
    def size(self) -> int:
        return self._writer.size if self._writer is not None else self._size

    @property
    def writable(self) -> bool:
        return self._writer is not None and self._writer.writable

    def append(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.append(data)

    def sync(self) -> None:
        assert self._writer is not None
        self._writer.sync()

    def seal(self) -> None:
        """No more appends (the writer moved on to a new segment)."""
        if self._writer is not None:
            self._writer.close()

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
        self.seal()
        for name in ("_rfd", "_afd"):
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
