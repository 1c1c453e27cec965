"""Bodies in the object store: the `jsonl` row of a measurement, then its jsonl.gz object.

The uploader (jobs/upload/files.py) writes every line of a jsonl.gz as its own gzip member and
records `byte_offset`/`byte_length` (migration 0002): one ranged GET of exactly that member
and one gunzip give the body. Rows without offsets (0/0: files written before, e.g. OONI's
own archive) are read by `linenum`: the object is streamed with ranged GETs of `CHUNK` bytes
through a streaming, multi-member gunzip that counts lines, so an hourly file is never held
in memory and the read stops at the wanted line.

The reader is the object store (`oonibackend.objectstore.open_store(cfg)`: local directory
or S3), whose `get_range` is the only operation used here.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from oonibackend.objectstore import ObjectStore
from oonibackend.storage import Database

log = logging.getLogger(__name__)

CHUNK = 1 << 20          # bytes per ranged GET when streaming by line number
MAX_OUT = 1 << 20        # decompressed bytes produced per step (bounds memory)
MAX_BODY = 64 << 20      # larger measurements are not served from the archive
INLINE_GUNZIP = 256 << 10  # members up to this size are gunzipped on the event loop


class ArchiveError(Exception):
    """The object is missing, shorter than its row says, or not gzip."""


def jsonl_sql(report_id: str, inp: str, uid: str) -> tuple[str, dict[str, Any]]:
    """Where a measurement's line is. Several measurements can share a report id and input
    (a probe resubmitting), so the row of this uid is preferred; rows without a uid (legacy
    indexes) are the fallback. Identical duplicates of the ReplacingMergeTree are harmless."""
    return ("SELECT s3path, linenum, byte_offset, byte_length FROM jsonl\n"
            "WHERE report_id = %(report_id)s AND input = %(input)s\n"
            "  AND measurement_uid IN (%(uid)s, '')\n"
            "ORDER BY measurement_uid = %(uid)s DESC, linenum\nLIMIT 1",
            {"report_id": report_id, "input": inp, "uid": uid})


class GunzipStream:
    """Incremental gunzip of concatenated gzip members, output in pieces of <= MAX_OUT."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            out = self._d.decompress(data, MAX_OUT)
            if out:
                yield out
            if self._d.eof:
                data = self._d.unused_data
                self._d = zlib.decompressobj(wbits=31)
                if not data:
                    return
            else:
                data = self._d.unconsumed_tail
                if not data and len(out) < MAX_OUT:
                    return


class LineFinder:
    """Counts lines of decompressed output until line `target` (0-based) is complete."""

    def __init__(self, target: int, max_line: int = MAX_BODY) -> None:
        if target < 0:
            raise ValueError("negative line number")
        self.target = target
        self.max_line = max_line
        self.line = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """The wanted line (without its newline) once complete, else None."""
        start = 0
        if self.line < self.target:
            count = data.count(b"\n")
            if self.line + count < self.target:
                self.line += count
                return None
            while self.line < self.target:
                start = data.index(b"\n", start) + 1
                self.line += 1
        end = data.find(b"\n", start)
        self._buf += data[start:] if end < 0 else data[start:end]
        if len(self._buf) > self.max_line:
            raise ArchiveError(f"line {self.target} longer than {self.max_line} bytes")
        return bytes(self._buf) if end >= 0 else None

    def at_eof(self) -> bytes | None:
        """A last line without a newline, if it is the wanted one."""
        return bytes(self._buf) if self.line == self.target and self._buf else None


def gunzip_member(data: bytes) -> bytes:
    """One gzip member's content, without the trailing newline of a jsonl line."""
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(data, MAX_BODY + 1)
    if len(out) > MAX_BODY:
        raise ArchiveError(f"member larger than {MAX_BODY} bytes")
    if not d.eof:
        raise ArchiveError("truncated gzip member")
    return out[:-1] if out.endswith(b"\n") else out


def _is_past_end(e: BaseException) -> bool:
    """S3 answers a range starting at or beyond the end with InvalidRange (416)."""
    err = getattr(e, "response", None)
    code = err.get("Error", {}).get("Code") if isinstance(err, dict) else None
    return code in ("InvalidRange", "416")


async def read_member(reader: ObjectStore, key: str, offset: int, length: int) -> bytes:
    data = await reader.get_range(key, offset, length)
    if len(data) != length:
        raise ArchiveError(f"{key}: {len(data)} bytes at {offset}, expected {length}")
    if length <= INLINE_GUNZIP:
        return gunzip_member(data)
    return await asyncio.to_thread(gunzip_member, data)


def _scan(stream: GunzipStream, finder: LineFinder, chunk: bytes) -> bytes | None:
    for out in stream.feed(chunk):
        line = finder.feed(out)
        if line is not None:
            return line
    return None


async def read_line(reader: ObjectStore, key: str, linenum: int, chunk_size: int = CHUNK
                    ) -> bytes | None:
    """Line `linenum` of a (multi-member) jsonl.gz, streamed by ranged reads of `chunk_size`
    bytes; None past the last line."""
    stream, finder = GunzipStream(), LineFinder(linenum)
    pos = 0
    while True:
        try:
            chunk = await reader.get_range(key, pos, chunk_size)
        except Exception as e:
            if pos > 0 and _is_past_end(e):
                return finder.at_eof()
            raise
        if chunk:
            line = await asyncio.to_thread(_scan, stream, finder, chunk)
            if line is not None:
                return line
        if len(chunk) < chunk_size:
            return finder.at_eof()
        pos += len(chunk)


async def read_body(reader: ObjectStore, row: Mapping[str, Any]) -> bytes | None:
    """The body a `jsonl` row points to (by byte range when known, else by line number)."""
    key = row["s3path"]
    if row["byte_length"] > 0:
        return await read_member(reader, key, row["byte_offset"], row["byte_length"])
    return await read_line(reader, key, row["linenum"])


async def fetch(db: Database, reader: ObjectStore, report_id: str, inp: str, uid: str,
                settings: Mapping[str, Any] | None = None) -> bytes | None:
    """The archived body of a measurement, or None (no row, or the object unreadable:
    logged). Database errors propagate."""
    row = await db.query_one(*jsonl_sql(report_id, inp, uid), settings=settings)
    if row is None:
        return None
    try:
        return await read_body(reader, row)
    except Exception as e:  # any store failure only means "not available from here"
        log.warning("archived body unreadable", extra={
            "uid": uid, "s3path": row["s3path"], "error": f"{type(e).__name__}: {e}"[:300]})
        return None
