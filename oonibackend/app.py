"""The API application: one aiohttp app serving every route, built from a Config."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import setup_aiohttp_apispec

from oonibackend import clientip, storage
from oonibackend.appkeys import CONFIG, DB, METRICS
from oonibackend.config import Config
from oonibackend.cors import Cors
from oonibackend.errors import error_response
from oonibackend.metrics import Metrics

log = logging.getLogger(__name__)
CORS = web.AppKey("cors", Cors)


@web.middleware
async def outer_middleware(request: web.Request, handler):
    """Errors as JSON (the one error format), CORS and per-route metrics, in one layer: every
    middleware layer costs a few microseconds on every request."""
    t0 = time.perf_counter()
    status = 500
    cors = request.app[CORS]
    try:
        resp = cors.preflight(request)
        if resp is None:
            try:
                resp = await handler(request)
            except Exception as e:
                resp = error_response(request, e)
        cors.decorate(request, resp)
        status = resp.status
        return resp
    except web.HTTPException as e:  # redirects
        status = e.status
        raise
    finally:
        route = request.match_info.route
        name = route.resource.canonical if route.resource is not None else "unmatched"
        m = request.app[METRICS]
        m.inc("http_requests_total", help="HTTP requests by route and status",
              route=name, status=str(status))
        m.observe("http_request_duration_seconds", time.perf_counter() - t0,
                  help="HTTP request latency by route", route=name)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    # Behind the circuit breaker: reads fail at once (503) while the health monitor's probe
    # finds the database down, instead of waiting for database.read_timeout.
    db = storage.connect(app[CONFIG], breaker=True)
    app[DB] = db
    if (breaker := getattr(db, "breaker", None)) is not None:
        m = app[METRICS]
        m.set("database_breaker_open", lambda: float(breaker.is_open),
              help="1 while the database is known down and reads are refused at once")
        m.set("database_breaker_refused_reads", lambda: float(breaker.fast_failures),
              help="Reads refused or cut short because the database was known down")
    yield
    await db.close()


def make_app(cfg: Config) -> web.Application:
    from oonibackend.quotas.middleware import quota_middleware
    from oonibackend.routes import (
        anonc,
        auth,
        auth_v2,
        collector,
        detector,
        health,
        incidents,
        oonirun,
        pages,
        probe_services,
        probe_update,
        quotas_summary,
        read_api,
        url_priorities,
        url_submission,
        vpn_config,
    )

    app = web.Application(
        client_max_size=cfg.server.max_body_size,
        middlewares=[outer_middleware, quota_middleware],
        # aiohttp cannot decode zstd and closes the connection on bad gzip; request bodies
        # are decompressed by routes/body.py instead, with a size cap against bombs.
        handler_args={"auto_decompress": False},
    )
    app[CONFIG] = cfg
    app[METRICS] = Metrics()
    app[CORS] = Cors(cfg.server.cors_origins)
    clientip.setup(app)
    app.cleanup_ctx.append(database_ctx)
    for component in (pages, probe_services, probe_update, collector, vpn_config, quotas_summary,
                      read_api, auth, auth_v2, url_priorities, incidents, oonirun, detector,
                      url_submission, anonc,
                      health):  # last: it checks what the others set up (e.g. the spool)
        component.setup(app)
    setup_aiohttp_apispec(
        app,
        title="OONI API",
        version="1",
        url="/apispec_1.json",
        swagger_path="/apidocs",
    )
    return app
