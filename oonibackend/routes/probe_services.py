"""Probe services: everything OONI Probe calls before and around submitting measurements.

Registered from here, one module per job:
* checkin        POST /api/v1/check-in, POST /api/_/check-in
* test_helpers   GET /api/v1/test-helpers, GET /api/v1/collectors, POST /bouncer/net-tests
* probe_auth     POST /api/v1/register, POST /api/v1/login
* probe_config   GET /api/v1/test-list/tor-targets, GET /api/v1/test-list/psiphon-config
* geolookup      POST /api/v1/geolookup
* test_lists     GET /api/v1/test-list/urls, GET /api/_/debug_prioritization
plus the components they share: GeoIP (app[GEOIP]) and the URL-list snapshot
(app[TEST_LISTS], refreshed in the background).
"""

from __future__ import annotations

from aiohttp import web

from oonibackend.geoip import geoip_ctx
from oonibackend.prioritization.snapshot import url_lists_ctx
from oonibackend.routes import (
    checkin,
    geolookup,
    probe_auth,
    probe_config,
    test_helpers,
    test_lists,
)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(geoip_ctx)
    app.cleanup_ctx.append(url_lists_ctx)
    for module in (checkin, test_helpers, probe_auth, probe_config, geolookup, test_lists):
        module.setup(app)
