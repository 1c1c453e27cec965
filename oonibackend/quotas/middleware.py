"""Quota middleware: refuse clients out of budget, charge every metered request's wall-clock time.

The check is one LMDB read (see store.py), so the event loop never waits on disk. The
`X-RateLimit-Remaining` header is added by an `on_response_prepare` hook rather than here,
because the outer error middleware rebuilds error responses and would drop it.
"""

from __future__ import annotations

import logging
import time

import lmdb
from aiohttp import web

from oonibackend import clientip
from oonibackend.accounts.tokens import decode_session
from oonibackend.appkeys import METRICS
from oonibackend.errors import json_error
from oonibackend.quotas.context import QUOTAS, quotas_ctx
from oonibackend.quotas.keys import account_key
from oonibackend.quotas.policy import QUOTA_POLICY, QuotaPolicy

log = logging.getLogger(__name__)

REMAINING_HEADER = "X-RateLimit-Remaining"
_REMAINING = web.RequestKey("quota_remaining", int)


def quota_key(request: web.Request, policy: QuotaPolicy, ip: clientip.IPAddress) -> bytes:
    """The account of a valid user token, else the client's network."""
    auth = request.headers.get("Authorization")
    if auth:
        session = decode_session(auth, policy.jwt_secret)
        if session is not None:
            return account_key(session.account_id)
    return clientip.network_key(ip)


@web.middleware
async def quota_middleware(request: web.Request, handler):
    store = request.app.get(QUOTAS)
    policy = request.app.get(QUOTA_POLICY)
    if store is None or policy is None or policy.unmetered_path(request.path):
        return await handler(request)
    ip = clientip.request_address(request)
    if ip in policy.whitelist:
        return await handler(request)
    key = quota_key(request, policy, ip)
    t0 = time.perf_counter()
    try:
        left = min(store.remaining(key).values())
    except lmdb.Error:
        # Rate limiting must not take the API down: serve unmetered until the store recovers.
        log.warning("quota store unreadable, request not metered", exc_info=True)
        return await handler(request)
    request[_REMAINING] = max(0, int(left))  # for responses streamed by the handler
    try:
        if left <= 0:
            request.app[METRICS].inc("quota_exceeded_total",
                                     help="Requests refused with 429 (quota exhausted)")
            return json_error("Quota exceeded", 429,
                              {"Retry-After": str(store.retry_after(time.time()))})
        return await handler(request)
    finally:
        elapsed = time.perf_counter() - t0
        store.charge(key, elapsed)
        request[_REMAINING] = max(0, int(left - elapsed))


async def add_remaining_header(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare hook: every metered response, error responses included."""
    remaining = request.get(_REMAINING)
    if remaining is not None:
        response.headers[REMAINING_HEADER] = str(remaining)


def setup(app: web.Application) -> None:
    """Register the quota lifecycle and header hook (once, however often it is called)."""
    if quotas_ctx not in app.cleanup_ctx:
        app.cleanup_ctx.append(quotas_ctx)
    if add_remaining_header not in app.on_response_prepare:
        app.on_response_prepare.append(add_remaining_header)
