"""Explorer's global and list statistics (private `/api/_/` routes of the legacy API).

* global_overview, global_overview_by_month     the home page
* asn_by_month, countries_by_month              monthly series (same data as the home chart)
* countries, country_overview                   the country list and a country page's header
* networks, domains                             the /networks and /domains lists
* domain_metadata, asnmeta                      a domain's and a network's page header
* test_names, check_report_id                   constants

The statistics are full-table aggregates, hit on every home and list page: each is computed at
most once per hour per process (`PERIOD`) and kept in app[READ_CACHE] under a key naming the
hour, so one query serves every visitor of that hour (and several routes: the monthly counts
feed three routes, the per-country counts two). The two home-page statistics are warmed by a
background task (`warm_ctx`): computed at startup, then each hour's answer a few minutes before
the hour starts, so no visitor waits for a full scan; the others are computed by the first
visitor of the hour (single flight: a burst waits for one query). Windows are relative to the
start of the hour's UTC day. Point lookups (domain_metadata, asnmeta: one primary-key range of a
small table) are not cached here. Cache-Control is the legacy routes' (max-age = 1 day, 2 h,
1 h, 1 s), so Nginx in front caches the same way.

Metrics: `explorer_stats_computed_total{stat}` counts the queries, `explorer_stats_served_total
{stat,source}` the answers by whether this request had to compute (`computed`) or not (`cache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG, DB, METRICS
from oonibackend.errors import APIError
from oonibackend.queries import overview as oq
from oonibackend.readcache import READ_CACHE
from oonibackend.routes.params import Query, today

log = logging.getLogger(__name__)

TAGS = ["Explorer (private)"]
# Cache-Control max-age of the legacy routes (seconds).
ONE_DAY = 86400
TWO_HOURS = 7200
ONE_HOUR = 3600
# Statistics are recomputed once per PERIOD seconds (at most every route's max-age).
PERIOD = 3600
# The warmer computes the next period's answer this long before the period starts ...
WARM_LEAD = 300
# ... checks every WARM_CHECK seconds (recomputing an answer the cache may have dropped) ...
WARM_CHECK = 60
# ... and retries after a failure (e.g. the database still starting) this soon, doubling
# up to WARM_RETRY_MAX while it keeps failing.
WARM_RETRY = 5
WARM_RETRY_MAX = 600
WARMED = ("global", "monthly")

TEST_NAMES = (
    ("bridge_reachability", "Bridge Reachability"),
    ("dash", "DASH"),
    ("dns_consistency", "DNS Consistency"),
    ("dnscheck", "DNS Check"),
    ("facebook_messenger", "Facebook Messenger"),
    ("http_header_field_manipulation", "HTTP Header Field Manipulation"),
    ("http_host", "HTTP Host"),
    ("http_invalid_request_line", "HTTP Invalid Request Line"),
    ("http_requests", "HTTP Requests"),
    ("meek_fronted_requests_test", "Meek Fronted Requests"),
    ("multi_protocol_traceroute", "Multi Protocol Traceroute"),
    ("ndt", "NDT"),
    ("psiphon", "Psiphon"),
    ("riseupvpn", "RiseupVPN"),
    ("signal", "Signal"),
    ("stunreachability", "STUN Reachability"),
    ("tcp_connect", "TCP Connect"),
    ("telegram", "Telegram"),
    ("tor", "Tor"),
    ("torsf", "Tor Snowflake"),
    ("urlgetter", "URL Getter"),
    ("vanilla_tor", "Vanilla Tor"),
    ("web_connectivity", "Web Connectivity"),
    ("whatsapp", "WhatsApp"),
)
_TEST_NAMES_BODY = {"test_names": [{"id": i, "name": n} for i, n in TEST_NAMES]}


def _no_rows(rows: list[dict[str, Any]]) -> bool:
    return not rows


@dataclass(frozen=True)
class Stat:
    """One cached statistic: its query for a day, the shaping of its rows, and what an empty
    database looks like (answers of an empty database are not cached: they are cheap, and a
    fresh install or restore shows its data at once rather than zeros for an hour)."""

    query: Callable[[dt.date, bool], oq.Query]  # (day, read the rollups)
    shape: Callable[[list[dict[str, Any]], dt.date], Any]
    join: bool = False
    empty: Callable[[list[dict[str, Any]]], bool] = _no_rows


class _Uncached(Exception):  # noqa: N818 - not an error: carries an answer past the cache
    """Raised through the cache's single flight so that the answer is not stored."""

    def __init__(self, value: Any) -> None:
        super().__init__("empty statistic")
        self.value = value


def _global(rows: list[dict[str, Any]], day: dt.date) -> dict[str, int]:
    r = rows[0] if rows else {}
    return {k: int(r.get(k) or 0) for k in ("network_count", "country_count",
                                           "measurement_count")}


STATS: dict[str, Stat] = {
    "global": Stat(lambda day, rollups: oq.global_counts(rollups), _global,
                   empty=lambda rows: not rows or not rows[0]["measurement_count"]),
    "monthly": Stat(lambda day, rollups: oq.monthly_counts(day, rollups=rollups),
                    oq.month_series),
    "countries": Stat(lambda day, rollups: oq.country_counts(),
                      lambda rows, day: {r["probe_cc"]: r for r in rows}),
    "networks": Stat(lambda day, rollups: oq.network_counts(rollups),
                     lambda rows, day: oq.networks_list(rows), join=True),
    "domains": Stat(lambda day, rollups: oq.domain_counts(rollups),
                    lambda rows, day: oq.domains_list(rows), join=True),
}


def _settings(app: web.Application, join: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {"max_execution_time": app[CONFIG].database.max_execution_time,
                         "priority": 3}
    if join:
        s["join_use_nulls"] = 0  # unmatched rows get '' and 0, never NULL
    return s


def period_of(now: float) -> int:
    return int(now // PERIOD)


def period_day(period: int) -> dt.date:
    """The UTC day the period starts in: the anchor of its windows."""
    return dt.datetime.fromtimestamp(period * PERIOD, dt.UTC).date()


async def _compute(app: web.Application, name: str, period: int) -> Any:
    stat = STATS[name]
    day = period_day(period)
    sql, params = stat.query(day, app[CONFIG].aggregation.rollups)
    t0 = time.monotonic()
    rows = await app[DB].query(sql, params, _settings(app, stat.join))
    seconds = time.monotonic() - t0
    app[METRICS].inc("explorer_stats_computed_total",
                     help="Explorer statistics computed (full-table queries)", stat=name)
    log.info("explorer statistic computed",
             extra={"stat": name, "period_day": day.isoformat(), "rows": len(rows),
                    "seconds": round(seconds, 3)})
    value = stat.shape(rows, day)
    if stat.empty(rows):
        raise _Uncached(value)
    return value


async def cached(app: web.Application, name: str, period: int | None = None
                 ) -> tuple[Any, bool]:
    """A statistic for a period (default: now's) and whether this call computed it."""
    p = period_of(time.time()) if period is None else period
    computed = False

    async def compute() -> Any:
        nonlocal computed
        computed = True
        return await _compute(app, name, p)

    # Two periods of TTL: an answer warmed ahead must outlive the whole of its own period.
    try:
        value = await app[READ_CACHE].get(("explorer_overview", name, p), 2 * PERIOD, compute)
    except _Uncached as e:  # also reaches the requests that waited for the same flight
        return e.value, computed
    return value, computed


async def _stat(request: web.Request, name: str) -> Any:
    value, computed = await cached(request.app, name)
    request.app[METRICS].inc("explorer_stats_served_total",
                             help="Explorer statistics answers, by whether the request computed",
                             stat=name, source="computed" if computed else "cache")
    return value


async def warm(app: web.Application) -> None:
    """Keep the home page's statistics computed: this period's, and the next one's shortly
    before it starts."""
    retry: float = WARM_RETRY
    while True:
        now = time.time()
        p = period_of(now)
        try:
            for name in WARMED:
                await cached(app, name, p)
                if (p + 1) * PERIOD - now <= WARM_LEAD:
                    await cached(app, name, p + 1)
            delay, retry = WARM_CHECK, WARM_RETRY
        except Exception as e:  # the database may be starting or down: try again soon
            log.warning("warming explorer statistics failed",
                        extra={"error": str(e)[:300], "retry_in": retry})
            delay, retry = retry, min(retry * 2, WARM_RETRY_MAX)
        await asyncio.sleep(delay)


async def warm_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(warm(app), name="explorer-overview-warmer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- routes --------------------------------------------------------------------------------

_SERIES_DOC = ('List of `{"date": "YYYY-MM-01T00:00:00+00:00", "value": n}`, one per month of '
               "the last 24 months and the current one, oldest first, 0 for months without "
               "measurements")


@docs(tags=TAGS, summary="Network count by month",
      description="Distinct networks (ASNs) that measured in each month.",
      responses={200: {"description": _SERIES_DOC}})
async def asn_by_month(request: web.Request) -> web.Response:
    monthly = await _stat(request, "monthly")
    return jsonutil.response(monthly["networks_by_month"], cache=ONE_DAY)


@docs(tags=TAGS, summary="Countries count by month",
      description="Distinct countries that measured in each month.",
      responses={200: {"description": _SERIES_DOC}})
async def countries_by_month(request: web.Request) -> web.Response:
    monthly = await _stat(request, "monthly")
    return jsonutil.response(monthly["countries_by_month"], cache=ONE_DAY)


@docs(tags=TAGS, summary="Provides test names and descriptions to Explorer",
      responses={200: {"description": '{"test_names": [{"id": "web_connectivity", '
                                      '"name": "Web Connectivity"}, ...]} (24 entries)'}})
async def test_names(request: web.Request) -> web.Response:
    return jsonutil.response(_TEST_NAMES_BODY, cache=ONE_HOUR)


@docs(tags=TAGS, summary="Summary of countries",
      description="All-time measurement count of every country with measurements, by code; "
                  "codes that are not countries (ZZ) are left out.",
      responses={200: {"description": '{"countries": [{"alpha_2": "IT", "name": "Italy", '
                                      '"count": 123}, ...]}'}})
async def countries(request: web.Request) -> web.Response:
    by_cc = await _stat(request, "countries")
    return jsonutil.response({"countries": oq.countries_list(by_cc.values())}, cache=ONE_DAY)


@docs(tags=TAGS, summary="Legacy. Used to check if a report_id existed in the fastpath table.",
      description="Used by https://github.com/ooni/probe/issues/1034. Always answers found.",
      parameters=[{"in": "query", "name": "report_id", "type": "string"}],
      responses={200: {"description": '{"v": 0, "found": true}'}})
async def check_report_id(request: web.Request) -> web.Response:
    # Legacy accepts anything (even no report_id): old probes only need the `found: true`.
    return jsonutil.response({"v": 0, "found": True}, cache=1)


@docs(tags=TAGS, summary="Country-specific overview",
      description="First day with measurements, measurement count and distinct networks of "
                  "a country (measurements since 2012-12-01). A country without measurements "
                  "gets today's date and zero counts: Explorer needs every field.",
      parameters=[{"in": "query", "name": "probe_cc", "type": "string", "required": True,
                   "description": "Two letter country code"}],
      responses={200: {"description": '{"first_bucket_date": "2012-12-01", '
                                      '"measurement_count": 6659891, "network_count": 333}'},
                 400: {"description": "Missing or invalid probe_cc"}})
async def country_overview(request: web.Request) -> web.Response:
    cc = Query(request.query).cc("probe_cc")
    if cc is None:
        raise APIError("Missing probe_cc: a 2-letter country code is required", 400)
    by_cc = await _stat(request, "countries")
    body = oq.country_overview(by_cc.get(cc), today().date())
    return jsonutil.response(body, cache=ONE_DAY)


@docs(tags=TAGS, summary="Provide global summary of measurements",
      description="Distinct networks and countries, and measurements, over all time.",
      responses={200: {"description": '{"network_count": n, "country_count": n, '
                                      '"measurement_count": n}'}})
async def global_overview(request: web.Request) -> web.Response:
    return jsonutil.response(await _stat(request, "global"), cache=ONE_DAY)


@docs(tags=TAGS, summary="Provide global summary of measurements by month",
      description="Three monthly series (networks, countries, measurements) over the last 24 "
                  "months and the current one, oldest first, 0 for months without data.",
      responses={200: {"description": '{"networks_by_month": [{date, value}], '
                                      '"countries_by_month": [...], '
                                      '"measurements_by_month": [...]}'}})
async def global_overview_by_month(request: web.Request) -> web.Response:
    return jsonutil.response(await _stat(request, "monthly"), cache=ONE_DAY)


@docs(tags=TAGS, summary="Domain category and canonical name",
      description="The test-list entry of the domain or its `www.` variant (the global list "
                  "first, then the shortest URL). Unknown domains: category MISC and the "
                  "domain without `www.`.",
      parameters=[{"in": "query", "name": "domain", "type": "string", "required": True}],
      responses={200: {"description": '{"category_code": "GRP", '
                                      '"canonical_domain": "twitter.com"}'},
                 400: {"description": "Missing or invalid domain"}})
async def domain_metadata(request: web.Request) -> web.Response:
    domain = Query(request.query).domain("domain")
    if domain is None:
        raise APIError("Missing domain", 400)
    sql, params = oq.domain_metadata(domain)
    row = await request.app[DB].query_one(sql, params, _settings(request.app))
    return jsonutil.response(oq.domain_metadata_answer(domain, row), cache=TWO_HOURS)


@docs(tags=TAGS, summary="Look up organization name by ASN",
      description="The newest organisation name of the network, or `Unknown`.",
      parameters=[{"in": "query", "name": "asn", "type": "string", "required": True,
                   "description": "ASN: 1234 or AS1234"}],
      responses={200: {"description": '{"org_name": "..."}'},
                 400: {"description": "Missing or invalid asn"}})
async def asnmeta(request: web.Request) -> web.Response:
    asn = Query(request.query).asn("asn")
    if asn is None:
        raise APIError("Missing asn", 400)
    sql, params = oq.asn_org_name(asn)
    row = await request.app[DB].query_one(sql, params, _settings(request.app))
    org_name = row["org_name"] if row and row["org_name"] else "Unknown"
    return jsonutil.response({"org_name": org_name}, cache=TWO_HOURS)


@docs(tags=TAGS, summary="List all networks that have measurements",
      description="All-time measurement count per ASN with its newest organisation name "
                  "('' when unknown), by ASN.",
      responses={200: {"description": '{"v": 0, "results": [{"probe_asn": n, "cnt": n, '
                                      '"org_name": s}]}'}})
async def networks(request: web.Request) -> web.Response:
    return jsonutil.response({"v": 0, "results": await _stat(request, "networks")},
                             cache=TWO_HOURS)


@docs(tags=TAGS, summary="List all the domains in the test-lists with their measurement count",
      description="Every test-list domain, its category (the global list's first) and its "
                  "all-time web_connectivity measurement count, by domain.",
      responses={200: {"description": '{"v": 0, "results": [{"domain_name": s, '
                                      '"category_code": s, "measurement_count": n}]}'}})
async def domains(request: web.Request) -> web.Response:
    return jsonutil.response({"v": 0, "results": await _stat(request, "domains")},
                             cache=TWO_HOURS)


def setup(app: web.Application) -> None:
    for path, handler in (
        ("/api/_/asn_by_month", asn_by_month),
        ("/api/_/countries_by_month", countries_by_month),
        ("/api/_/test_names", test_names),
        ("/api/_/countries", countries),
        ("/api/_/check_report_id", check_report_id),
        ("/api/_/country_overview", country_overview),
        ("/api/_/global_overview", global_overview),
        ("/api/_/global_overview_by_month", global_overview_by_month),
        ("/api/_/domain_metadata", domain_metadata),
        ("/api/_/asnmeta", asnmeta),
        ("/api/_/networks", networks),
        ("/api/_/domains", domains),
    ):
        app.router.add_get(path, handler)
    app.cleanup_ctx.append(warm_ctx)
