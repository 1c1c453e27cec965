"""Reading a reference file from a local path, a file:// URL or an http(s) URL, as a stream.

Shared by the timer jobs that fetch published files (`update-asnmeta`, `download-geoip`).
Everything is bounded: the download time, the bytes received and the bytes after
decompression. Gzip is recognised by its magic bytes (so a `.gz` name that the HTTP client
already decoded through Content-Encoding is read as it arrives) and decompressed in bounded
steps, so a compression bomb cannot allocate more than one chunk at a time.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024
DEFAULT_TIMEOUT = 600.0
_GZIP_MAGIC = b"\x1f\x8b"


class SourceError(Exception):
    """The source could not be read, or is larger than allowed."""


class SourceNotFound(SourceError):
    """The source does not exist (HTTP 404, missing file): maybe not published yet."""


def is_http(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def local_path(source: str) -> Path:
    """The path of a plain path or file:// URL; SourceError for other schemes."""
    if source.startswith("file:"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"{source}: file:// URLs must name a local path")
        return Path(unquote(parts.path))
    if "://" in source:
        raise SourceError(f"{source}: not a file path, a file:// URL or an http(s) URL")
    return Path(source)


class Decoder:
    """Push-style gunzip-if-gzip with an output cap (pure; no I/O)."""

    def __init__(self, max_bytes: int, where: str) -> None:
        self.max_bytes = max_bytes
        self.where = where
        self.total = 0
        self._head = b""
        self._gzip: bool | None = None
        self._z: zlib._Decompress | None = None

    def _emit(self, data: bytes) -> bytes:
        self.total += len(data)
        if self.total > self.max_bytes:
            raise SourceError(f"{self.where}: larger than {self.max_bytes} bytes "
                              f"(uncompressed)")
        return data

    def _gunzip(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._z is None:
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._z.decompress(data, CHUNK)
            except zlib.error as e:
                raise SourceError(f"{self.where}: invalid gzip data: {e}") from e
            if out:
                yield self._emit(out)
            if self._z.eof:  # a further gzip member may follow
                data = self._z.unused_data
                self._z = None
                if data and not data.startswith(_GZIP_MAGIC):
                    if data.strip(b"\0"):
                        raise SourceError(f"{self.where}: garbage after the gzip data")
                    return
            else:
                data = self._z.unconsumed_tail

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._gzip is None:
            self._head += data
            if len(self._head) < len(_GZIP_MAGIC):
                return
            self._gzip = self._head.startswith(_GZIP_MAGIC)
            data, self._head = self._head, b""
        if self._gzip:
            yield from self._gunzip(data)
        elif data:
            yield self._emit(data)

    def finish(self) -> Iterator[bytes]:
        if self._gzip is None and self._head:  # shorter than the magic: plain
            self._gzip = False
            yield self._emit(self._head)
        if self._gzip and self._z is not None:
            if not self._z.eof:
                raise SourceError(f"{self.where}: truncated gzip data")


async def _read_file(path: Path, max_bytes: int) -> AsyncIterator[bytes]:
    try:
        f = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError as e:
        raise SourceNotFound(f"{path}: no such file") from e
    except OSError as e:
        raise SourceError(f"{path}: {e.strerror or e}") from e
    try:
        total = 0
        while True:
            try:
                data = await asyncio.to_thread(f.read, CHUNK)
            except OSError as e:
                raise SourceError(f"{path}: {e.strerror or e}") from e
            if not data:
                return
            total += len(data)
            if total > max_bytes:
                raise SourceError(f"{path}: larger than {max_bytes} bytes")
            yield data
    finally:
        f.close()


async def _read_http(url: str, max_bytes: int, timeout: float) -> AsyncIterator[bytes]:
    import aiohttp

    where = display(url)
    client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as session, \
                session.get(url) as resp:
            if resp.status == 404:
                raise SourceNotFound(f"{where}: HTTP 404 (not published?)")
            if resp.status != 200:
                raise SourceError(f"{where}: HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise SourceError(f"{where}: {resp.content_length} bytes, larger than "
                                  f"{max_bytes}")
            total = 0
            async for data in resp.content.iter_chunked(CHUNK):
                total += len(data)
                if total > max_bytes:
                    raise SourceError(f"{where}: larger than {max_bytes} bytes")
                yield data
    except (aiohttp.ClientError, TimeoutError) as e:
        what = "timed out" if isinstance(e, TimeoutError) else (str(e) or type(e).__name__)
        raise SourceError(f"{where}: {what}") from e


async def iter_source(source: str, *, max_bytes: int, timeout: float = DEFAULT_TIMEOUT
                      ) -> AsyncIterator[bytes]:
    """The (decompressed) bytes of `source`, in chunks; SourceError / SourceNotFound."""
    if is_http(source):
        raw = _read_http(source, max_bytes, timeout)
    else:
        path = local_path(source)
        if path.is_dir():
            raise SourceError(f"{source}: is a directory")
        raw = _read_file(path, max_bytes)
    dec = Decoder(max_bytes, display(source))
    try:
        async for data in raw:
            for out in dec.feed(data):
                yield out
        for out in dec.finish():
            yield out
    finally:
        await raw.aclose()


def display(source: str) -> str:
    """The source for messages: URLs without credentials or query strings."""
    if not is_http(source):
        return source
    p = urlsplit(source)
    host = p.netloc.rpartition("@")[2]
    return f"{p.scheme}://{host}{p.path}"
