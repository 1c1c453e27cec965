"""Helpers shared by the probe-services routes: JSON bodies, field parsing, geolocation.

Request bodies are parsed and validated by hand, not by webargs: aiohttp-apispec's
validation answers 422 with bodies nested by location, while probes and our one error
format expect 400 `{"error": "..."}`. `json_body` therefore only *documents* a body schema.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from oonibackend import jsonutil
from oonibackend.appkeys import GEOIP
from oonibackend.errors import APIError

log = logging.getLogger("oonibackend.probe_services")

TAGS = ["Probe services"]

# ASCII only and fullmatch: `\d` would take other scripts' digits, `$` a trailing newline.
_CC = re.compile(r"[A-Z]{2}")
_ASN = re.compile(r"AS([0-9]{1,10})")
_CATEGORY = re.compile(r"[A-Z]{1,16}")
MAX_CATEGORY_CODES = 100


def json_body(schema: Any, description: str = "") -> Callable[[Any], Any]:
    """Document a JSON request body (Swagger 2 `in: body`) without webargs validation."""
    if callable(schema):
        schema = schema()

    def wrapper(func: Any) -> Any:
        if not hasattr(func, "__apispec__"):
            func.__apispec__ = {"schemas": [], "responses": {}, "parameters": []}
            func.__schemas__ = []
        func.__apispec__["schemas"].append({
            "schema": schema, "location": "json",
            "options": {"required": True, "description": description}, "example": {},
        })
        return func

    return wrapper


async def read_json(request: web.Request, message: str = "JSON expected") -> Any:
    """The request body as JSON, whatever the Content-Type (probes are not consistent)."""
    body = await request.read()
    try:
        return jsonutil.loads(body)
    except jsonutil.JSONDecodeError as e:
        raise APIError(message, 400) from e


async def read_json_object(request: web.Request, message: str = "JSON expected"
                           ) -> dict[str, Any]:
    data = await read_json(request, message)
    if not isinstance(data, dict):
        raise APIError(message, 400)
    return data


def parse_cc(value: Any, field: str = "probe_cc", default: str = "ZZ") -> str:
    """A two-letter country code, upper-cased; missing or empty means `default`."""
    if value is None or value == "":
        return default
    if (not isinstance(value, str) or not value.isascii()  # "ß".upper() == "SS"
            or not _CC.fullmatch(value.strip().upper())):
        raise APIError(f"Invalid {field}", 400)
    return value.strip().upper()


def parse_asn(value: Any, field: str = "probe_asn", allow_bare: bool = False) -> int:
    """`AS<number>` (or a bare number when `allow_bare`) -> int; missing or empty -> 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and allow_bare:
        n = value
    elif isinstance(value, str) and value.isascii():
        s = value.strip().upper()
        if allow_bare and s.isascii() and s.isdigit():
            s = "AS" + s
        m = _ASN.fullmatch(s)
        if not m:
            raise APIError(f"Invalid {field}", 400)
        n = int(m.group(1))
    else:
        raise APIError(f"Invalid {field}", 400)
    if not 0 <= n < 2**32:
        raise APIError(f"Invalid {field}", 400)
    return n


def parse_category_codes(value: Any, field: str = "category_codes") -> list[str]:
    """A list or comma-separated string of category codes: upper-cased, deduplicated.

    The legacy check-in answered 500 for non-alphabetic codes and did not upper-case them
    (so `news` matched nothing); here they are upper-cased and bad ones are a 400.
    """
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise APIError(f"Invalid {field}", 400)
    if len(items) > MAX_CATEGORY_CODES:
        raise APIError(f"Too many {field}", 400)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise APIError(f"Invalid {field}", 400)
        code = item.strip().upper()
        if not code:
            continue
        if not item.isascii() or not _CATEGORY.fullmatch(code):
            raise APIError(f"Invalid category code {item[:20]!r}", 400)
        if code not in out:
            out.append(code)
    return out


def geolocate(request: web.Request, ip: str) -> tuple[str, str, str | None]:
    """(cc, "AS<n>", network name) of an address, `ZZ` / `AS0` / None when unknown."""
    geo = request.app.get(GEOIP)
    if geo is None or not ip:
        return "ZZ", "AS0", None
    try:
        cc, asn, name = geo.lookup(ip)
    except ValueError:
        return "ZZ", "AS0", None
    except Exception:  # a damaged database file must not fail check-in
        log.warning("GeoIP lookup failed", extra={"ip": ip}, exc_info=True)
        return "ZZ", "AS0", None
    return cc or "ZZ", f"AS{asn}" if asn is not None else "AS0", name
