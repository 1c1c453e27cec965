"""Request bodies of the JSON routes (accounts, findings, OONI Run, feedback, editors).

Read whole but capped: past `max_bytes` the request is refused with 413 before more is read.
(`StreamReader.read(n)` returns whatever has arrived, not n bytes, so bodies are read in a loop.)
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from oonibackend import jsonutil
from oonibackend.errors import APIError

_CHUNK = 65536


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise APIError("Request body too large", 413)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise APIError("Request body too large", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, max_bytes: int, *, empty: Any = None,
                    err_str: str | None = None) -> Any:
    """The parsed JSON body; `empty` when there is no body; 400 when it is not JSON."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        return empty
    try:
        return jsonutil.loads(raw)
    except jsonutil.JSONDecodeError:
        extra = {"err_str": err_str} if err_str else {}
        raise APIError("Invalid JSON body", 400, **extra) from None


async def read_object(request: web.Request, max_bytes: int, *,
                      err_str: str | None = None) -> dict[str, Any]:
    """A JSON object body (an empty body is `{}`); 400 for any other JSON value."""
    body = await read_json(request, max_bytes, empty={}, err_str=err_str)
    if not isinstance(body, dict):
        extra = {"err_str": err_str} if err_str else {}
        raise APIError("Invalid request: expected a JSON object", 400, **extra)
    return body
