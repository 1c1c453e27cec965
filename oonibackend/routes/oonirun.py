"""OONI Run links: the legacy draft routes and the v2 contract of the current probe.

Draft (docs/api.md §2.11):
* POST /api/_/ooni_run/create[?ooni_run_link_id=N]   {v, ooni_run_link_id}
* POST /api/_/ooni_run/archive/{id}                   {v}
* GET  /api/_/ooni_run/fetch/{id}[?creation_time=]    {archived, descriptor, ..., mine, v}
* GET  /api/_/ooni_run/list                           {v, descriptors: [...]}
v2 (what probe-cli and the OONI Run web UI call):
* POST /api/v2/oonirun/links                          create a link
* PUT  /api/v2/oonirun/links/{id}                     edit (owner or admin)
* GET  /api/v2/oonirun/links/{id}[?revision=N]        a link at its latest or given revision
* GET  /api/v2/oonirun/links/{id}/revisions           {"revisions": ["2", "1"]}
* GET  /api/v2/oonirun/links/{id}/full-descriptor/{revision|latest}
* POST /api/v2/oonirun/links/{id}/engine-descriptor/{revision|latest}   what the probe runs
* GET  /api/v2/oonirun/links[?is_mine=&is_expired=]   {"oonirun_links": [...]}

Links never expire silently: there is no default expiry. A link expires only when its author
sets `expiration_date` (or archives it), and an expired link is still served, flagged
`is_expired: true`, so a probe or a person following it learns why it stopped rather than
getting a 404. Legacy bugs fixed: boolean query parameters are real booleans (legacy took any
non-empty value, "false" included, as true), list honours `ooni_run_link_id`, a descriptor without
`author` is a 400 (legacy 500), and unknown links are 404.

v2 follows OONI's current service (docs/current_services.md §7): `revision` is a string,
engine-descriptor checks the probe's request and fills `websites_list_prioritized` nettests
with check-in's prioritization, the list leaves expired links out unless `is_expired=true`.
Bad input is a 400 `{"error"}` (the service's 422 bodies are FastAPI's, not ours).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil, validate
from oonibackend.accounts.auth import current_session, require_session
from oonibackend.accounts.tokens import Session
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError
from oonibackend.oonirun import engine, model, store
from oonibackend.prioritization.snapshot import TEST_LISTS
from oonibackend.routes.body import read_json
from oonibackend.routes.params import Query, checked

TAGS = ["OONI Run"]
LOCK = web.AppKey("oonirun_lock", asyncio.Lock)
_MAX_BODY = model.MAX_DESCRIPTOR_BYTES * 2
def _link_id(value: str) -> int:
    try:
        return validate.uint64(value, "ooni_run_link_id", max_digits=19)
    except validate.InvalidValue:
        raise APIError("Invalid OONI Run link id", 400) from None


def _new_id(collector_id: str) -> int:
    suffix = int(collector_id) % 100 if collector_id.isdigit() else 0
    return secrets.randbits(32) * 100 + suffix


def _descriptor(r: dict[str, Any]) -> dict[str, Any]:
    try:
        d = jsonutil.loads(r["descriptor"])
    except jsonutil.JSONDecodeError:
        d = {}
    return d if isinstance(d, dict) else {}


def _mine(r: dict[str, Any], session: Session | None) -> bool:
    return session is not None and r["creator_account_id"] == session.account_id


def _may_edit(r: dict[str, Any], session: Session) -> bool:
    return _mine(r, session) or session.role == "admin"


async def _write(request: web.Request, session: Session, link_id: int | None,
                 d: dict[str, Any], *, admin_may_edit: bool) -> tuple[int, list[dict[str, Any]]]:
    """Create a link, or a new version / translation update of an existing one."""
    db = request.app[DB]
    async with request.app[LOCK]:
        if link_id is None:
            link_id = _new_id(request.app[CONFIG].server.collector_id)
            t = store.now_ms()
            await store.insert(db, [store.row(link_id, t, t, session.account_id, False, d)])
            return link_id, await store.versions(db, link_id)
        versions = await store.versions(db, link_id)
        if not versions:
            raise APIError("OONIRun descriptor not found", 404)
        latest = versions[-1]
        allowed = _may_edit(latest, session) if admin_may_edit else _mine(latest, session)
        if not allowed:
            # Legacy's answer for an update of somebody else's link, kept: it reveals nothing.
            raise APIError("OONIRun descriptor not found", 400)
        translated = store.after(max(max(v["translation_creation_time"],
                                         v["descriptor_creation_time"]) for v in versions))
        new_version = model.is_new_version(_descriptor(latest), d)
        created = translated if new_version else latest["descriptor_creation_time"]
        await store.insert(db, [store.row(link_id, created, translated,
                                          latest["creator_account_id"], bool(latest["archived"]),
                                          d)])
        return link_id, await store.versions(db, link_id)


# ---- draft routes -----------------------------------------------------------------------------

@docs(tags=TAGS, summary="Create a new oonirun link or a new version for an existing one.",
      responses={200: {"description": "{v, ooni_run_link_id}"}})
async def draft_create(request: web.Request) -> web.Response:
    session = require_session(request)
    q = Query(request.query)
    raw_id = q.str("ooni_run_link_id")
    link_id = _link_id(raw_id) if raw_id is not None else None
    d = model.descriptor(await read_json(request, _MAX_BODY))
    link_id, _ = await _write(request, session, link_id, d, admin_may_edit=False)
    return jsonutil.response({"v": 1, "ooni_run_link_id": link_id}, cache=0)


@docs(tags=TAGS, summary="Archive an OONIRun descriptor and all its past versions.",
      responses={200: {"description": "{v}"}})
async def draft_archive(request: web.Request) -> web.Response:
    session = require_session(request)
    await _archive(request, session, _link_id(request.match_info["ooni_run_link_id"]))
    return jsonutil.response({"v": 1}, cache=0)


async def _archive(request: web.Request, session: Session, link_id: int) -> None:
    db = request.app[DB]
    async with request.app[LOCK]:
        versions = await store.versions(db, link_id)
        if not versions or not _may_edit(versions[-1], session):
            return  # legacy: a silent no-op when not found or not the caller's
        t = store.after(max(v["translation_creation_time"] for v in versions))
        await store.insert(db, [store.row(link_id, v["descriptor_creation_time"], t,
                                          v["creator_account_id"], True, _descriptor(v))
                                for v in versions])


@docs(tags=TAGS, summary="Fetch OONIRun descriptor by creation time or the newest one",
      responses={200: {"description": "OONIRun metadata and descriptor"},
                 404: {"description": "oonirun descriptor not found"}})
async def draft_fetch(request: web.Request) -> web.Response:
    link_id = _link_id(request.match_info["ooni_run_link_id"])
    when = Query(request.query).str("creation_time")
    versions = await store.versions(request.app[DB], link_id)
    if when is not None:
        t = checked(validate.date_time, when, "creation_time")
        versions = [v for v in versions if v["descriptor_creation_time"] == t]
    if not versions:
        raise APIError("oonirun descriptor not found", 404)
    r = versions[-1]
    return jsonutil.response({
        "archived": bool(r["archived"]), "descriptor": _descriptor(r),
        "descriptor_creation_time": r["descriptor_creation_time"],
        "translation_creation_time": r["translation_creation_time"],
        "mine": _mine(r, current_session(request)), "v": 1}, cache=0)


@docs(tags=TAGS, summary="List OONIRun descriptors",
      responses={200: {"description": "{v, descriptors: [...]}"}})
async def draft_list(request: web.Request) -> web.Response:
    session = current_session(request)
    q = Query(request.query)
    clauses, params = ["1"], {}
    if not q.bool("include_archived", False):
        clauses.append("archived = 0")
    if q.bool("only_mine", False):
        if session is None:
            return jsonutil.response({"v": 1, "descriptors": []}, cache=0)
        clauses.append("creator_account_id = %(me)s")
        params["me"] = session.account_id
    ids = q.list("ooni_run_link_id")
    if ids:
        clauses.append("ooni_run_link_id IN %(ids)s")
        params["ids"] = [_link_id(i) for i in ids]
    rows = await store.links(request.app[DB], " AND ".join(clauses), params)
    if q.bool("only_latest", False):
        newest: dict[int, dict[str, Any]] = {}
        for r in rows:
            cur = newest.get(r["ooni_run_link_id"])
            if cur is None or r["translation_creation_time"] >= cur["translation_creation_time"]:
                newest[r["ooni_run_link_id"]] = r
        rows = [r for r in rows if newest[r["ooni_run_link_id"]] is r]
    out = [{"archived": bool(r["archived"]), "author": r["author"],
            "ooni_run_link_id": r["ooni_run_link_id"], "icon": r["icon"],
            "descriptor_creation_time": r["descriptor_creation_time"],
            "translation_creation_time": r["translation_creation_time"],
            "mine": _mine(r, session), "name": r["name"],
            "short_description": r["short_description"]} for r in rows]
    return jsonutil.response({"v": 1, "descriptors": out}, cache=0)


# ---- v2 -------------------------------------------------------------------------------------

def _revision(versions: list[dict[str, Any]], value: str | None) -> tuple[int, dict[str, Any]]:
    if value in (None, "", "latest"):
        return len(versions), versions[-1]
    if not (value.isascii() and value.isdigit()):
        raise APIError("Invalid revision: latest or a number", 400)
    if not 0 < int(value) <= len(versions):
        raise APIError("Revision not found", 404)
    return int(value), versions[int(value) - 1]


def _v2(versions: list[dict[str, Any]], revision: int, r: dict[str, Any],
        session: Session | None, *, of_revision: bool = False) -> dict[str, Any]:
    """A link object. `date_created` is the link's, or with `of_revision` the revision's (as
    OONI's get and full-descriptor answer); `revision` is a string (docs/current_services.md
    §7)."""
    d = _descriptor(r)
    latest = versions[-1]
    created = r if of_revision else versions[0]
    return {
        "oonirun_link_id": str(r["ooni_run_link_id"]),
        **{k: d.get(k) or "" for k in model.TEXTS},
        **{k + "_intl": d.get(k + "_intl") or {} for k in model.TEXTS},
        "author": d.get("author") or "", "icon": d.get("icon") or "",
        "color": d.get("color"), "expiration_date": d.get("expiration_date"),
        "date_created": created["descriptor_creation_time"],
        "date_updated": latest["translation_creation_time"],
        "revision": str(revision),
        "is_archived": bool(latest["archived"]),
        "is_expired": model.is_expired(_descriptor(latest), bool(latest["archived"]),
                                       store.now_ms()),
        "is_mine": _mine(r, session),
        "nettests": model.engine_nettests(d),
    }


async def _versions_or_404(request: web.Request) -> tuple[int, list[dict[str, Any]]]:
    link_id = _link_id(request.match_info["oonirun_link_id"])
    versions = await store.versions(request.app[DB], link_id)
    if not versions:
        raise APIError("OONI Run link not found", 404)
    return link_id, versions


@docs(tags=TAGS, summary="Create an OONI Run link (v2)",
      description="Body: name, short_description, description, their `_intl` maps, author, "
                  "icon, color, optional expiration_date (none: the link never expires), "
                  "nettests.", responses={200: {"description": "The link"}})
async def v2_create(request: web.Request) -> web.Response:
    session = require_session(request)
    d = model.descriptor(await read_json(request, _MAX_BODY))
    _, versions = await _write(request, session, None, d, admin_may_edit=True)
    return jsonutil.response(_v2(versions, len(versions), versions[-1], session), cache=0)


@docs(tags=TAGS, summary="Edit an OONI Run link (v2): a change of nettests, author or icon "
                         "makes a new revision", responses={200: {"description": "The link"}})
async def v2_edit(request: web.Request) -> web.Response:
    session = require_session(request)
    link_id, versions = await _versions_or_404(request)
    if not _may_edit(versions[-1], session):
        raise APIError("You cannot edit this OONI Run link", 403)
    d = model.descriptor(await read_json(request, _MAX_BODY))
    _, versions = await _write(request, session, link_id, d, admin_may_edit=True)
    return jsonutil.response(_v2(versions, len(versions), versions[-1], session), cache=0)


@docs(tags=TAGS, summary="An OONI Run link at its latest revision, or ?revision=N",
      responses={200: {"description": "The link"}, 404: {"description": "Not found"}})
async def v2_get(request: web.Request) -> web.Response:
    _, versions = await _versions_or_404(request)
    revision, r = _revision(versions, Query(request.query).str("revision"))
    return jsonutil.response(_v2(versions, revision, r, current_session(request),
                                 of_revision=True), cache=0)


@docs(tags=TAGS, summary="The revisions of an OONI Run link, newest first",
      responses={200: {"description": '{"revisions": ["2", "1"]}'}})
async def v2_revisions(request: web.Request) -> web.Response:
    _, versions = await _versions_or_404(request)
    return jsonutil.response({"revisions": [str(i) for i in range(len(versions), 0, -1)]},
                             cache=0)


@docs(tags=TAGS, summary="An OONI Run link at a revision (`latest` allowed)",
      responses={200: {"description": "The link"}})
async def v2_full(request: web.Request) -> web.Response:
    _, versions = await _versions_or_404(request)
    revision, r = _revision(versions, request.match_info["revision"])
    return jsonutil.response(_v2(versions, revision, r, current_session(request),
                                 of_revision=True), cache=0)


@docs(tags=TAGS, summary="What a probe runs for a link revision (`latest` allowed)",
      description="Body (as probe-cli sends it, all required but the categories): "
                  "is_charging, run_type (timed|manual), probe_cc, probe_asn, network_type, "
                  "website_category_codes. An optional `UserAgent` header must have six "
                  "comma-separated fields. Nettests carry both is_*_enabled and "
                  "is_*_enabled_default; `targets_name: websites_list_prioritized` is filled "
                  "in with check-in's prioritized URLs for the probe.",
      responses={200: {"description": "{revision, nettests, date_created, name, "
                                      "description, author, is_expired}"},
                 400: {"description": "Invalid request"}, 404: {"description": "Not found"}})
async def v2_engine_descriptor(request: web.Request) -> web.Response:
    # Checked before the link is looked up, as OONI's service does (docs/current_services.md §7).
    req = engine.parse_request(await read_json(request, _MAX_BODY),
                               request.headers.get("UserAgent"))
    _, versions = await _versions_or_404(request)
    revision, r = _revision(versions, request.match_info["revision"])
    d = _descriptor(r)
    latest = versions[-1]
    nettests = engine.fill_targets(model.engine_nettests(d), req,
                                   request.app[TEST_LISTS].snapshot.test_list)
    return jsonutil.response({
        "name": d.get("name") or "", "description": d.get("description") or "",
        "author": d.get("author") or "", "nettests": nettests,
        "revision": str(revision), "date_created": r["descriptor_creation_time"],
        "is_expired": model.is_expired(_descriptor(latest), bool(latest["archived"]),
                                       store.now_ms()),
    }, cache=0)


@docs(tags=TAGS, summary="List OONI Run links (latest revisions)",
      description="`is_mine=true`: only the caller's; expired links are left out unless "
                  "`is_expired=true`.",
      responses={200: {"description": '{"oonirun_links": [...]}'}})
async def v2_list(request: web.Request) -> web.Response:
    session = current_session(request)
    q = Query(request.query)
    clauses, params = ["1"], {}
    if q.bool("is_mine", False):
        if session is None:
            return jsonutil.response({"oonirun_links": []}, cache=0)
        clauses.append("creator_account_id = %(me)s")
        params["me"] = session.account_id
    with_expired = q.bool("is_expired", False)
    rows = await store.links(request.app[DB], " AND ".join(clauses), params)
    by_link: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_link.setdefault(r["ooni_run_link_id"], []).append(r)
    out = []
    for versions in by_link.values():
        versions.sort(key=lambda v: v["descriptor_creation_time"])
        link = _v2(versions, len(versions), versions[-1], session)
        if with_expired or not link["is_expired"]:
            out.append(link)
    out.sort(key=lambda link: link["date_updated"], reverse=True)
    return jsonutil.response({"oonirun_links": out}, cache=0)


def setup(app: web.Application) -> None:
    app[LOCK] = asyncio.Lock()
    r = app.router
    r.add_post("/api/_/ooni_run/create", draft_create)
    r.add_post("/api/_/ooni_run/archive/{ooni_run_link_id}", draft_archive)
    r.add_get("/api/_/ooni_run/fetch/{ooni_run_link_id}", draft_fetch)
    r.add_get("/api/_/ooni_run/list", draft_list)
    r.add_post("/api/v2/oonirun/links", v2_create)
    r.add_get("/api/v2/oonirun/links", v2_list)
    r.add_put("/api/v2/oonirun/links/{oonirun_link_id}", v2_edit)
    r.add_get("/api/v2/oonirun/links/{oonirun_link_id}", v2_get)
    r.add_get("/api/v2/oonirun/links/{oonirun_link_id}/revisions", v2_revisions)
    r.add_get("/api/v2/oonirun/links/{oonirun_link_id}/full-descriptor/{revision}", v2_full)
    r.add_post("/api/v2/oonirun/links/{oonirun_link_id}/engine-descriptor/{revision}",
               v2_engine_descriptor)
