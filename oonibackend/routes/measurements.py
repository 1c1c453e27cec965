"""GET /api/v1/measurements: the search listing (docs/api.md §1.2 #17, §2.7).

Explorer's /search page and the country/ASN/domain "recent measurements" boxes; researchers
page through it with the absolute `metadata.next_url`. The SQL is in queries/measurements.py;
this module parses the parameters, runs the query and shapes the answer.
"""

from __future__ import annotations

import datetime as dt
import time

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil, validate
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError
from oonibackend.queries import measurements as mq
from oonibackend.routes import params
from oonibackend.routes.links import base_url
from oonibackend.routes.params import MAX_OFFSET, Query

TAGS = ["measurements"]
CACHE = 60
# Old OONI Probe for Android (okhttp) polled this route and choked on real answers: legacy
# gave it this fixed, uncached answer (after validating the parameters), and so do we.
OKHTTP_ANSWER = {
    "metadata": {"count": 1, "current_page": 1, "limit": 100, "next_url": None, "offset": 0,
                 "pages": 1, "query_time": 0.001},
    "results": [{"measurement_url": ""}],
}


def parse_list_query(q: Query, today: dt.datetime) -> mq.ListQuery:
    """The parameters of GET /api/v1/measurements; `today` is 00:00 UTC of the current day.

    Defaults as legacy: without report_id, `until` is tomorrow 00:00 and `since` 30 days before
    `until`; with a report_id and no dates the search is unbounded in time.
    """
    probe_ccs = q.cc_list("probe_cc")
    if "ZZ" in probe_ccs:
        raise APIError("Forbidden: probe_cc ZZ (unknown country) cannot be searched", 403)
    probe_asns = q.asn_list("probe_asn")
    if 0 in probe_asns:
        raise APIError("Forbidden: probe_asn AS0 (unknown network) cannot be searched", 403)
    test_names = q.test_names("test_name", any_case=True)  # legacy took upper case here
    try:
        run_ids = [validate.uint64(v, "ooni_run_link_id", max_digits=None)
                   for v in q.list("ooni_run_link_id")]
    except validate.InvalidValue:
        raise APIError("Invalid ooni_run_link_id", 400) from None
    order_by = q.str("order_by", "measurement_start_time")
    if order_by not in mq.ORDER_BY:
        raise APIError("Invalid field for ordering: use one of " + ", ".join(mq.ORDER_BY), 400)
    order = q.str("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise APIError("Invalid order: use asc or desc", 400)
    limit = q.int("limit", mq.DEFAULT_LIMIT)
    assert limit is not None
    if limit > mq.MAX_LIMIT:
        raise APIError(f"`limit` is only allowed up to {mq.MAX_LIMIT}", 400)
    if limit < 1:
        raise APIError("Invalid limit: must be at least 1", 400)
    offset = q.int("offset", 0, min=0, max=MAX_OFFSET)
    assert offset is not None

    report_id = q.report_id()
    since, until = q.date("since"), q.date("until")
    if report_id is None:
        if until is None:
            until = today + dt.timedelta(days=1)
        if since is None:
            since = until - mq.DEFAULT_WINDOW

    inp = q.str("input")
    # As legacy: an input is more specific than a domain or a category, which are then ignored.
    domains = () if inp is not None else tuple(q.list("domain"))
    categories = () if inp is not None else tuple(q.category_codes("category_code"))
    return mq.ListQuery(
        report_id=report_id, input=inp, domains=domains, category_codes=categories,
        probe_ccs=tuple(probe_ccs), probe_asns=tuple(probe_asns), test_names=tuple(test_names),
        since=since, until=until,
        anomaly=q.bool("anomaly"), confirmed=q.bool("confirmed"), failure=q.bool("failure"),
        software_versions=tuple(q.list("software_version")),
        test_versions=tuple(q.list("test_version")),
        engine_versions=tuple(q.list("engine_version")),
        ooni_run_link_ids=tuple(run_ids), order_by=order_by, order=order,
        offset=offset, limit=limit,
    )


def _q(name: str, description: str, type_: str = "string") -> dict[str, str]:
    return {"in": "query", "name": name, "type": type_, "description": description}


@docs(
    tags=TAGS,
    summary="Search for measurements using only the database. Provide pagination.",
    description="Newest first by default. Without report_id the window defaults to the 30 days "
                "before tomorrow 00:00 UTC. probe_cc, probe_asn, test_name, domain and the "
                "version filters accept comma-separated lists.",
    parameters=[
        _q("report_id", "Report_id to search measurements for"),
        _q("input", "Input (for example a URL or IP address) to search measurements for"),
        _q("domain", "Domain to search measurements for"),
        _q("probe_cc", "Two letter country code"),
        _q("probe_asn", 'Autonomous system number in the format "ASXXX"'),
        _q("test_name", "Name of the test"),
        _q("category_code", "Category code from the citizenlab list"),
        _q("since", 'Start date of when measurements were run (ex. "2016-10-20T10:30:00")'),
        _q("until", 'End date of when measurement were run (ex. "2016-10-20T10:30:00")'),
        _q("confirmed", 'Set "true" for confirmed network anomalies'),
        _q("anomaly", 'Set "true" for measurements that require special attention'),
        _q("failure", 'Set "true" for failed measurements'),
        _q("software_version", "Filter measurements by software version. Comma-separated."),
        _q("test_version", "Filter measurements by test version. Comma-separated."),
        _q("engine_version", "Filter measurements by engine version. Comma-separated."),
        _q("ooni_run_link_id", "Filter measurements by OONIRun ID."),
        _q("order_by", "Ordering key: " + ", ".join(mq.ORDER_BY)),
        _q("order", "asc or desc (default desc)"),
        _q("offset", "Offset into the result set (default: 0)", "integer"),
        _q("limit", "Number of records to return (default and maximum: 100)", "integer"),
    ],
    responses={200: {"description": "metadata (paging) and results"},
               400: {"description": "Invalid parameters"},
               403: {"description": "probe_cc ZZ or probe_asn AS0"},
               504: {"description": "Query too expensive"}},
)
async def list_measurements(request: web.Request) -> web.Response:
    q = Query(request.query)
    lq = parse_list_query(q, params.today())
    if request.headers.get("User-Agent", "").startswith("okhttp"):
        return jsonutil.response(OKHTTP_ANSWER, cache=0)
    cfg = request.app[CONFIG]
    sql, sql_params = mq.list_sql(lq)
    t0 = time.perf_counter()
    # max_execution_time turns an over-broad search into a 504 JSON answer, not a hang.
    rows = await request.app[DB].query(sql, sql_params, {
        "max_execution_time": cfg.database.max_execution_time, "priority": 3})
    elapsed = time.perf_counter() - t0
    base = base_url(request)
    nxt = mq.next_url(base, request.query.items(), lq.offset, lq.limit) \
        if len(rows) >= lq.limit else None
    return jsonutil.response({
        "metadata": mq.page_metadata(lq.offset, lq.limit, len(rows), elapsed, nxt),
        "results": [mq.list_item(r, base) for r in rows],
    }, cache=CACHE)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/measurements", list_measurements)
