"""Explorer's per-country statistics (private `/api/_/` routes of the legacy API).

* test_coverage                    measurements per test group per day, networks per day
* website_networks, website_stats, website_urls   the websites section
* vanilla_tor_stats                per-network Tor reachability
* im_networks, im_stats            the instant-messaging section
* network_stats                    a constant (never implemented upstream)
* circumvention_stats_by_country, circumvention_runtime_stats   global circumvention stats

SQL lives in queries/country_stats.py, the zero-filled grids in queries/country_grids.py.
All windows are whole UTC days relative to today. Cache-Control follows the legacy routes; the
full-table answers are also kept in app[READ_CACHE] for a fraction of their max-age.
Database errors get the common JSON errors (503/504/500, no-cache); legacy answered the
circumvention routes' errors with 200 (or 400) `{"v": 0, "error": ...}`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError
from oonibackend.queries import country_grids as grids
from oonibackend.queries import country_stats as cq
from oonibackend.readcache import READ_CACHE
from oonibackend.routes.links import base_url
from oonibackend.routes.params import MAX_OFFSET, Query, today

TAGS = ["Explorer (private)"]
DAY = dt.timedelta(days=1)
MAX_URLS_LIMIT = 1000
DEFAULT_URLS_LIMIT = 10
TEST_COVERAGE_DAYS = 30
# Seconds an answer stays in app[READ_CACHE] (at most the route's max-age).
TEST_COVERAGE_TTL = 600
CIRCUMVENTION_TTL = 3600

_NETWORK_STATS = {"metadata": {"current_page": 1, "limit": 10, "next_url": None, "offset": 0,
                               "total_count": 0},
                  "results": []}


def _read_settings(request: web.Request) -> dict[str, Any]:
    return {"max_execution_time": request.app[CONFIG].database.max_execution_time,
            "priority": 3}


async def _rows(request: web.Request, query: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    sql, params = query
    return await request.app[DB].query(sql, params, _read_settings(request))


def _response(obj: Any, max_age: int) -> web.Response:
    """Cache-Control exactly as the legacy route: `max-age=N`, also for N = 0 (legacy's
    "0s" cache, not the `no-cache` form)."""
    return jsonutil.response(obj, headers={"Cache-Control": f"max-age={max_age}"})


def _cc(q: Query) -> str:
    cc = q.cc("probe_cc")
    if cc is None:
        raise APIError("Missing probe_cc: a 2-letter country code is required", 400)
    return cc


def _asn(q: Query) -> int:
    asn = q.asn("probe_asn")
    if asn is None:
        raise APIError("Missing probe_asn", 400)
    return asn


def _last_31_days() -> tuple[dt.datetime, dt.datetime]:
    """The 31 whole days before today (today excluded)."""
    t = today()
    return t - 31 * DAY, t


_P_CC = {"in": "query", "name": "probe_cc", "type": "string", "required": True,
         "description": "Two letter country code"}
_P_ASN = {"in": "query", "name": "probe_asn", "type": "string", "required": True,
          "description": "Network: AS1234 or 1234"}


@docs(tags=TAGS, summary="Return number of measurements per day across test categories",
      description="`test_coverage`: measurements per test group for each of the last 30 days "
                  "(today excluded), every group × day present (zero-filled). "
                  "`network_coverage`: distinct networks per day over the same days, "
                  "zero-filled, counting only the tests of `test_groups` when given.",
      parameters=[_P_CC,
                  {"in": "query", "name": "test_groups", "type": "string",
                   "description": "Comma separated test groups: "
                                  + ", ".join(sorted(cq.TEST_GROUPS))}],
      responses={200: {"description": '{"network_coverage": [{count, test_day}], '
                                      '"test_coverage": [{count, test_day, test_group}]}'},
                 400: {"description": "Missing or invalid probe_cc or test_groups"}})
async def test_coverage(request: web.Request) -> web.Response:
    q = Query(request.query)
    cc = _cc(q)
    groups = q.list("test_groups")
    for g in groups:
        if g not in cq.TEST_GROUPS:
            raise APIError(f"Invalid test_groups: {g[:30]!r}; use "
                           + ", ".join(sorted(cq.TEST_GROUPS)), 400)
    t = today()
    # Both series cover the same 30 whole days, today−30 … today−1. Legacy used two different,
    # lagging windows (today−32 … today−3 for test_coverage, today−31 … today−2 for
    # network_coverage), a leftover from the old batch pipeline: the charts were misaligned
    # and yesterday's data, complete with today's fastpath, was never shown.
    since, until = t - TEST_COVERAGE_DAYS * DAY, t
    days = grids.day_range(since.date(), (until - DAY).date())

    async def compute() -> dict[str, Any]:
        tests = cq.group_tests(groups) if groups else None
        tc_rows, nc_rows = await asyncio.gather(
            _rows(request, cq.test_coverage(cc, since, until)),
            _rows(request, cq.network_coverage(cc, since, until, tests)))
        return {"network_coverage": grids.fill_days(nc_rows, days),
                "test_coverage": grids.test_coverage_grid(tc_rows, cq.TEST_GROUPS, days)}

    key = ("test_coverage", cc, tuple(sorted(groups)), t)
    body = await request.app[READ_CACHE].get(key, TEST_COVERAGE_TTL, compute)
    return _response(body, 3600)


@docs(tags=TAGS, summary="Networks of a country by number of measurements",
      description="Measurements per network (all tests) over the last 31 days, today "
                  "excluded, busiest first.",
      parameters=[_P_CC],
      responses={200: {"description": '{"results": [{count, probe_asn}]}'},
                 400: {"description": "Missing or invalid probe_cc"}})
async def website_networks(request: web.Request) -> web.Response:
    q = Query(request.query)
    cc = _cc(q)
    rows = await _rows(request, cq.website_networks(cc, *_last_31_days()))
    return _response({"results": rows}, 0)


@docs(tags=TAGS, summary="Daily statistics of one URL on one network",
      description="Per day of the last 31 (today excluded, days without measurements "
                  "omitted): anomaly, confirmed, failure and total counts for the exact input.",
      parameters=[_P_CC, _P_ASN,
                  {"in": "query", "name": "input", "type": "string", "required": True,
                   "description": "The exact tested URL"}],
      responses={200: {"description": '{"results": [{test_day, anomaly_count, '
                                      'confirmed_count, failure_count, total_count}]}'},
                 400: {"description": "Missing or invalid parameter"}})
async def website_stats(request: web.Request) -> web.Response:
    q = Query(request.query)
    cc, asn = _cc(q), _asn(q)
    url = q.input("input")
    if url is None:
        raise APIError("Missing input", 400)
    rows = await _rows(request, cq.website_stats(cc, asn, url, *_last_31_days()))
    return _response({"results": rows}, 0)


@docs(tags=TAGS, summary="URLs tested on one network, with their counts",
      description="web_connectivity over the last 31 days (today excluded), one row per URL, "
                  "most confirmed first, then most measured, most anomalous, URL. Paginated: "
                  "`metadata.next_url` is the absolute URL of the next page, or null.",
      parameters=[_P_CC, _P_ASN,
                  {"in": "query", "name": "limit", "type": "integer",
                   "description": f"Page size (default {DEFAULT_URLS_LIMIT}, at most "
                                  f"{MAX_URLS_LIMIT}; 0 or less means the default)"},
                  {"in": "query", "name": "offset", "type": "integer",
                   "description": "Rows to skip (default 0)"}],
      responses={200: {"description": '{"metadata": {offset, limit, current_page, '
                                      'total_count, next_url}, "results": [{input, '
                                      'anomaly_count, confirmed_count, failure_count, '
                                      'total_count}]}'},
                 400: {"description": "Missing or invalid parameter"}})
async def website_urls(request: web.Request) -> web.Response:
    q = Query(request.query)
    cc, asn = _cc(q), _asn(q)
    limit = q.int("limit", DEFAULT_URLS_LIMIT, max=MAX_URLS_LIMIT)
    if limit <= 0:  # legacy: a non-positive limit means the default
        limit = DEFAULT_URLS_LIMIT
    offset = q.int("offset", 0, min=0, max=MAX_OFFSET)
    since, until = _last_31_days()
    total = await request.app[DB].query_one(*cq.website_urls_count(cc, asn, since, until),
                                            _read_settings(request))
    total_count = int(total["input_count"]) if total else 0
    rows = []
    if offset < total_count:
        rows = await _rows(request, cq.website_urls(cc, asn, since, until, limit, offset))
    meta = grids.website_urls_metadata(base_url(request), cc, asn, limit, offset,
                                       total_count, len(rows))
    return _response({"metadata": meta, "results": rows}, 3600)


@docs(tags=TAGS, summary="Tor statistics over ASN for a given CC",
      description="vanilla_tor measurements of the last 6 months per network. A network is "
                  "not OK with more than 5 measurements and under 60% successes (neither "
                  "anomalous nor failed). Legacy counted every test of the country, not just "
                  "vanilla_tor, and failures as successes; both are fixed.",
      parameters=[_P_CC],
      responses={200: {"description": '{"networks": [{probe_asn, failure_count, '
                                      'success_count, total_count, last_tested, '
                                      'test_runtime_avg, test_runtime_max, test_runtime_min}], '
                                      '"notok_networks", "last_tested"}'},
                 400: {"description": "Missing or invalid probe_cc"}})
async def vanilla_tor_stats(request: web.Request) -> web.Response:
    q = Query(request.query)
    cc = _cc(q)
    rows = await _rows(request, cq.vanilla_tor_stats(cc, today()))
    return _response(grids.vanilla_tor_summary(rows), 0)


@docs(tags=TAGS, summary="Instant messaging networks statistics",
      description="For each IM test with measurements in the country over the last 31 days "
                  "(today excluded): the networks that ran it.",
      parameters=[_P_CC],
      responses={200: {"description": '{<test_name>: {"anomaly_networks": [], '
                                      '"ok_networks": [{asn, name, total_count, last_tested}], '
                                      '"last_tested"}}'},
                 400: {"description": "Missing or invalid probe_cc"}})
async def im_networks(request: web.Request) -> web.Response:
    q = Query(request.query)
    cc = _cc(q)
    rows = await _rows(request, cq.im_networks(cc, *_last_31_days()))
    return _response(grids.im_networks(rows), 3600)


@docs(tags=TAGS, summary="Instant messaging statistics",
      description="Daily measurement counts of one IM test on one network: exactly 32 "
                  "entries, today−31 … today, zero-filled.",
      parameters=[{"in": "query", "name": "test_name", "type": "string", "required": True,
                   "description": "One of " + ", ".join(cq.IM_TESTS)},
                  _P_CC, _P_ASN],
      responses={200: {"description": '{"results": [{anomaly_count: null, test_day: '
                                      '"YYYY-MM-DDT00:00:00+00:00", total_count}]}'},
                 400: {"description": "Missing or invalid parameter"}})
async def im_stats(request: web.Request) -> web.Response:
    q = Query(request.query)
    test_name = q.choice("test_name", cq.IM_TESTS)
    if test_name is None:
        raise APIError("Missing test_name: use one of " + ", ".join(cq.IM_TESTS), 400)
    cc, asn = _cc(q), _asn(q)
    t = today()
    days = grids.day_range((t - 31 * DAY).date(), t.date())
    # Today is one of the 32 entries, so its (partial) count is included; legacy queried up
    # to today excluded and always showed a 0 there.
    rows = await _rows(request, cq.im_stats(test_name, cc, asn, t - 31 * DAY, t + DAY))
    return _response({"results": grids.im_stats_series(rows, days)}, 3600)


@docs(tags=TAGS, summary="Network speed statistics - not implemented",
      description="Always the same empty page (as the legacy route).",
      parameters=[{**_P_CC, "required": False}],
      responses={200: {"description": '{"metadata": {...}, "results": []}'}})
async def network_stats(request: web.Request) -> web.Response:
    Query(request.query).cc("probe_cc")  # validated, though the answer does not depend on it
    return _response(_NETWORK_STATS, 86400)


def _circumvention_window() -> tuple[dt.datetime, dt.datetime]:
    """The last 6 months up to yesterday included. (Legacy also left out yesterday, an off-by-
    one from `< today() - interval 1 day`.)"""
    t = today()
    return grids.months_before(t, 6), t


@docs(tags=TAGS, summary="Aggregated statistics on protocols used for circumvention, "
                         "grouped by country",
      description="Measurements of " + ", ".join(cq.CIRCUMVENTION_TESTS) + " per country over "
                  "the last 6 months, today excluded.",
      responses={200: {"description": '{"v": 0, "results": [{probe_cc, cnt}]}'}})
async def circumvention_stats_by_country(request: web.Request) -> web.Response:
    since, until = _circumvention_window()

    async def compute() -> dict[str, Any]:
        rows = await _rows(request, cq.circumvention_stats_by_country(since, until))
        return {"v": 0, "results": rows}

    body = await request.app[READ_CACHE].get(("circumvention_stats_by_country", until),
                                             CIRCUMVENTION_TTL, compute)
    return _response(body, 86400)


@docs(tags=TAGS, summary="Runtime statistics on protocols used for circumvention, "
                         "grouped by date, country, test_name",
      description="Median and 90th percentile runtime (seconds) and measurement count per "
                  "test, country and day over the last 6 months (today excluded): `v` is "
                  "`[p50, p90, count]`, or `[]` for a cell of the full test × country × day grid "
                  "without data. The runtime is `scores.extra.test_runtime`, else the "
                  "measurement's `test_runtime`.",
      responses={200: {"description": '{"v": 0, "results": [{test_name, probe_cc, date, v}]}'}})
async def circumvention_runtime_stats(request: web.Request) -> web.Response:
    since, until = _circumvention_window()

    async def compute() -> dict[str, Any]:
        rows = await _rows(request, cq.circumvention_runtime_stats(since, until))
        return {"v": 0, "results": grids.runtime_grid(rows)}

    body = await request.app[READ_CACHE].get(("circumvention_runtime_stats", until),
                                             CIRCUMVENTION_TTL, compute)
    return _response(body, 86400)


def setup(app: web.Application) -> None:
    for path, handler in (
        ("/api/_/test_coverage", test_coverage),
        ("/api/_/website_networks", website_networks),
        ("/api/_/website_stats", website_stats),
        ("/api/_/website_urls", website_urls),
        ("/api/_/vanilla_tor_stats", vanilla_tor_stats),
        ("/api/_/im_networks", im_networks),
        ("/api/_/im_stats", im_stats),
        ("/api/_/network_stats", network_stats),
        ("/api/_/circumvention_stats_by_country", circumvention_stats_by_country),
        ("/api/_/circumvention_runtime_stats", circumvention_runtime_stats),
    ):
        app.router.add_get(path, handler)
