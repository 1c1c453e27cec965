"""`GET /api/v1/aggregation` (the MAT and every Explorer chart) and `GET /api/v1/torsf_stats`.

Aggregation: counts of measurements (five measures) over up to two axes, filtered; JSON or CSV.
The SQL and the validation of axes and time grain are in `oonibackend.queries.aggregation`.

Differences from the legacy route, on purpose:
* Validation errors are HTTP 400 `{"error": ..., "v": 0}`. Legacy answered some of them with
  HTTP 200 and the same body (docs/api.md §4 bug 2); Explorer's MATFetcher treats a body
  without `result` as an error anyway, so only the status changes, and caches no longer store
  errors as answers.
* `time_grain=year` works (yearly buckets `YYYY-01-01`); legacy accepted it and then failed.
* An empty multi-dimensional CSV is the header line, not an error.
* `since=undefined` / `until=undefined` (Explorer's charts before the page sets its dates)
  keep legacy's answer, 200 `{"error", "v": 0}` with `no-cache`: cheap, and never mistaken
  for an all-time query (docs/api.md §2.8).
* Every query carries a cost cap (`[aggregation]` max_execution_time and max_rows_to_read,
  as ClickHouse settings): a query past it is stopped by ClickHouse and answered 504
  `{"error": "Query too expensive ...", "v": 0}` instead of tying up the database.
* Answers are cached (legacy had "caching disabled"): Explorer's heaviest calls are the same
  for every visitor (a country's websites grid over the last month, an ASN page's all-time and
  12-year queries), so each distinct normalised request is computed at most once per
  `cache_seconds` (default 300) per process, single-flight, and sent with
  `Cache-Control: max-age=cache_seconds` for Nginx. Five minutes is invisible on charts of
  days and months and keeps the MAT's view of today's data fresh enough (worst case, through
  both caches, ten minutes behind). Answers over CACHE_MAX_BYTES are not kept in memory.

Cost: a call the rollups can answer (queries/aggregation.py `plan`) reads the rollup's rows of
its whole days and fastpath's rows of its partial days; any other call reads the rows of its
time window (the sort key's first column), calls without dates the whole table; on the test
fixture (2,079 rows) Explorer's calls read 80-2,079
rows in 5-65 ms. Larger measurements are in `oonibackend.queries.aggregation`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG, DB
from oonibackend.config import Config
from oonibackend.errors import APIError
from oonibackend.queries import aggregation as aq
from oonibackend.readcache import READ_CACHE
from oonibackend.routes.params import Query
from oonibackend.storage import QueryLimitExceeded

log = logging.getLogger(__name__)

TAGS = ["Aggregation"]
FORMATS = ("JSON", "CSV")
# Larger answers are computed for each request rather than held in the per-process cache
# (a month-long websites grid of a big country is ~50k rows, ~8 MB of JSON).
CACHE_MAX_BYTES = 16 * 1024 * 1024
# Legacy's Cache-Control for torsf_stats: a day, once the window is older than 72 hours.
TORSF_MAX_AGE = 86400
TORSF_SETTLED = dt.timedelta(hours=72)


# ---- parsing ----

def parse(query: Mapping[str, str]) -> tuple[aq.Aggregation, str, bool]:
    """(request, format, download) from the query string; APIError 400 with `v: 0`."""
    q = Query(query)
    try:
        fmt = (q.str("format") or "JSON").upper()
        if fmt not in FORMATS:
            raise APIError("Invalid format: use JSON or CSV", 400)
        download = bool(q.bool("download", False))
        a = aq.make(
            axis_x=q.str("axis_x"),
            axis_y=q.str("axis_y"),
            since=q.date("since", legacy_undefined=True),
            until=q.date("until", legacy_undefined=True),
            time_grain=q.choice("time_grain", aq.TIME_GRAINS, "auto", lower=True),
            category_codes=q.category_codes("category_code"),
            domains=q.domain_list("domain"),
            input=q.input("input"),
            probe_ccs=q.cc_list("probe_cc"),
            probe_asns=q.asn_list("probe_asn"),
            test_names=q.test_names("test_name"),
            ooni_run_link_ids=q.int_list("ooni_run_link_id"),
        )
    except aq.InvalidAggregation as e:
        raise APIError(str(e), 400, v=0) from None
    except APIError as e:
        e.extra.setdefault("v", 0)
        raise
    return a, fmt, download


def settings(cfg: Config) -> dict[str, Any]:
    """The per-query cost cap; `throw` makes ClickHouse fail (→ 504) rather than return a
    partial, wrong count. Priority 4 like legacy: charts yield to the lighter reads."""
    c = cfg.aggregation
    return {"max_execution_time": c.max_execution_time, "timeout_overflow_mode": "throw",
            "max_rows_to_read": c.max_rows_to_read, "read_overflow_mode": "throw",
            "priority": 4}


# ---- rendering ----

def _cell(v: Any) -> Any:
    """CSV values, with the same date keys as the JSON answer."""
    if isinstance(v, dt.datetime):
        return jsonutil.rfc3339(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    """Header = the column names sorted (legacy), then one line per row (RFC 4180, CRLF)."""
    names = sorted(columns)
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(names)
    for r in rows:
        w.writerow([_cell(r[n]) for n in names])
    return f.getvalue().encode()


def to_json(a: aq.Aggregation, rows: list[dict[str, Any]], stats: Mapping[str, Any]) -> bytes:
    dims = len(a.axes)
    if dims == 0:  # an aggregate without GROUP BY always has its one row (zeros if nothing)
        result: Any = rows[0] if rows else {m: 0 for m in aq.MEASURES}
    else:
        result = rows
    return jsonutil.dumps({
        "v": 0,
        "dimension_count": dims,
        "result": result,
        # clickhouse-driver's progress counters in legacy: rows and bytes read.
        "db_stats": {
            "row_count": stats.get("rows_read", 0),
            "bytes": stats.get("bytes_read", 0),
            "total_row_count": stats.get("rows_read", 0),
            "elapsed_seconds": stats.get("elapsed", 0.0),
        },
    })


class _TooBigToCache(Exception):
    """Carries an answer out of the cache's compute without it being stored (the cache keeps
    only successful values; single-flight waiters receive this same exception)."""

    def __init__(self, body: bytes) -> None:
        super().__init__("answer too big to cache")
        self.body = body


async def _compute(app: web.Application, a: aq.Aggregation, fmt: str, limit: int | None
                   ) -> bytes:
    sql, params = aq.build(a, rollups=app[CONFIG].aggregation.rollups)
    try:
        rows, stats = await app[DB].query_with_stats(sql, params, settings(app[CONFIG]))
    except QueryLimitExceeded as e:
        c = app[CONFIG].aggregation
        log.warning("aggregation over its cost cap", extra={"error": str(e)[:300]})
        raise APIError(
            f"Query too expensive: it exceeded the limit of {c.max_rows_to_read} rows read or "
            f"{c.max_execution_time} s; narrow the time range or add filters", 504, v=0) from e
    body = to_csv(aq.columns(a), rows) if fmt == "CSV" else to_json(a, rows, stats)
    if limit is not None and len(body) > limit:
        raise _TooBigToCache(body)
    return body


# ---- routes ----

_P_DESC = {
    "input": "The input (for example a URL or IP address) to search measurements for",
    "domain": "Domains to search measurements for, comma separated",
    "category_code": "The category code from the citizenlab list",
    "probe_cc": "Two letter capitalized country codes, comma separated",
    "probe_asn": "Autonomous system numbers, ASxxx or xxx, comma separated",
    "test_name": "Names of the tests, comma separated",
    "ooni_run_link_id": "OONI Run link ids, comma separated",
    "since": "Start of the window, inclusive (ex. \"2016-10-20T10:30:00\" or \"2016-10-20\")",
    "until": "End of the window, exclusive (ex. \"2016-10-20T10:30:00\" or \"2016-10-20\")",
    "axis_x": "The dimension on the x axis, e.g. measurement_start_day: one of "
              + ", ".join(aq.AXES),
    "axis_y": "The dimension on the y axis, e.g. probe_cc (same choices as axis_x)",
}
_PARAMS: list[dict[str, Any]] = [
    {"in": "query", "name": n, "type": "string", "description": d} for n, d in _P_DESC.items()
] + [
    {"in": "query", "name": "time_grain", "type": "string", "enum": list(aq.TIME_GRAINS),
     "description": "Time granularity when an axis is measurement_start_day; allowed values "
                    "depend on the window: up to 7 days hour|day (auto: hour), up to 30 days "
                    "day|week, up to 365 days day|week|month, longer day|week|month|year "
                    "(auto: day). Weeks start on Sunday."},
    {"in": "query", "name": "format", "type": "string", "enum": list(FORMATS),
     "description": "Output format, JSON (default) or CSV"},
    {"in": "query", "name": "download", "type": "boolean",
     "description": "Send Content-Disposition: attachment (ooni-aggregate-data.json|csv)"},
]


@docs(tags=TAGS, summary="Aggregate counters data",
      description="Counts of measurements (anomaly_count, confirmed_count, failure_count, "
                  "ok_count, measurement_count) grouped by up to two axes. Answer: `{v: 0, "
                  "dimension_count, result, db_stats}`, `result` an object without axes, a "
                  "list of objects otherwise. Errors: 400 (bad parameters), 504 (the query "
                  "exceeded its cost cap), both `{error, v: 0}`.",
      parameters=_PARAMS,
      responses={200: {"description": "Returns aggregated counters"},
                 400: {"description": "Invalid parameters"},
                 504: {"description": "Query too expensive"}})
async def get_aggregation(request: web.Request) -> web.Response:
    a, fmt, download = parse(request.query)
    app = request.app
    ttl = app[CONFIG].aggregation.cache_seconds
    if ttl > 0:
        try:
            body = await app[READ_CACHE].get(("aggregation", a, fmt), ttl,
                                             lambda: _compute(app, a, fmt, CACHE_MAX_BYTES))
        except _TooBigToCache as e:
            body = e.body
    else:
        body = await _compute(app, a, fmt, None)
    ext = "csv" if fmt == "CSV" else "json"
    headers = {"Cache-Control": f"max-age={ttl}" if ttl > 0 else "max-age=0, no-cache"}
    if download:
        headers["Content-Disposition"] = f"attachment; filename=ooni-aggregate-data.{ext}"
    if fmt == "CSV":
        # Exactly `text/csv`, as legacy sent and its tests compare (docs/api.md §2.8); the
        # body is UTF-8.
        return web.Response(body=body, content_type="text/csv", headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


@docs(tags=TAGS, summary="Tor Pluggable Transports statistics",
      description="Daily torsf (Tor Snowflake) measurement counts per country: `{v: 0, "
                  "result: [{measurement_start_day, probe_cc, anomaly_count, confirmed_count, "
                  "failure_count, measurement_count, anomaly_rate}]}`, by day then country. "
                  "`since` is exclusive, `until` inclusive.",
      parameters=[
          {"in": "query", "name": "probe_cc", "type": "string",
           "description": "The two letter country code"},
          {"in": "query", "name": "since", "type": "string",
           "description": "Start of the window, exclusive (ex. \"2016-10-20T10:30:00\")"},
          {"in": "query", "name": "until", "type": "string",
           "description": "End of the window, inclusive (ex. \"2016-10-20T10:30:00\")"},
      ],
      responses={200: {"description": "Returns aggregated counters"}})
async def get_torsf_stats(request: web.Request) -> web.Response:
    q = Query(request.query)
    try:
        probe_cc = q.cc("probe_cc")
        since, until = q.date("since"), q.date("until")
    except APIError as e:
        e.extra.setdefault("v", 0)
        raise
    sql, params = aq.torsf_stats(probe_cc, since, until)
    try:
        rows = await request.app[DB].query(sql, params, settings(request.app[CONFIG]))
    except QueryLimitExceeded as e:
        raise APIError("Query too expensive: narrow the time range", 504, v=0) from e
    for r in rows:  # measurement_count >= 1 for every group
        r["anomaly_rate"] = r["anomaly_count"] / r["measurement_count"]
    # Legacy: cacheable for a day once the window has settled (no late uploads expected).
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    cache = TORSF_MAX_AGE if until is not None and until < now - TORSF_SETTLED else None
    return jsonutil.response({"v": 0, "result": rows}, cache=cache)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/aggregation", get_aggregation)
    app.router.add_get("/api/v1/torsf_stats", get_torsf_stats)
