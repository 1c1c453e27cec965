"""Request bodies, for every route: read whole but capped, decompressed, and JSON.

Bodies are decompressed here, not by aiohttp (make_app turns its decoding off): aiohttp cannot
decode zstd without an extra package, and its errors on a bad gzip body close the connection
instead of answering with our JSON error. The cap (a route's own, else server.max_body_size)
applies to the body as received and again after decompression (decompression bombs); past
it the request is refused with 413 before more is read. (`StreamReader.read(n)` returns
whatever has arrived, not n bytes, so bodies are read in a loop.)
"""

from __future__ import annotations

import zlib
from typing import Any

import zstandard
from aiohttp import web

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG
from oonibackend.errors import APIError

_CHUNK = 1 << 16
# `read_json(..., empty=REFUSE)`: an empty body is refused like one that is not JSON (the
# probe-services routes: probes always send a body).
REFUSE = object()


def _too_large() -> APIError:
    return APIError("Request body too large", 413)


def _bad(message: str, err_str: str | None) -> APIError:
    extra = {"err_str": err_str} if err_str else {}
    return APIError(message, 400, **extra)


async def _read(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > cap:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _zstd(raw: bytes, cap: int) -> bytes:
    out: list[bytes] = []
    size = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        with reader:
            while chunk := reader.read(min(_CHUNK, cap + 1 - size)):
                out.append(chunk)
                size += len(chunk)
                if size > cap:
                    raise _too_large()
    except zstandard.ZstdError:
        raise APIError("Invalid zstd body") from None
    return b"".join(out)


def _zlib(raw: bytes, cap: int, wbits: int, name: str) -> bytes:
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, cap + 1)
    except zlib.error:
        raise APIError(f"Invalid {name} body") from None
    if len(out) > cap:
        raise _too_large()
    if not d.eof or d.unused_data:
        raise APIError(f"Invalid {name} body")
    return out


async def read_body(request: web.Request, max_bytes: int | None = None) -> bytes:
    """The request body, decompressed per Content-Encoding (identity, zstd, gzip, deflate),
    at most `max_bytes` (default server.max_body_size) before and after decompression."""
    cap = request.app[CONFIG].server.max_body_size if max_bytes is None else max_bytes
    raw = await _read(request, cap)
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc in ("", "identity"):
        return raw
    if enc == "zstd":
        return _zstd(raw, cap)
    if enc in ("gzip", "x-gzip"):
        return _zlib(raw, cap, 16 + zlib.MAX_WBITS, "gzip")
    if enc == "deflate":
        return _zlib(raw, cap, zlib.MAX_WBITS, "deflate")
    raise APIError("Unsupported Content-Encoding")


async def read_json(request: web.Request, max_bytes: int | None = None, *, empty: Any = None,
                    message: str = "Invalid JSON body", err_str: str | None = None) -> Any:
    """The parsed JSON body, whatever the Content-Type (probes are not consistent); `empty`
    when there is no body (`REFUSE`: a 400 too); 400 `message` when it is not JSON."""
    raw = await read_body(request, max_bytes)
    if empty is not REFUSE and not raw.strip():
        return empty
    try:
        return jsonutil.loads(raw)
    except jsonutil.JSONDecodeError:
        raise _bad(message, err_str) from None


async def read_object(request: web.Request, max_bytes: int | None = None, *,
                      message: str | None = None, err_str: str | None = None
                      ) -> dict[str, Any]:
    """A JSON object body. By default an empty body is `{}` and any other JSON value a 400;
    with `message` (the probe-services routes' wording) an empty body is refused too and
    every refusal says `message`."""
    body = await read_json(request, max_bytes, empty={} if message is None else REFUSE,
                           message=message or "Invalid JSON body", err_str=err_str)
    if not isinstance(body, dict):
        raise _bad(message or "Invalid request: expected a JSON object", err_str)
    return body
