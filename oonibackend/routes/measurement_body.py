"""One measurement: its metadata and its raw body (docs/api.md §1.2 #14-16, §2.7).

* GET /api/v1/measurement_meta   metadata by uid or report id (+ input); `full` adds the body
                                 as a JSON *string* (Explorer's /m/ page, the hottest page)
* GET /api/v1/raw_measurement    the body itself (Explorer's "download raw JSON" link)
* GET /api/v1/measurement/{uid}  the body, optionally as a file download
* GET /measurement_spool/{hour dir}/{uid}.post   this host's spool, for the other API hosts

Bodies come from bodies.lookup (spool, other hosts, archive; cached by uid). Unlike legacy,
a missing body never answers 500: raw_measurement says 404, measurement_meta an empty string.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import ids, jsonutil, validate
from oonibackend.appkeys import CONFIG, DB
from oonibackend.bodies import archive, spool
from oonibackend.bodies.lookup import BODIES, bodies_ctx
from oonibackend.errors import APIError
from oonibackend.queries import measurements as mq
from oonibackend.routes.params import Query

TAGS = ["measurements"]
META_CACHE = 60
RAW_CACHE = 86400
MEASUREMENT_CACHE = 3600
NOT_FOUND_UID = "Incorrect or inexistent measurement_uid"


def read_settings(request: web.Request) -> dict[str, Any]:
    return {"max_execution_time": request.app[CONFIG].database.max_execution_time,
            "priority": 3}


async def find_meta(request: web.Request, *, uid: str | None = None,
                    report_id: str | None = None, inp: str | None = None
                    ) -> tuple[dict[str, Any], str | None] | None:
    """(fastpath row, category_code) of one measurement, or None. Rows of unknown networks
    (AS0) are hidden, as legacy. category_code: null for a report id without input (legacy),
    else the URL's test-list category or ""."""
    db, settings = request.app[DB], read_settings(request)
    lookups = mq.meta_by_uid(uid) if uid is not None else \
        mq.meta_by_report(report_id or "", inp)
    row = None
    for sql, params in lookups:
        row = await db.query_one(sql, params, settings)
        if row is not None:
            break
    if row is None or row["probe_asn"] == 0:
        return None
    if uid is None and inp is None:
        return row, None
    category = ""
    if row["input"]:
        hit = await db.query_one(*mq.category_sql(row["input"], row["probe_cc"]),
                                 settings=settings)
        category = hit["category_code"] if hit else ""
    return row, category


def _uid_param(q: Query) -> str | None:
    uid = q.str("measurement_uid")
    if uid is not None and not validate.is_measurement_uid(uid):
        raise APIError("Invalid measurement_uid", 400)
    return uid


async def _meta_from_query(request: web.Request, q: Query
                           ) -> tuple[dict[str, Any], str | None] | None:
    uid = _uid_param(q)
    if uid is not None:
        return await find_meta(request, uid=uid)
    report_id = q.report_id()
    if report_id is None:
        raise APIError("Invalid report_id: measurement_uid or report_id is required", 400)
    return await find_meta(request, report_id=report_id, inp=q.input())


async def _body(request: web.Request, row: dict[str, Any]) -> bytes | None:
    return await request.app[BODIES].fetch(row["measurement_uid"], row["report_id"],
                                           row["input"])


_Q_UID = {"in": "query", "name": "measurement_uid", "type": "string",
          "description": "The measurement ID, mutually exclusive with report_id + input"}
_Q_RID = {"in": "query", "name": "report_id", "type": "string",
          "description": "The report_id to search measurements for",
          "example": "20210208T162755Z_ndt_DZ_36947_n1_8swgXi7xNuRUyO9a"}
_Q_INPUT = {"in": "query", "name": "input", "type": "string",
            "description": "The input (for example a URL or IP address) to search "
                           "measurements for"}


@docs(tags=TAGS,
      summary="Get metadata on one measurement by measurement_uid or report_id + input",
      parameters=[_Q_UID, _Q_RID, _Q_INPUT,
                  {"in": "query", "name": "full", "type": "boolean",
                   "description": "Include JSON measurement data"}],
      responses={200: {"description": "Measurement metadata (scores and raw_measurement as "
                                      "JSON strings); {} when not found"},
                 400: {"description": "Invalid parameters"}})
async def measurement_meta(request: web.Request) -> web.Response:
    q = Query(request.query)
    full = q.bool("full", False)
    found = await _meta_from_query(request, q)
    if found is None:
        # Not cached: a measurement just submitted appears within seconds. Explorer needs
        # `raw_measurement: ""` to show its "not found" view.
        return jsonutil.response({"raw_measurement": ""} if full else {}, cache=0)
    row, category = found
    out = mq.meta_object(row, category)
    cache = META_CACHE
    if full:
        body = await _body(request, row)
        out["raw_measurement"] = body.decode("utf-8", "replace") if body is not None else ""
        if body is None:
            cache = 0  # a peer may be down or the upload under way: retry soon
    return jsonutil.response(out, cache=cache)


@docs(tags=TAGS, summary="Get raw measurement body by measurement_uid or report_id + input",
      parameters=[_Q_UID, _Q_RID, _Q_INPUT],
      responses={200: {"description": "The raw measurement (JSON); {} when unknown"},
                 400: {"description": "Invalid parameters"},
                 404: {"description": "Measurement known but its body is unavailable"}})
async def raw_measurement(request: web.Request) -> web.StreamResponse:
    q = Query(request.query)  # unknown parameters (webview, language, ...) are ignored
    found = await _meta_from_query(request, q)
    if found is None:
        return jsonutil.response({}, cache=0)
    body = await _body(request, found[0])
    if body is None:
        raise APIError("Measurement not found", 404)
    return web.Response(body=body, content_type="application/json",
                        headers={"Cache-Control": f"max-age={RAW_CACHE}"})


@docs(tags=TAGS, summary="Get one measurement by measurement_uid",
      description="Returns only the measurement, without extra data from the database.",
      parameters=[{"in": "path", "name": "measurement_uid", "type": "string",
                   "required": True},
                  {"in": "query", "name": "download", "type": "boolean",
                   "description": "Send as a file download"}],
      responses={200: {"description": "The JSON measurement"},
                 400: {"description": NOT_FOUND_UID}})
async def get_measurement(request: web.Request) -> web.StreamResponse:
    uid = request.match_info["measurement_uid"]
    if not validate.is_measurement_uid(uid):
        raise APIError(NOT_FOUND_UID, 400)
    download = Query(request.query).bool("download", False)
    found = await find_meta(request, uid=uid)
    body = await _body(request, found[0]) if found is not None else None
    if body is None:
        raise APIError(NOT_FOUND_UID, 400)
    headers = {"Cache-Control": f"max-age={MEASUREMENT_CACHE}"}
    if download:
        headers["Content-Disposition"] = f"attachment; filename=ooni_measurement-{uid}.json"
    return web.Response(body=body, content_type="application/json", headers=headers)


async def measurement_spool(request: web.Request) -> web.Response:
    """A `.post` file of this host's spool as is (what Nginx served in legacy), for the
    other API hosts; 404 for anything that is not a well-formed, present spool file."""
    hour_dir = request.match_info["hour_dir"]
    name = request.match_info["name"]
    uid = name[:-len(".post")] if name.endswith(".post") else ""
    if not ids.is_valid_hour_dir(hour_dir) or not ids.is_valid_uid(uid):
        raise APIError("Not found", 404)
    cfg = request.app[CONFIG]
    data = await asyncio.to_thread(spool.read_post, cfg.path(cfg.spool.dir), hour_dir, uid,
                                   archive.MAX_BODY)
    if data is None:
        raise APIError("Not found", 404)
    return web.Response(body=data, content_type="application/json",
                        headers={"Cache-Control": "no-cache"})


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(bodies_ctx)
    app.router.add_get("/api/v1/measurement_meta", measurement_meta)
    app.router.add_get("/api/v1/raw_measurement", raw_measurement)
    app.router.add_get("/api/v1/measurement/{measurement_uid}", get_measurement)
    app.router.add_get("/measurement_spool/{hour_dir}/{name}", measurement_spool)
