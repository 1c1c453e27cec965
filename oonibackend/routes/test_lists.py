"""Prioritized URL lists outside check-in: /api/v1/test-list/urls and the debug view.

Both are served from the in-memory snapshot (prioritization.snapshot), like check-in. The
legacy failover (a random sample of the global list when the database query failed) is not
needed: a failed refresh keeps serving the previous snapshot.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_apispec import docs, response_schema
from marshmallow import Schema, fields

from oonibackend import jsonutil, validate
from oonibackend.errors import APIError
from oonibackend.prioritization.snapshot import TEST_LISTS
from oonibackend.routes.params import checked
from oonibackend.routes.probe_common import TAGS

DEFAULT_LIMIT = 9999
_TRUE = frozenset({"true", "1", "yes"})


def parse_limit(value: str | None) -> int:
    """Absent or -1: the default (9999); other negatives are an error; 0 yields nothing."""
    if value is None or value.strip() in ("", "-1"):
        return DEFAULT_LIMIT
    try:
        n = int(value)
    except ValueError as e:
        raise APIError("Invalid limit", 400) from e
    if n < 0:
        raise APIError("Invalid limit", 400)
    return min(n, DEFAULT_LIMIT)


class URLItemSchema(Schema):
    category_code = fields.Str()
    country_code = fields.Str(metadata={"description": "XX for the global list"})
    url = fields.Str()


class URLListMetadataSchema(Schema):
    count = fields.Int()
    current_page = fields.Int()
    limit = fields.Int()
    next_url = fields.Str()
    pages = fields.Int()


class URLListSchema(Schema):
    metadata = fields.Nested(URLListMetadataSchema)
    results = fields.List(fields.Nested(URLItemSchema))


_Q_CATEGORIES = {"in": "query", "name": "category_codes", "type": "string",
                 "description": "Comma separated list of URL categories, all uppercase"}
_Q_LIMIT = {"in": "query", "name": "limit", "type": "integer",
            "description": "Maximum number of URLs to return (default 9999)"}


@docs(tags=TAGS, summary="Generate test URL list with prioritization",
      parameters=[
          {"in": "query", "name": "country_code", "type": "string",
           "description": "Two letter, uppercase country code"},
          {"in": "query", "name": "probe_cc", "type": "string",
           "description": "Two letter, uppercase country code (alternative to country_code)"},
          _Q_CATEGORIES, _Q_LIMIT,
          {"in": "query", "name": "debug", "type": "boolean",
           "description": "Include measurement counts and priority"},
      ])
@response_schema(URLListSchema, 200, description="URL test list")
async def get_test_list_urls(request: web.Request) -> web.Response:
    q = request.query
    cc = checked(validate.probe_cc, q.get("country_code") or q.get("probe_cc"), "country_code")
    categories = checked(validate.category_codes, q.get("category_codes"))
    limit = parse_limit(q.get("limit"))
    debug = q.get("debug", "").strip().lower() in _TRUE
    snap = request.app[TEST_LISTS].snapshot
    # Always country-wide counts (asn 0), as the legacy route.
    if debug:
        results = snap.debug_test_list(cc, 0, categories, limit)
    else:
        results = snap.test_list(cc, 0, categories, limit)
    body = {"metadata": {"count": len(results), "current_page": -1, "limit": -1,
                         "next_url": "", "pages": 1},
            "results": results}
    return jsonutil.response(body, cache=1)


@docs(tags=TAGS, summary="Generate prioritization debug data",
      parameters=[
          {"in": "query", "name": "probe_cc", "type": "string",
           "description": "Two letter, uppercase country code"},
          _Q_CATEGORIES,
          {"in": "query", "name": "probe_asn", "type": "string",
           "description": "Probe ASN (AS1234 or 1234)"},
          _Q_LIMIT,
      ],
      responses={"200": {"description": "URL test list and debug data: test_items, entries, "
                                        "prio_rules"}})
async def get_debug_prioritization(request: web.Request) -> web.Response:
    q = request.query
    cc = checked(validate.probe_cc, q.get("probe_cc"))
    categories = checked(validate.category_codes, q.get("category_codes"))
    asn = checked(validate.probe_asn, q.get("probe_asn"), allow_bare=True)
    # The legacy default (-1) produced exactly one item; here it means the default limit.
    limit = parse_limit(q.get("limit"))
    info = request.app[TEST_LISTS].snapshot.debug_info(cc, asn, categories, limit)
    return jsonutil.response(info, cache=0)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/test-list/urls", get_test_list_urls)
    app.router.add_get("/api/_/debug_prioritization", get_debug_prioritization)
