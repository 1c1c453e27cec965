"""URL priority rules of check-in's prioritization (admin; docs/api.md §1.2 #32/#33).

* GET  /api/_/url-priorities/list     {"rules": [{category_code, cc, domain, url, priority}]}
* POST /api/_/url-priorities/update   {old_entry?, new_entry?} → 1
* GET  /api/_/show_countries_prioritization[?format=JSON|CSV]   every entry's week and
  priority (no authentication, as legacy; prioritization/countries.py)

Rules are stored at once (url_priorities is a CollapsingMergeTree: a change is a -1 row for
the old rule and a +1 row for the new one) and the `url_priorities` dataset version is bumped,
so check-in reloads its URL snapshot within `probe.version_poll` seconds (at the latest at the
periodic refresh, `probe.test_list_refresh`). Legacy served the list without authentication
(docs/api.md §4 bug 8) and answered 500 to unknown keys; here both routes are admin-only and
bad input is a 400.
Concurrent edits within this process are serialised by a lock, so a rule cannot be added twice
or deleted twice by two admins clicking at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil, validate
from oonibackend.accounts.auth import require_session
from oonibackend.appkeys import DB
from oonibackend.errors import APIError
from oonibackend.prioritization import countries
from oonibackend.prioritization.snapshot import RULES_SQL, TEST_LISTS
from oonibackend.readcache import READ_CACHE
from oonibackend.routes.body import read_json
from oonibackend.routes.params import Query
from oonibackend.storage import versions

log = logging.getLogger(__name__)
TAGS = ["URL priorities"]
FIELDS = ("category_code", "cc", "domain", "url", "priority")
_MAX_BODY = 16384
# `*` (any) or a value: category codes upper-case as written, country codes of any case.
_TEXT: dict[str, Callable[[str], object]] = {
    "category_code": validate.is_category_code,
    "cc": validate.is_country_code,
    "domain": re.compile(r"[A-Za-z0-9.\-_:\[\]]{1,255}", re.ASCII).fullmatch,
    "url": re.compile(r"https?://[^\s\\]{1,2000}", re.ASCII).fullmatch,
}
LOCK = web.AppKey("url_priorities_lock", asyncio.Lock)


def parse_rule(value: Any, name: str) -> dict[str, Any] | None:
    """A rule from an update body: empty or missing text fields mean `*` (any)."""
    if value in (None, {}, ""):
        return None
    if not isinstance(value, dict):
        raise APIError(f"Invalid {name}", 400, err_str="err_request_params")
    unknown = set(value) - set(FIELDS)
    if unknown:
        raise APIError(f"Invalid {name}: unknown keys {', '.join(sorted(unknown))}", 400,
                       err_str="err_request_params")
    rule: dict[str, Any] = {}
    for field in FIELDS[:4]:
        v = value.get(field) or "*"
        if not isinstance(v, str) or not (v.strip() == "*" or _TEXT[field](v.strip())):
            raise APIError(f"Invalid {field} in {name}", 400, err_str="err_request_params")
        rule[field] = v.strip().upper() if field == "cc" and v != "*" else v.strip()
    prio = value.get("priority")
    if isinstance(prio, str) and re.fullmatch(r"-?[0-9]{1,6}", prio.strip()):
        prio = int(prio)
    if not isinstance(prio, int) or isinstance(prio, bool) or not -10**6 < prio < 10**6:
        raise APIError(f"Invalid priority in {name}", 400, err_str="err_request_params")
    rule["priority"] = prio
    return rule


async def _rules(db: Any) -> list[dict[str, Any]]:
    rows = await db.query(RULES_SQL)
    return [{f: r[f] for f in FIELDS} for r in rows]


@docs(tags=TAGS, summary="List URL priority rules (admin)",
      responses={200: {"description": '{"rules": [...]}'}, 401: {"description": "Login"},
                 403: {"description": "Admin only"}})
async def list_rules(request: web.Request) -> web.Response:
    require_session(request, "admin")
    return jsonutil.response({"rules": await _rules(request.app[DB])}, cache=0)


@docs(tags=TAGS, summary="Add, change or delete a URL priority rule (admin)",
      description="Body: `old_entry` (the rule to delete or replace) and/or `new_entry` (the "
                  "rule to add), each `{category_code, cc, domain, url, priority}`; empty text "
                  "fields mean `*`. Applied by check-in within `probe.version_poll` s.",
      responses={200: {"description": "1"}, 400: {"description": "Invalid or duplicate rule"},
                 404: {"description": "old_entry not found"}})
async def update_rule(request: web.Request) -> web.Response:
    require_session(request, "admin")
    body = await read_json(request, _MAX_BODY, empty={}, err_str="err_request_params")
    if not isinstance(body, dict) or set(body) - {"old_entry", "new_entry"}:
        raise APIError("Invalid request", 400, err_str="err_request_params")
    old = parse_rule(body.get("old_entry"), "old_entry")
    new = parse_rule(body.get("new_entry"), "new_entry")
    if old is None and new is None:
        raise APIError("No proposed changes", 400, err_str="err_no_proposed_changes")
    if old == new:
        raise APIError("No proposed changes", 400, err_str="err_no_proposed_changes")
    db = request.app[DB]
    async with request.app[LOCK]:
        current = await _rules(db)
        if old is not None and old not in current:
            raise APIError("Rule not found", 404, err_str="err_rule_not_found", err_args=old)
        if new is not None and new in current:
            raise APIError("Duplicate rule", 400, err_str="err_duplicate_rule", err_args=new)
        rows = ([{**old, "sign": -1}] if old else []) + ([{**new, "sign": 1}] if new else [])
        await db.insert("url_priorities", rows)
        await versions.bump(db, versions.URL_PRIORITIES)  # check-in reloads at once
    log.info("url priority rule changed", extra={"old": old, "new": new})
    return jsonutil.response(1, cache=0)


# The week's counts are reused this long (a full week of fastpath per computation); the
# priorities always use the rules check-in currently applies.
COUNTS_CACHE_SECONDS = 60
COUNTS_MAX_EXECUTION_TIME = 60


@docs(tags=TAGS, summary="Every test-list entry with its last 7 days and its priority",
      parameters=[{"in": "query", "name": "format", "type": "string",
                   "description": "JSON (default) or CSV"}],
      responses={200: {"description": "[{domain, url, cc, category_code, msmt_cnt, "
                                      "anomaly_perc, priority}], sorted by cc then priority "
                                      "descending; or CSV with those columns"},
                 400: {"description": "Invalid format"}})
async def show_countries_prioritization(request: web.Request) -> web.Response:
    fmt = (Query(request.query).str("format") or "JSON").upper()
    if fmt not in ("JSON", "CSV"):
        raise APIError("Invalid format: use JSON or CSV", 400)
    db = request.app[DB]

    async def counts() -> list[dict[str, Any]]:
        return await db.query(countries.SQL,
                              settings={"max_execution_time": COUNTS_MAX_EXECUTION_TIME})

    rows = await request.app[READ_CACHE].get(("show_countries_prioritization",),
                                             COUNTS_CACHE_SECONDS, counts)
    rules = request.app[TEST_LISTS].snapshot.rules
    items = await asyncio.to_thread(countries.prioritize, rows, rules)
    if fmt == "CSV":
        text = await asyncio.to_thread(countries.to_csv, items)
        return web.Response(text=text, content_type="text/csv")
    return jsonutil.response(items, cache=1)


def setup(app: web.Application) -> None:
    app[LOCK] = asyncio.Lock()
    app.router.add_get("/api/_/url-priorities/list", list_rules)
    app.router.add_post("/api/_/url-priorities/update", update_rule)
    app.router.add_get("/api/_/show_countries_prioritization", show_countries_prioritization)
