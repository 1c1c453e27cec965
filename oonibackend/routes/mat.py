"""The MAT over OONI's pipeline-v5 tables (docs/current_services.md §6):
`GET /api/v1/aggregation/observations` (obs_web), `/api/v1/aggregation/observations/ctrl`
(obs_web_ctrl) and `/api/v1/aggregation/analysis` (analysis_web_measurement).

Parameters are parsed the way the rest of the read API parses them (`routes/params.py`):
repeated keys and comma lists, `probe_asn` with or without `AS`, every bad value a 400 JSON
error. The SQL is in `oonibackend.queries.observations` / `.analysis`. Cost is bounded like
/api/v1/aggregation's: the `[aggregation]` caps (max_execution_time, max_rows_to_read, 504
past them) plus MAX_RESULT_ROWS, and answers are reused for `aggregation.cache_seconds`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import ids, jsonutil
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError
from oonibackend.queries import analysis as qa
from oonibackend.queries import mat
from oonibackend.queries import observations as qo
from oonibackend.readcache import READ_CACHE
from oonibackend.routes import aggregation
from oonibackend.routes.params import Query, today
from oonibackend.storage import QueryLimitExceeded

TAGS = ["Aggregation"]
# A chart has at most a few hundred thousand cells (30 days x 1,500 domains x a few
# failures); a request past this (e.g. group_by=measurement_uid over months) is refused with
# 504 rather than building a JSON answer of gigabytes.
MAX_RESULT_ROWS = 1_000_000
# Answers larger than this are not kept in the per-process cache (as /api/v1/aggregation).
CACHE_MAX_BYTES = aggregation.CACHE_MAX_BYTES
# The control route's default window: the last hour (OONI's).
CTRL_DEFAULT = dt.timedelta(hours=1)


# ---- parsing ----

def _window(q: Query, default: tuple[dt.datetime, dt.datetime] | None
            ) -> tuple[dt.datetime | None, dt.datetime | None]:
    since, until = q.date("since"), q.date("until")
    if default is not None:
        since = default[0] if since is None else since
        until = default[1] if until is None else until
    if since is not None and until is not None and until <= since:
        raise APIError("Invalid since and until values: until must be after since", 400)
    return since, until


def _uids(q: Query) -> tuple[str, ...]:
    uids = q.list("measurement_uid")
    for uid in uids:
        if not ids.is_valid_uid(uid):
            raise APIError("Invalid measurement_uid", 400)
    return tuple(sorted(uids))


def _ips(q: Query) -> tuple[str, ...]:
    out = []
    for v in q.list("ip"):
        host = v[1:-1] if v.startswith("[") and v.endswith("]") else v
        try:
            out.append(str(ipaddress.ip_address(host)))
        except ValueError:
            raise APIError(f"Invalid ip: {v[:40]!r}", 400) from None
    return tuple(sorted(set(out)))


def _common(q: Query) -> dict[str, Any]:
    """The filters both routes share, normalised (sorted tuples)."""
    run_ids = tuple(sorted(str(i) for i in q.int_list("ooni_run_link_id")))
    inp = q.input("input")
    return {
        "test_name": tuple(sorted(q.test_names("test_name"))),
        "probe_cc": tuple(sorted(q.cc_list("probe_cc"))),
        "probe_asn": tuple(sorted(q.asn_list("probe_asn"))),
        "measurement_uid": _uids(q),
        "input": () if inp is None else (inp,),
        "category_code": tuple(sorted(q.category_codes("category_code"))),
        "ooni_run_link_id": run_ids,
        "time_grain": mat.grain(q.choice("time_grain", mat.TIME_GRAINS, "day", lower=True)),
    }


def parse_observations(query: Mapping[str, str], now_day: dt.datetime) -> qo.Observations:
    q = Query(query)
    group_by = q.list("group_by")
    for g in group_by:
        if g not in qo.GROUP_BY:
            raise APIError(f"Invalid group_by: use one of {', '.join(qo.GROUP_BY)}", 400)
    common = _common(q)
    default = None if common["measurement_uid"] else mat.default_window(now_day)
    since, until = _window(q, default)
    return qo.Observations(
        group_by=tuple(group_by) or qo.DEFAULT_GROUP_BY, since=since, until=until,
        hostname=tuple(sorted(q.domain_list("hostname"))), ip=_ips(q),
        resolver_asn=tuple(sorted(q.asn_list("resolver_asn"))), **common)


def parse_analysis(query: Mapping[str, str], now_day: dt.datetime) -> qa.Analysis:
    q = Query(query)
    axes = {}
    for name in ("axis_x", "axis_y"):
        axes[name] = q.str(name)
        if axes[name] is not None and axes[name] not in qa.AXES:
            raise APIError(f"Invalid {name}: use one of {', '.join(qa.AXES)}", 400)
    # `format`, `download` and `anomaly_sensitivity` are accepted and ignored, as by OONI's
    # service (the answer is always JSON); a sensitivity must still be a number.
    if q.has("anomaly_sensitivity"):
        try:
            float(q.str("anomaly_sensitivity") or "")
        except ValueError:
            raise APIError("Invalid anomaly_sensitivity: not a number", 400) from None
    common = _common(q)
    default = None if common["measurement_uid"] else mat.default_window(now_day)
    since, until = _window(q, default)
    a = qa.Analysis(axis_x=axes["axis_x"] or qa.TIME_AXIS, axis_y=axes["axis_y"],
                    since=since, until=until, domain=tuple(sorted(q.domain_list("domain"))),
                    **common)
    try:
        qa.validate(a)
    except qa.InvalidAnalysis as e:
        raise APIError(str(e), 400) from None
    return a


def parse_ctrl(query: Mapping[str, str], now: dt.datetime
               ) -> tuple[tuple[str, ...], dt.datetime, dt.datetime, bool]:
    """(hostnames, since, until, whether both bounds were given)."""
    q = Query(query)
    hostnames = tuple(sorted(q.domain_list("hostname")))
    if not hostnames:
        raise APIError("Missing hostname: at least one is required", 400)
    since, until = _window(q, (now - CTRL_DEFAULT, now))
    assert since is not None and until is not None
    return hostnames, since, until, q.has("since") and q.has("until")


# ---- querying ----

def settings(app: web.Application) -> dict[str, Any]:
    return {**aggregation.settings(app[CONFIG]), "max_result_rows": MAX_RESULT_ROWS,
            "result_overflow_mode": "throw"}


async def _rows(app: web.Application, query: tuple[str, dict[str, Any]]
                ) -> list[dict[str, Any]]:
    sql, params = query
    try:
        return await app[DB].query(sql, params, settings(app))
    except QueryLimitExceeded as e:
        c = app[CONFIG].aggregation
        raise APIError(
            f"Query too expensive: it exceeded the limit of {c.max_rows_to_read} rows read, "
            f"{MAX_RESULT_ROWS} result rows or {c.max_execution_time} s; narrow the time "
            "range or add filters", 504) from e


class _TooBigToCache(Exception):
    def __init__(self, body: bytes) -> None:
        super().__init__("answer too big to cache")
        self.body = body


async def _answer(request: web.Request, key: Any,
                  compute: Callable[[], Awaitable[bytes]]) -> web.Response:
    """The computed body, reused for `aggregation.cache_seconds` per process (single
    flight), with the matching Cache-Control, as /api/v1/aggregation."""
    app = request.app
    ttl = app[CONFIG].aggregation.cache_seconds

    async def bounded() -> bytes:
        body = await compute()
        if len(body) > CACHE_MAX_BYTES:
            raise _TooBigToCache(body)
        return body

    if ttl > 0:
        try:
            body = await app[READ_CACHE].get(key, ttl, bounded)
        except _TooBigToCache as e:
            body = e.body
    else:
        body = await compute()
    cache = f"max-age={ttl}" if ttl > 0 else "max-age=0, no-cache"
    return web.Response(body=body, content_type="application/json",
                        headers={"Cache-Control": cache})


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}


# ---- routes ----

_OBS_DESC = (
    "Counts of web observations (obs_web) grouped by `group_by` (repeated or comma list of "
    f"{', '.join(qo.GROUP_BY)}; default failure). Filters (repeated or comma lists): "
    "test_name, hostname, probe_cc, probe_asn (AS123 or 123), ip, measurement_uid, "
    "resolver_asn, input, category_code, ooni_run_link_id; a filter with one value is also "
    "a key of every result. `since` (inclusive) / `until` (exclusive) default to the 30 days "
    "before today unless measurement_uid is given; `time_grain` hour|day|week|month|year|auto "
    "(auto: day). Answer `{results: [{observation_count, <keys>}]}`, largest count first, "
    "null keys omitted.")


@docs(tags=TAGS, summary="Aggregate web observations", description=_OBS_DESC,
      responses={200: {"description": "{results: [...]}"},
                 400: {"description": "Invalid parameters"},
                 504: {"description": "Query too expensive"}})
async def get_observations(request: web.Request) -> web.Response:
    o = parse_observations(request.query, today())

    async def compute() -> bytes:
        rows = await _rows(request.app, qo.build(o))
        return jsonutil.dumps({"results": [_compact(r) for r in rows]})

    return await _answer(request, ("mat_observations", o), compute)


@docs(tags=TAGS, summary="Test-helper observations of hostnames",
      description="What the test helpers saw for each (hostname, ip, port) of the given "
                  "`hostname`s (required; repeated or comma list) between `since` "
                  "(inclusive) and `until` (exclusive), by default the last hour. Answer "
                  "`{results: [{hostname, ip, port, asn, as_org_name, is_cloud_provider, "
                  "in_dns_answers, tls_consistent, tcp_success_count, tcp_failure_count, "
                  "tls_success_count, tls_failure_count, dns_success_count, "
                  "dns_nxdomain_count, dns_other_failure_count}]}`.",
      responses={200: {"description": "{results: [...]}"},
                 400: {"description": "Invalid parameters"}})
async def get_observations_ctrl(request: web.Request) -> web.Response:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    hostnames, since, until, fixed = parse_ctrl(request.query, now)

    async def compute() -> bytes:
        rows = await _rows(request.app, qo.build_ctrl(hostnames, since, until))
        return jsonutil.dumps({"results": qo.render_ctrl(rows)})

    if not fixed:  # a window that moves every second: not worth caching
        return web.Response(body=await compute(), content_type="application/json",
                            headers={"Cache-Control": "max-age=0, no-cache"})
    return await _answer(request, ("mat_ctrl", hostnames, since, until), compute)


_ANALYSIS_DESC = (
    "Blocking likelihoods of web measurements (analysis_web_measurement) grouped by `axis_x` "
    f"(default measurement_start_day) and optionally `axis_y`, each one of {', '.join(qa.AXES)}. "
    "Filters: test_name, domain, input, measurement_uid, probe_cc, probe_asn (AS123 or 123), "
    "category_code, ooni_run_link_id (comma lists); a filter with one value is also a key. "
    "`since` (inclusive) / `until` (exclusive) default to the 30 days before today unless "
    "measurement_uid is given. Answer `{db_stats, dimension_count, results: [{count, "
    "measurement_start_day, domain, probe_cc, probe_asn, test_name, input, measurement_uid, "
    "loni: {dns|tcp|tls_blocked|down|ok, likely_blocked_protocols, blocked_max_outcome, "
    "blocked_max, dns|tcp|tls_blocked_outcome}}]}`.")


@docs(tags=TAGS, summary="Aggregate web measurement analysis", description=_ANALYSIS_DESC,
      responses={200: {"description": "{db_stats, dimension_count, results}"},
                 400: {"description": "Invalid parameters"},
                 504: {"description": "Query too expensive"}})
async def get_analysis(request: web.Request) -> web.Response:
    a = parse_analysis(request.query, today())

    async def compute() -> bytes:
        started = time.monotonic()
        rows = await _rows(request.app, qa.build(a))
        results = [qa.result(r, a.keys) for r in rows]
        return jsonutil.dumps({
            "db_stats": {"bytes": -1, "elapsed_seconds": round(time.monotonic() - started, 6),
                         "row_count": len(results), "total_row_count": len(results)},
            "dimension_count": 1 if a.axis_y is None else 2,
            "results": results,
        })

    return await _answer(request, ("mat_analysis", a), compute)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/aggregation/observations", get_observations)
    app.router.add_get("/api/v1/aggregation/observations/ctrl", get_observations_ctrl)
    app.router.add_get("/api/v1/aggregation/analysis", get_analysis)
