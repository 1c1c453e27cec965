"""Helpers shared by the probe-services routes: body documentation, geolocation.

Request bodies are parsed and validated by hand (routes/body.py, oonibackend/validate.py), not
by webargs: aiohttp-apispec's validation answers 422 with bodies nested by location, while
probes and our one error format expect 400 `{"error": "..."}`. `json_body` therefore only
*documents* a body schema.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from oonibackend.geoip import GEOIP

log = logging.getLogger(__name__)

TAGS = ["Probe services"]


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
