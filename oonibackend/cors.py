"""CORS for browser clients (Explorer, the Test List Editor, OONI Run's web UI).

Every response carries `Access-Control-Allow-Origin`: the caller's origin, echoed with
`Allow-Credentials`, when it matches `server.cors_origins`; `*` otherwise (the read API is
public). Pre-flights (`OPTIONS` with `Access-Control-Request-Method`) are answered here for
every path, allowing `Authorization` and `Content-Type`, which Explorer's JSON POSTs and
Bearer-carrying calls need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp import web

_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
_HEADERS = "Authorization, Content-Type"
_MAX_HEADERS_LEN = 512


class Cors:
    def __init__(self, origins: Iterable[str]) -> None:
        self._origins = [re.compile(p) for p in origins]

    def allowed(self, origin: str) -> bool:
        return any(p.match(origin) for p in self._origins)

    def decorate(self, request: web.Request, resp: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return
        h = resp.headers
        if self.allowed(origin):
            h["Access-Control-Allow-Origin"] = origin
            h["Access-Control-Allow-Credentials"] = "true"
            h["Vary"] = "Origin"
        else:
            h["Access-Control-Allow-Origin"] = "*"

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a CORS pre-flight, or None when `request` is not one."""
        if request.method != "OPTIONS" or \
                "Access-Control-Request-Method" not in request.headers:
            return None
        asked = request.headers.get("Access-Control-Request-Headers", "")
        headers = _HEADERS
        if asked and len(asked) <= _MAX_HEADERS_LEN and asked.isascii() and \
                all(t.strip().replace("-", "").isalnum() for t in asked.split(",")):
            headers = asked  # no cookies are involved: any requested header is fine
        resp = web.Response(status=204, headers={
            "Access-Control-Allow-Methods": _METHODS,
            "Access-Control-Allow-Headers": headers,
            "Access-Control-Max-Age": "86400",
        })
        self.decorate(request, resp)
        return resp
