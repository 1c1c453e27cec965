"""Findings ("incidents") for Explorer's findings pages (docs/api.md §2.10; docs/clients.md,
Explorer §1d).

* GET  /api/v1/incidents/search?country_code=&theme=&asn=&domain=&only_mine=
                                                                  {"incidents": [...], "v": 1}
* GET  /api/v1/incidents/show/{id or slug}                       {"incident": {...}, "v": 1}
* POST /api/v1/incidents/{create|update|delete|publish|unpublish}

Visibility: anonymous callers see published findings only, logged-in users also their own,
admins everything; `email_address` is shown to admins only. Users may create and edit their own
findings (with their own email address) but not publish; admins may do anything. (OONI's
current service lets only admins create, and refuses roles with 401: we keep what Explorer
offers, any logged-in user with an e-mail creating a draft, and 403 for a role refusal: 401
means no valid login; docs/current_services.md §7.)

Concurrent edits: writes are serialised in the process, and every write bumps `update_time`
(the ReplacingMergeTree version) strictly, so the newest write always wins and none is half
applied. An editor that sends back the `update_time` it read (or an `If-Match` header with it)
gets 409 if somebody else saved in between, instead of silently overwriting their change.
Explorer's editor strips `update_time`, so for it the last save wins, as in legacy.

Legacy differences (on purpose): `themes` and `slug` are accepted and returned, search filters
by country and theme server side, show accepts a slug, unknown findings are 404, ownership and
role refusals are 403, and an admin's edit keeps the original creator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.accounts.auth import AUTH, current_session, require_session
from oonibackend.accounts.ids import account_id, normalize_email
from oonibackend.accounts.tokens import Session
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError, Invalid
from oonibackend.incidents import model, store
from oonibackend.routes.body import read_json
from oonibackend.routes.params import Query
from oonibackend.storage import Database

log = logging.getLogger(__name__)
TAGS = ["Findings"]
LOCK = web.AppKey("incidents_lock", asyncio.Lock)
_MAX_BODY = 512 * 1024
ACTIONS = ("create", "update", "delete", "publish", "unpublish")


def _ok(obj: dict[str, Any]) -> web.Response:
    """Every successful answer carries exactly `Cache-Control: no-cache`, as OONI's findings
    service (docs/current_services.md §7): visibility depends on who asks."""
    return jsonutil.response(obj, headers={"Cache-Control": "no-cache"})


def _out(row: dict[str, Any], session: Session | None) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "creator_account_id"}
    out["published"] = bool(row["published"])
    out["mine"] = session is not None and row["creator_account_id"] == session.account_id
    out["slug"] = row["slug"] or None
    out["CCs"] = [c.strip("\x00") for c in row["CCs"]]
    if session is None or session.role != "admin":
        out["email_address"] = None
    return out


@docs(tags=TAGS, summary="Search findings",
      description="Filters: `country_code`, `theme`, `asn`, `domain` (comma lists or "
                  "repeated; any match within one, all of them together), `only_mine=true`. "
                  "Anonymous callers see published findings only.",
      responses={200: {"description": '{"incidents": [...], "v": 1}'}})
async def search(request: web.Request) -> web.Response:
    session = current_session(request)
    q = Query(request.query)
    mine = None
    if q.bool("only_mine"):
        if session is None:
            return _ok({"incidents": [], "v": 1})
        mine = session.account_id
    rows = await store.search(request.app[DB], session, mine=mine,
                              ccs=q.cc_list("country_code"), themes=q.list("theme"),
                              asns=q.asn_list("asn"), domains=q.list("domain"))
    return _ok({"incidents": [_out(r, session) for r in rows], "v": 1})


@docs(tags=TAGS, summary="One finding, by id or slug",
      responses={200: {"description": '{"incident": {...}, "v": 1}'},
                 404: {"description": "Incident not found"}})
async def show(request: web.Request) -> web.Response:
    key = request.match_info["incident_id"]
    if not 0 < len(key) <= 100:
        raise APIError("Incident not found", 404)
    session = current_session(request)
    row = await store.load(request.app[DB], key)
    if row is None or not (row["published"] or (session is not None and (
            session.role == "admin" or row["creator_account_id"] == session.account_id))):
        raise APIError("Incident not found", 404)
    return _ok({"incident": _out(row, session), "v": 1})


async def _unique_slug(db: Database, slug: str, incident_id: str, explicit: bool) -> str:
    if not await store.slug_taken(db, slug, incident_id):
        return slug
    if explicit:
        raise APIError("This slug is already used by another finding", 400,
                       err_str="err_request_params")
    return f"{slug}-{incident_id}"


def _check_email(request: web.Request, session: Session, email: str) -> None:
    """A user's finding may carry the user's own address (the one exception to storing none;
    empty: none)."""
    if session.role == "admin" or not email:
        return
    normal = normalize_email(email)
    if normal is None or account_id(normal, request.app[AUTH].hashing_key) != \
            session.account_id:
        raise APIError("email_address must be your own", 400, err_str="err_request_params")


def _expected_version(request: web.Request, body: dict[str, Any]) -> dt.datetime | None:
    raw = request.headers.get("If-Match") or body.get("update_time")
    if not raw:
        return None
    try:
        return model._time(str(raw).strip('"'), "update_time")
    except Invalid:
        raise APIError("Invalid update_time / If-Match", 400) from None


@docs(tags=TAGS, summary="Create, update, delete, publish or unpublish a finding",
      description="create/update: the finding's fields; delete/publish/unpublish: `{id}`. "
                  "Answers `{r, id}` (delete: `{}`).",
      responses={200: {"description": "{r, id}"}, 401: {"description": "Login required"},
                 403: {"description": "Not yours / admin only"},
                 404: {"description": "Incident not found"},
                 409: {"description": "Changed by somebody else since read"}})
async def action(request: web.Request) -> web.Response:
    name = request.match_info["action"]
    if name not in ACTIONS:
        raise APIError("Invalid request", 400)
    session = require_session(request)
    body = await read_json(request, _MAX_BODY)
    db = request.app[DB]
    async with request.app[LOCK]:
        if name == "create":
            fields = model.parse(body, update=False)
            if fields["published"] and session.role != "admin":
                raise APIError("Only admins can publish", 403, err_str="err_ownership")
            _check_email(request, session, fields["email_address"])
            incident_id = store.new_id(request.app[CONFIG].server.collector_id)
            fields["slug"] = await _unique_slug(db, fields["slug"] or
                                                model.slugify(fields["title"]), incident_id,
                                                explicit=bool(fields["slug"]))
            now = store.now()
            await store.save(db, store.row(fields, incident_id, session.account_id, now, now))
            log.info("finding created", extra={"id": incident_id})
            return _ok({"r": 1, "id": incident_id})

        if not isinstance(body, dict) or not isinstance(body.get("id"), str | int):
            raise APIError("Invalid request: id missing", 400, err_str="err_request_params")
        if not 0 < len(str(body["id"])) <= 100:  # as show: a longer key can name no finding
            raise APIError("Invalid request: invalid id", 400, err_str="err_request_params")
        current = await store.load(db, str(body["id"]))
        if current is None or current["id"] != str(body["id"]):
            raise APIError("Incident not found", 404)
        if session.role != "admin" and current["creator_account_id"] != session.account_id:
            raise APIError("This finding is not yours", 403, err_str="err_ownership")
        expected = _expected_version(request, body)
        if expected is not None and expected != current["update_time"]:
            raise APIError("The finding was changed by somebody else since you read it", 409)
        version = store.next_version(current["update_time"])
        incident_id = current["id"]

        if name == "delete":
            await store.delete(db, incident_id)
            log.info("finding deleted", extra={"id": incident_id})
            return _ok({})
        if name in ("publish", "unpublish"):
            if session.role != "admin":
                raise APIError("Only admins can publish", 403, err_str="err_ownership")
            row = {k: v for k, v in current.items()}
            row.update(published=int(name == "publish"), update_time=version, deleted=0)
            await store.save(db, row)
            return _ok({"r": 1, "id": incident_id})

        fields = model.parse(body, update=True)
        if fields["published"] and not current["published"] and session.role != "admin":
            raise APIError("Only admins can publish", 403, err_str="err_ownership")
        if session.role != "admin":
            fields["published"] = current["published"]
        if not fields["email_address"]:  # show hides it from non-admins: keep the stored one
            fields["email_address"] = current["email_address"]
        else:
            _check_email(request, session, fields["email_address"])
        slug = fields["slug"] or current["slug"] or model.slugify(fields["title"])
        fields["slug"] = await _unique_slug(db, slug, incident_id,
                                            explicit=bool(fields["slug"]))
        await store.save(db, store.row(fields, incident_id, current["creator_account_id"],
                                       current["create_time"], version))
        log.info("finding updated", extra={"id": incident_id})
        return _ok({"r": 1, "id": incident_id})


def setup(app: web.Application) -> None:
    app[LOCK] = asyncio.Lock()
    app.router.add_get("/api/v1/incidents/search", search)
    app.router.add_get("/api/v1/incidents/show/{incident_id}", show)
    app.router.add_post("/api/v1/incidents/{action}", action)
