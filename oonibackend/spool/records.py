"""Append-only record files: the framing under both write-ahead logs, the spool's WAL
(oonibackend/spool/wal.py) and the fastpath's intake queue (workers/intake/segment.py).

A file is an 8-byte magic naming its kind, then records

    u32 length | u32 crc32 | payload

(little endian; `length` and `crc32` cover the payload, whose layout is the owner's). Records
are only ever appended, and a batch is acknowledged after its fdatasync, so after a crash the
only damage is a torn tail: a record cut short, with a bad crc, or whose payload the owner
cannot parse ends the file. That record was never acknowledged, so readers ignore it and
everything after it.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

from oonibackend.fileutil import fsync_dir

HEAD = struct.Struct("<II")
# A record larger than this is corruption, not a measurement (bodies are capped far lower).
MAX_RECORD = 1 << 30

T = TypeVar("T")


def frame(payload: bytes) -> bytes:
    """One record: its head, then `payload`."""
    return HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def crc(payload: bytes) -> int:
    """The checksum a record's head carries for `payload`."""
    return zlib.crc32(payload)


class Scan(Generic[T]):
    """Iterate the intact records of a file (after its magic) or of a buffer (no magic)
    without loading a file whole. `parse(offset, payload)` turns a payload into a record,
    or None when it cannot, which ends the scan like a bad crc. Afterwards `end` is the
    offset where the intact records end and `torn` the number of bytes ignored after it."""

    def __init__(self, source: Path | bytes | memoryview,
                 parse: Callable[[int, bytes], T | None], magic: bytes = b"") -> None:
        self.source = source
        self.parse = parse
        self.magic = magic
        self.size = self.end = 0

    @property
    def torn(self) -> int:
        return self.size - self.end

    def __iter__(self) -> Iterator[T]:
        if isinstance(self.source, Path):
            self.size = os.path.getsize(self.source)
            f: BinaryIO = open(self.source, "rb")
        else:
            self.size = len(self.source)
            f = io.BytesIO(self.source)
        self.end = 0
        with f:
            if f.read(len(self.magic)) != self.magic:
                return  # created, but the magic never reached the disk: nothing acknowledged
            pos = self.end = len(self.magic)
            while pos + HEAD.size <= self.size:
                head = f.read(HEAD.size)
                if len(head) < HEAD.size:
                    return
                length, crc = HEAD.unpack(head)
                if length > MAX_RECORD or pos + HEAD.size + length > self.size:
                    return
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    return
                record = self.parse(pos, payload)
                if record is None:
                    return
                pos = self.end = pos + HEAD.size + length
                yield record


class Appender:
    """A new record file, appended to by one writer: created with its magic, made durable
    (file and directory entry) before anything in it can be acknowledged when `sync`."""

    def __init__(self, path: Path, magic: bytes, *, sync: bool,
                 remove_on_failure: bool = False) -> None:
        self.path = path
        self.size = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            self.append(magic)
            if sync:
                os.fsync(self._fd)
                fsync_dir(path.parent)
        except BaseException:
            self.close()
            if remove_on_failure:
                # Nothing in it was acknowledged: leave no empty file behind (a full disk
                # would otherwise leave one per failed attempt).
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise

    @property
    def writable(self) -> bool:
        return self._fd >= 0

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
