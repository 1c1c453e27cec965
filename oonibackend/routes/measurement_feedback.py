"""What users say about a measurement (docs/api.md §1.2 #19, #20).

* GET  /api/_/measurement_feedback/{uid}   `{"summary": {status: count}, "user_feedback"?}`
* POST /api/_/measurement_feedback         `{measurement_uid, status}` (logged in) → `{}`

The GET always has `summary` (Explorer's /m/ page crashes without it) and adds `user_feedback`
when the caller is logged in and has given feedback. One feedback per account and
measurement: msmt_feedback is a ReplacingMergeTree on (measurement_uid, account_id), so a new
submission replaces the previous one (read with FINAL: the last write wins at once).
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil, validate
from oonibackend.accounts.auth import current_session, require_session
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError
from oonibackend.queries import measurements as mq
from oonibackend.routes.body import read_json

log = logging.getLogger(__name__)
STATUSES = frozenset((
    "blocked", "blocked.blockpage", "blocked.blockpage.http", "blocked.blockpage.dns",
    "blocked.blockpage.server_side", "blocked.blockpage.server_side.captcha", "blocked.dns",
    "blocked.dns.inconsistent", "blocked.dns.nxdomain", "blocked.tcp", "blocked.tls", "ok",
    "down", "down.unreachable", "down.misconfigured"))
_MAX_BODY = 4096


@docs(tags=["measurements"],
      summary="Feedback summary of a measurement, and the caller's own feedback",
      parameters=[{"in": "path", "name": "measurement_uid", "type": "string",
                   "required": True, "description": "Measurement ID"}],
      responses={200: {"description": "{summary: {status: count}, user_feedback?: status}"},
                 400: {"description": "Invalid measurement_uid"}})
async def get_feedback(request: web.Request) -> web.Response:
    uid = request.match_info["measurement_uid"]
    if not validate.is_measurement_uid(uid):
        raise APIError("Invalid measurement_uid", 400)
    session = current_session(request)
    account = session.account_id if session else None
    cfg = request.app[CONFIG]
    rows = await request.app[DB].query(*mq.feedback_sql(uid, account), settings={
        "max_execution_time": cfg.database.max_execution_time, "priority": 3})
    out: dict[str, object] = {"summary": {r["status"]: r["n"] for r in rows}}
    if account is not None:
        mine = [r["status"] for r in rows if r["mine"]]
        if mine:
            out["user_feedback"] = mine[0]
    return jsonutil.response(out, cache=0)


@docs(tags=["measurements"], summary="Give feedback on a measurement (logged in)",
      description="Body: `measurement_uid`, `status` (one of ok, down, down.unreachable, "
                  "down.misconfigured, blocked, blocked.blockpage(.http|.dns|.server_side"
                  "(.captcha)), blocked.dns(.inconsistent|.nxdomain), blocked.tcp, blocked.tls)."
                  " A later submission by the same account replaces the earlier one.",
      responses={200: {"description": "{}"}, 400: {"description": "Invalid status or uid"},
                 401: {"description": "Authentication required"}})
async def post_feedback(request: web.Request) -> web.Response:
    session = require_session(request)
    body = await read_json(request, _MAX_BODY)
    if not isinstance(body, dict):
        raise APIError("Invalid request", 400)
    uid, status = body.get("measurement_uid"), body.get("status")
    uid = uid.strip() if isinstance(uid, str) else ""
    status = status.strip() if isinstance(status, str) else ""
    # Legacy did not validate the uid; a feedback row needs a plausible one.
    if not validate.is_measurement_uid(uid):
        raise APIError("Invalid measurement_uid", 400)
    if status not in STATUSES:
        raise APIError("Invalid status", 400)
    await request.app[DB].insert("msmt_feedback", [
        {"measurement_uid": uid, "account_id": session.account_id, "status": status}])
    log.info("measurement feedback", extra={"status": status})
    return jsonutil.response({}, cache=0)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/_/measurement_feedback/{measurement_uid}", get_feedback)
    app.router.add_post("/api/_/measurement_feedback", post_feedback)
