"""Moving formatted rows between the database and the object store, measured on the way.

Bytes flow as async iterators: database stream -> `Compressor` (zstd, row count, sha256 of
what is stored, a bytes/s limit) -> `ObjectStore.put_stream`, and back:
`ObjectStore.get_stream` -> `Decompressor` (checks sha256 and completeness) ->
`Database.insert_raw`. Nothing touches the
disk and memory stays bounded by the pieces in flight (plus one multipart part on S3).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import zstandard

# Pieces larger than this are (de)compressed in a thread, off the event loop.
THREAD_MIN = 256 * 1024


class StreamError(Exception):
    """An object does not match its manifest (corrupt, truncated, wrong row count)."""


class LineCounter:
    """Rows of a TabSeparated* stream: one line each (newlines in values are escaped)."""

    def __init__(self, header_lines: int = 0) -> None:
        self.header_lines = header_lines
        self.lines = 0

    def feed(self, data: bytes) -> None:
        self.lines += data.count(b"\n")

    @property
    def rows(self) -> int:
        return max(0, self.lines - self.header_lines)


class CsvCounter(LineCounter):
    """Rows of a CSV stream as ClickHouse writes it: a newline ends a row unless it is inside
    a double-quoted value (a quote inside a value is doubled, which leaves the parity as is)."""

    def __init__(self, header_lines: int = 0) -> None:
        super().__init__(header_lines)
        self.quoted = False

    def feed(self, data: bytes) -> None:
        if b'"' not in data:
            if not self.quoted:
                self.lines += data.count(b"\n")
            return
        for i, part in enumerate(data.split(b'"')):
            if i:
                self.quoted = not self.quoted
            if not self.quoted:
                self.lines += part.count(b"\n")


def throttle_delay(done_bytes: int, elapsed: float, rate: int) -> float:
    """Seconds to wait so that `done_bytes` took at least done_bytes/rate seconds."""
    if rate <= 0:
        return 0.0
    return max(0.0, done_bytes / rate - elapsed)


class Compressor:
    """zstd-compresses a stream, counting its rows and raw bytes, hashing the compressed
    bytes, and sleeping as needed to stay under `rate` raw bytes per second."""

    def __init__(self, level: int, counter: LineCounter, rate: int = 0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.level = level
        self.counter = counter
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.raw_bytes = 0
        self.bytes = 0
        self.sha = hashlib.sha256()

    @property
    def rows(self) -> int:
        return self.counter.rows

    def _out(self, data: bytes) -> bytes:
        self.sha.update(data)
        self.bytes += len(data)
        return data

    async def run(self, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        c = zstandard.ZstdCompressor(level=self.level, write_checksum=True).compressobj()
        start = self.clock()
        async for data in source:
            self.raw_bytes += len(data)
            self.counter.feed(data)
            out = await asyncio.to_thread(c.compress, data) if len(data) >= THREAD_MIN \
                else c.compress(data)
            if out:
                yield self._out(out)
            delay = throttle_delay(self.raw_bytes, self.clock() - start, self.rate)
            if delay > 0:
                await self.sleep(delay)
        tail = c.flush()
        if tail:
            yield self._out(tail)


class Decompressor:
    """Decompresses one zstd object, counting rows and hashing the compressed bytes; raises
    StreamError at the end, before the last piece goes on, if the object is truncated or its
    sha256 differs from `sha256` (when given)."""

    def __init__(self, counter: LineCounter, sha256: str | None = None) -> None:
        self.counter = counter
        self.expected = sha256
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.raw_bytes = 0

    @property
    def rows(self) -> int:
        return self.counter.rows

    async def run(self, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        d = zstandard.ZstdDecompressor().decompressobj()
        pending = b""
        try:
            async for data in source:
                self.sha.update(data)
                self.bytes += len(data)
                out = await asyncio.to_thread(d.decompress, data) if len(data) >= THREAD_MIN \
                    else d.decompress(data)
                if pending:
                    yield pending
                pending = out
                self.raw_bytes += len(out)
                self.counter.feed(out)
        except zstandard.ZstdError as e:
            raise StreamError(f"corrupt zstd data: {e}") from e
        if not d.eof:
            raise StreamError("truncated zstd data")
        if self.expected is not None and self.sha.hexdigest() != self.expected:
            raise StreamError("sha256 mismatch")
        if pending:
            yield pending


async def collect(source: AsyncIterable[bytes]) -> bytes:
    """All bytes of a (small) stream: manifests."""
    return b"".join([piece async for piece in source])


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data
