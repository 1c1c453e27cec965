"""GET /api/_/measurement_feedback/{uid}: what users said about a measurement (§1.2 #19).

Always `{"summary": {status: count}}` (Explorer's /m/ page crashes without `summary`), plus
`user_feedback` when the caller presents a valid account token and has given feedback on this
measurement. Anonymous callers are fine: a missing or invalid token is simply anonymous.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError
from oonibackend.queries import measurements as mq
from oonibackend.quotas.keys import decode_user_token, token_account
from oonibackend.quotas.policy import QUOTA_POLICY
from oonibackend.routes.probe_auth import JWT_KEY


def _secret(app: web.Application) -> str | None:
    """The account-token key, resolved once at startup (never read from disk per request)."""
    key = app.get(JWT_KEY)
    if key:
        return key
    policy = app.get(QUOTA_POLICY)
    return policy.jwt_secret if policy is not None else None


@docs(tags=["measurements"],
      summary="Feedback summary of a measurement, and the caller's own feedback",
      parameters=[{"in": "path", "name": "measurement_uid", "type": "string",
                   "required": True, "description": "Measurement ID"}],
      responses={200: {"description": "{summary: {status: count}, user_feedback?: status}"},
                 400: {"description": "Invalid measurement_uid"}})
async def get_feedback(request: web.Request) -> web.Response:
    uid = request.match_info["measurement_uid"]
    if not mq.is_safe_id(uid):
        raise APIError("Invalid measurement_uid", 400)
    account = None
    secret = _secret(request.app)
    if secret:
        account = token_account(decode_user_token(request.headers.get("Authorization"),
                                                  secret))
    cfg = request.app[CONFIG]
    rows = await request.app[DB].query(*mq.feedback_sql(uid, account), settings={
        "max_execution_time": cfg.database.max_execution_time, "priority": 3})
    out: dict[str, object] = {"summary": {r["status"]: r["n"] for r in rows}}
    if account is not None:
        mine = [r["status"] for r in rows if r["mine"]]
        if mine:
            out["user_feedback"] = mine[0]
    return jsonutil.response(out, cache=0)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/_/measurement_feedback/{measurement_uid}", get_feedback)
