"""The one error format: `{"error": "..."}` with a 4xx/5xx status, for every route.

Modules outside routes/ (models, stores, queries, accounts, the test-list editor) raise the
domain errors below, which say what went wrong, not which status answers it; handlers raise
`APIError` (or aiohttp's HTTP exceptions). The middleware turns all three, and any unexpected
exception, into JSON. Unexpected exceptions are logged with a traceback and answered 500
without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from oonibackend import jsonutil
from oonibackend.storage import DatabaseError, DatabaseUnavailable, QueryLimitExceeded
from oonibackend.storage.breaker import CircuitOpen

log = logging.getLogger(__name__)


class DomainError(Exception):
    """An error a client should read, raised outside the HTTP layer. `extra` adds fields to
    the JSON body (e.g. `err_str`, the code the test-list editor and OONI Run clients read)."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class Invalid(DomainError):
    """The request's input is wrong (400)."""


class Unauthenticated(DomainError):
    """No valid session (401)."""


class Forbidden(DomainError):
    """Not allowed for this caller or this value (403)."""


class Failed(DomainError):
    """Our side failed in a way the message explains, e.g. a malformed list file (500)."""


class UpstreamFailed(DomainError):
    """A service we depend on (GitHub, ...) refused or failed (502)."""


class Unavailable(DomainError):
    """Not possible now, retry later (503, with Retry-After when `retry_after` is set)."""

    def __init__(self, message: str, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


_STATUS: dict[type[DomainError], int] = {
    Invalid: 400, Unauthenticated: 401, Forbidden: 403, Failed: 500, UpstreamFailed: 502,
    Unavailable: 503,
}


def domain_status(exc: DomainError) -> int:
    """The HTTP status answering a domain error."""
    return next((status for cls, status in _STATUS.items() if isinstance(exc, cls)), 500)


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
    if isinstance(exc, DomainError):
        headers = ({"Retry-After": str(exc.retry_after)}
                   if isinstance(exc, Unavailable) and exc.retry_after is not None else None)
        return json_error(exc.message, domain_status(exc), headers, **exc.extra)
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
