"""The blocking-event feed: GET /api/v1/detector/events (JSON or Atom), and OONI's analysis
change points: GET /api/v1/detector/changepoints (docs/current_services.md §5).

Events are written by `oonibackend detect` (oonibackend/jobs/detector/). Filters: probe_cc,
probe_asn (AS123 or 123), test_name (comma lists), input (exact), domain (the input URL's
host), status (OK / BLOCKED), since / until (on the change point `time`; YYYY-MM-DD or ISO),
limit (default 100, at most 1000). `format=json|atom`, or `Accept: application/atom+xml`.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import DB
from oonibackend.queries import detector_changepoints, detector_events, detector_feed
from oonibackend.routes.links import base_url
from oonibackend.routes.params import Query, today

TAGS = ["Detector"]
PATH = "/api/v1/detector/events"
CHANGEPOINTS_PATH = "/api/v1/detector/changepoints"
CACHE_SECONDS = 60
MAX_EXECUTION_TIME = 10


def events_query(q: Query) -> tuple[str, dict[str, Any]]:
    """The feed's SQL for the query string."""
    return detector_events.build_query(
        limit=q.int("limit", detector_events.DEFAULT_LIMIT, min=1, max=detector_events.MAX_LIMIT)
        or detector_events.DEFAULT_LIMIT,
        ccs=q.cc_list("probe_cc"), asns=q.asn_list("probe_asn"),
        tests=q.test_names("test_name"), input_=q.input("input"), domain=q.domain("domain"),
        status=q.str("status"), since=q.date("since"), until=q.date("until"))


def _wants_atom(request: web.Request, q: Query) -> bool:
    fmt = q.choice("format", ("json", "atom"), lower=True)
    if fmt is not None:
        return fmt == "atom"
    return detector_feed.CONTENT_TYPE in request.headers.get("Accept", "")


@docs(tags=TAGS, summary="Blocking events detected in the measurements",
      description="Changes of the blocking status (OK / BLOCKED) of a test and input in a "
                  "country and network, newest change point first. Filters: `probe_cc`, "
                  "`probe_asn`, `test_name`, `input`, `domain`, `status`, `since`, `until` "
                  "(on the change point), `limit` (default 100, at most 1000). `format=atom` "
                  "(or `Accept: application/atom+xml`) gives an Atom 1.0 feed.",
      responses={200: {"description": '{"v": 0, "events": [{"test_name", "input", '
                                      '"probe_cc", "probe_asn", "status", "time", '
                                      '"detection_time"}]} or an Atom feed'},
                 400: {"description": "Invalid parameter"}})
async def events(request: web.Request) -> web.Response:
    q = Query(request.query)
    atom = _wants_atom(request, q)
    sql, params = events_query(q)
    rows = await request.app[DB].query(sql, params,
                                       settings={"max_execution_time": MAX_EXECUTION_TIME})
    headers = {"Vary": "Accept"}
    if not atom:
        return jsonutil.response(detector_feed.render_json(rows), cache=CACHE_SECONDS, headers=headers)
    base = base_url(request)
    self_url = urllib.parse.urljoin(base, PATH.lstrip("/"))
    if request.rel_url.raw_query_string:
        self_url += "?" + request.rel_url.raw_query_string
    authority = urllib.parse.urlsplit(base).hostname or "ooni.org"
    body = detector_feed.render_atom(rows, self_url=self_url, authority=authority,
                            now=dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0))
    headers["Cache-Control"] = f"max-age={CACHE_SECONDS}"
    return web.Response(body=body, content_type=detector_feed.CONTENT_TYPE, charset="utf-8",
                        headers=headers)


def changepoints_query(q: Query, day: dt.datetime) -> tuple[str, dict[str, Any]]:
    """The change points' SQL for the query string; `day` is today 00:00 UTC."""
    since, until = q.date("since"), q.date("until")
    return detector_changepoints.build_query(
        day, since=since, until=until,
        asn=q.asn("probe_asn"),  # AS8048 or 8048; anything else is a 400 (OONI: 500)
        cc=q.str("probe_cc"), domain=q.str("domain"))


@docs(tags=TAGS, summary="Change points of OONI's analysis event detector",
      description="Rows of `event_detector_changepoints` with `ts` within `since` .. `until` "
                  "(both inclusive; default 30 days ago 00:00 UTC .. today 00:00 UTC). "
                  "Filters: `probe_asn` (AS8048 or 8048; 0 means any), `probe_cc` (2 "
                  "characters), `domain` (exact).",
      responses={200: {"description": '{"results": [{"probe_asn", "probe_cc", "domain", '
                                      '"start_time", "count_isp_resolver", '
                                      '"count_other_resolver", "count", "dns_isp_blocked", '
                                      '"dns_other_blocked", "tcp_blocked", "tls_blocked", '
                                      '"change_dir": "up"|"down"|null, "current_state", '
                                      '"s_pos", "s_neg", "h", "block_type"}]}'},
                 400: {"description": "Invalid parameter"}})
async def changepoints_list(request: web.Request) -> web.Response:
    sql, params = changepoints_query(Query(request.query), today())
    rows = await request.app[DB].query(sql, params,
                                       settings={"max_execution_time": MAX_EXECUTION_TIME})
    # No Cache-Control, as OONI's service.
    return jsonutil.response({"results": [detector_changepoints.render(r) for r in rows]})


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, events)
    app.router.add_get(CHANGEPOINTS_PATH, changepoints_list)
