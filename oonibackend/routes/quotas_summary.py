"""`GET /api/_/quotas_summary`: the networks and accounts closest to their daily quota (admin).

Also wires the quota machinery into the app (lifecycle and header hook; the middleware itself is
in app.py's middleware list), so quotas are set up exactly once wherever this module is.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.accounts.auth import require_session
from oonibackend.quotas import middleware
from oonibackend.quotas.context import QUOTAS

SUMMARY_SIZE = 20


@docs(
    tags=["admin"],
    summary="Lowest remaining daily quotas",
    description="Up to 20 `[network, remaining_daily_seconds]` pairs, lowest first; network is "
                "`a.b.c.0/24`, `x:y:z::/48` or `account:<id>`. Requires an admin bearer token.",
    responses={200: {"description": "List of [network, seconds] pairs"},
               401: {"description": "Authentication required"},
               403: {"description": "Role not authorized"}},
)
async def quotas_summary(request: web.Request) -> web.Response:
    require_session(request, "admin")
    store = request.app.get(QUOTAS)
    rows = [] if store is None else await asyncio.to_thread(store.lowest, SUMMARY_SIZE)
    return jsonutil.response([[label, secs] for label, secs in rows], cache=0)


def setup(app: web.Application) -> None:
    middleware.setup(app)
    app.router.add_get("/api/_/quotas_summary", quotas_summary)
