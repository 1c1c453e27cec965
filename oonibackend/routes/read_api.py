"""The read API: what Explorer, the MAT and researchers call.

Registered from here, one module per area:
* measurements          GET /api/v1/measurements
* measurement_body      GET /api/v1/measurement/{uid}, /api/v1/raw_measurement,
                        /api/v1/measurement_meta (body lookup: spool, peers, object store)
* measurement_feedback  GET /api/_/measurement_feedback/{uid}
* aggregation           GET /api/v1/aggregation, /api/v1/torsf_stats
* mat                   GET /api/v1/aggregation/observations[/ctrl], /api/v1/aggregation/analysis
* explorer_overview     Explorer's global and list statistics (/api/_/countries, ...)
* explorer_country      Explorer's per-country statistics (/api/_/test_coverage, ...)
plus the per-process cache of expensive answers (app[READ_CACHE]).
"""

from __future__ import annotations

from aiohttp import web

from oonibackend.readcache import READ_CACHE, ReadCache
from oonibackend.routes import (
    aggregation,
    explorer_country,
    explorer_overview,
    mat,
    measurement_body,
    measurement_feedback,
    measurements,
)


def setup(app: web.Application) -> None:
    app[READ_CACHE] = ReadCache()
    for module in (measurements, measurement_body, measurement_feedback, aggregation, mat,
                   explorer_overview, explorer_country):
        module.setup(app)
