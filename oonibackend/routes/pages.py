"""Operational and legacy pages: landing page, robots.txt, metrics, version, old
redirects."""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import __version__, jsonutil
from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.clientip import AddressSet, parse_ip
from oonibackend.errors import APIError

# Who may scrape /metrics (`server.metrics_allow`), parsed once by `setup`.
METRICS_ALLOW = web.AppKey("metrics_allow", AddressSet)
# Written into the package directory by the build (e.g. a git describe or CI run id).
BUILD_LABEL = Path(__file__).resolve().parents[1] / "BUILD_LABEL"

EXPLORER = "https://explorer.ooni.org"
_DAY = re.compile(r"^\d{4}-[0-1]\d-[0-3]\d$")

ROBOTS = """User-agent: *
Disallow: /api/_
Disallow: /api/v1/aggregation
Disallow: /api/v1/measurement_meta
Disallow: /api/v1/raw_measurement
Disallow: /api/v1/test-list/urls
Disallow: /api/v1/torsf_stats
Disallow: /files
Disallow: /stats
Disallow: /201
Disallow: /202
Crawl-delay: 300
"""

LANDING = """<!doctype html>
<html><head><title>OONI API</title></head>
<body><h1>Welcome to the OONI API</h1>
<p>See the <a href="/apidocs">API documentation</a>.</p></body></html>
"""


@docs(summary="Landing page")
async def index(request: web.Request) -> web.Response:
    return web.Response(text=LANDING, content_type="text/html")


@docs(summary="Robots.txt")
async def robots(request: web.Request) -> web.Response:
    return web.Response(text=ROBOTS, headers={"Cache-Control": "max-age=86400"})


def metrics_allowed(request: web.Request) -> bool:
    """Whether the TCP peer may read /metrics: anyone when `server.metrics_allow` is empty,
    else only its addresses / networks. X-Forwarded-For is not consulted: a proxy's own
    address would otherwise let the whole Internet through."""
    allow = request.app.get(METRICS_ALLOW)
    if allow is None:  # an app built without `setup`
        allow = AddressSet(request.app[CONFIG].server.metrics_allow)
    if not allow:
        return True
    peer = parse_ip(request.remote)
    return peer is not None and peer in allow


@functools.cache
def build_label() -> str | None:
    """The stripped contents of the package's BUILD_LABEL file, None without one."""
    try:
        return BUILD_LABEL.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


@docs(summary="Version of this backend",
      responses={200: {"description": '{"version": "<x.y.z>", "build_label": "<label or '
                                      'null>", "package_name": "oonibackend"}'}})
async def version(request: web.Request) -> web.Response:
    return jsonutil.response({"version": __version__, "build_label": build_label(),
                              "package_name": "oonibackend"},
                             headers={"Cache-Control": "no-cache"})


async def metrics(request: web.Request) -> web.Response:
    if not metrics_allowed(request):
        raise APIError("Forbidden", 403)
    m = request.app[METRICS]
    return web.Response(
        text=m.render(), headers={"Content-Type": m.content_type, "Cache-Control": "no-cache"},
    )


async def api_root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/apidocs")


def _day_search(day: str) -> str:
    if not _DAY.match(day):
        raise APIError("Invalid date", 400)
    try:
        d = dt.date.fromisoformat(day)
    except ValueError as e:
        raise APIError("Invalid date", 400) from e
    return f"{EXPLORER}/search?until={d + dt.timedelta(days=1)}&since={d}"


async def legacy_redirect(request: web.Request) -> web.Response:
    path = request.path
    if path == "/stats":
        raise web.HTTPMovedPermanently(EXPLORER)
    raise web.HTTPMovedPermanently(f"{EXPLORER}/search")


async def files_by_date(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(_day_search(request.match_info["date"]))


async def files_by_country(request: web.Request) -> web.Response:
    cc = request.match_info["country_code"]
    if len(cc) != 2 or not cc.isalpha():
        raise APIError("Invalid country code", 400)
    raise web.HTTPMovedPermanently(f"{EXPLORER}/search?probe_cc={cc.upper()}")


async def legacy_day(request: web.Request) -> web.Response:
    day = request.match_info["date"]
    if not _DAY.match(day):
        raise web.HTTPNotFound()
    raise web.HTTPMovedPermanently(_day_search(day))


async def legacy_report_file(request: web.Request) -> web.Response:
    day, name = request.match_info["date"], request.match_info["report_file"]
    if _DAY.match(day) and name.endswith(".json") and re.match(r"^[\w.-]+$", name):
        raise web.HTTPFound(f"/files/download/{name}")
    raise web.HTTPNotFound()


def setup(app: web.Application) -> None:
    # An invalid entry stops the server at start-up rather than opening /metrics to anyone.
    app[METRICS_ALLOW] = AddressSet(app[CONFIG].server.metrics_allow)
    app.router.add_get("/", index)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/version", version)
    app.router.add_get("/api/", api_root)
    for p in ("/stats", "/files", "/files/by_date", "/files/by_country"):
        app.router.add_get(p, legacy_redirect)
    app.router.add_get("/files/by_date/{date}", files_by_date)
    app.router.add_get("/files/by_country/{country_code}", files_by_country)
    app.router.add_get(r"/{date:\d{4}-\d\d-\d\d}", legacy_day)
    app.router.add_get(r"/{date:\d{4}-\d\d-\d\d}/{report_file}", legacy_report_file)
