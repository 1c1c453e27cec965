"""The one error format: `{"error": "..."}` with a 4xx/5xx status, for every route.

Handlers raise `APIError` (or aiohttp's HTTP exceptions); the middleware turns both, and any
unexpected exception, into JSON. Unexpected exceptions are logged with a traceback and answered
500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from oonibackend import jsonutil
from oonibackend.storage import DatabaseError, DatabaseUnavailable, QueryLimitExceeded
from oonibackend.storage.breaker import CircuitOpen

log = logging.getLogger("oonibackend.errors")


class APIError(Exception):
    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra
        self.headers: dict[str, str] = {}


def json_error(message: str, status: int = 400, headers: dict[str, str] | None = None,
               **extra: Any) -> web.Response:
    body = {"error": message, **extra}
    h = {"Cache-Control": "no-cache", **(headers or {})}
    return web.Response(body=jsonutil.dumps(body), status=status,
                        content_type="application/json", headers=h)


_REASONS = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    429: "Quota exceeded",
}


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON answer for an exception raised by a handler; redirects are re-raised."""
    if isinstance(exc, APIError):
        return json_error(exc.message, exc.status, exc.headers, **exc.extra)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400 or exc.content_type == "application/json":
            raise exc
        msg = _REASONS.get(exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_error(msg, exc.status, headers)
    if isinstance(exc, QueryLimitExceeded):
        # The per-query cost cap (max_execution_time, max_rows_to_read) was hit.
        log.warning("query limit exceeded on %s %s: %s", request.method, request.path, exc)
        return json_error("Query too expensive: it exceeded the time or rows-to-read limit; "
                          "narrow the time range or add filters", 504)
    if isinstance(exc, DatabaseUnavailable):
        # Refused by the circuit breaker: it logs the outage once, not once per request.
        (log.debug if isinstance(exc, CircuitOpen) else log.warning)(
            "database unavailable on %s %s: %s", request.method, request.path, exc)
        return json_error("Database unavailable, retry later", 503, {"Retry-After": "5"})
    if isinstance(exc, DatabaseError):
        log.error("database error on %s %s: %s", request.method, request.path, exc)
        return json_error("Database query error", 500)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return json_error("Internal server error", 500)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except Exception as e:
        return error_response(request, e)
