"""GET /api/v1/measurements: the search listing (docs/api.md §1.2 #17, §2.7).

Explorer's /search page and the country/ASN/domain "recent measurements" boxes; researchers
page through it with the absolute `metadata.next_url`. Parameter parsing and SQL are in
queries/measurements.py; this handler runs the query and shapes the answer.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG, DB
from oonibackend.queries import measurements as mq
from oonibackend.routes import params
from oonibackend.routes.links import base_url
from oonibackend.routes.params import Query

TAGS = ["measurements"]
CACHE = 60
# Old OONI Probe for Android (okhttp) polled this route and choked on real answers: legacy
# gave it this fixed, uncached answer (after validating the parameters), and so do we.
OKHTTP_ANSWER = {
    "metadata": {"count": 1, "current_page": 1, "limit": 100, "next_url": None, "offset": 0,
                 "pages": 1, "query_time": 0.001},
    "results": [{"measurement_url": ""}],
}


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
    lq = mq.parse_list_query(q, params.today())
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
