"""GET /health: whether this instance can accept and store measurements (oonibackend.health).

    200 {"status": "ok" | "degraded", "errors": [...], "version", "build_label", "checks"}
    503 {"status": "fail", ...}    the database or the spool is failing: see `errors`

The shape of OONI's current services (legacy answered the text `UP` without checking
anything; docs/compatibility.md). The answer is the latest background round: no I/O here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import __version__, jsonutil
from oonibackend.appkeys import CONFIG, DB
from oonibackend.health import Monitor, monitoring
from oonibackend.routes.anonc import ANONC
from oonibackend.routes.collector import SPOOL
from oonibackend.routes.pages import build_label
from oonibackend.storage.migrate import available

HEALTH = web.AppKey("health", Monitor)


@docs(summary="Health check: database, fastpath, spool and reference data",
      responses={200: {"description": "ok or degraded"}, 503: {"description": "fail"}})
async def health(request: web.Request) -> web.Response:
    r = request.app[HEALTH].report()
    body = {"status": r.status, "errors": r.errors, "version": __version__,
            "build_label": build_label(), "checks": r.checks, "checked_at": r.at}
    return jsonutil.response(body, 503 if r.status == "fail" else 200,
                             headers={"Cache-Control": "no-cache"})


async def health_ctx(app: web.Application) -> AsyncIterator[None]:
    latest = max(m.version for m in available())
    # The spool (collector) and the credential service are set up before: the spool's
    # replay may be pending, the credential keys unusable.
    monitor = Monitor(app[CONFIG], app[DB], latest, spool=app.get(SPOOL), anonc=app.get(ANONC))
    async with monitoring(monitor) as monitor:
        app[HEALTH] = monitor
        yield


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(health_ctx)
    app.router.add_get("/health", health)
