"""The one JSON helper: orjson for speed, with the OONI API's conventions.

Naive datetimes are UTC and rendered `YYYY-MM-DDTHH:MM:SSZ` (microseconds only when non-zero),
dates `YYYY-MM-DD`, like the legacy API's encoder.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

JSONDecodeError = orjson.JSONDecodeError


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def response(
    obj: Any, status: int = 200, *, cache: int | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response. `cache` seconds sets Cache-Control (0 means no-cache)."""
    h = dict(headers or {})
    if cache is not None:
        h["Cache-Control"] = f"max-age={cache}" if cache > 0 else "max-age=0, no-cache"
    return web.Response(body=dumps(obj), status=status, content_type="application/json", headers=h)


def rfc3339(t: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` for a UTC datetime (naive or aware), no fraction."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
