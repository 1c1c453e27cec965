"""POST /api/v1/geolookup: country and network of many addresses (browser and web probes).

The legacy API answered 500 for an invalid address and had no bound on the list; here both
are a 400 with the one error format.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apispec import docs, response_schema
from marshmallow import Schema, fields

from oonibackend import jsonutil
from oonibackend.errors import APIError
from oonibackend.geoip import GEOIP
from oonibackend.routes.body import read_object
from oonibackend.routes.probe_common import TAGS, json_body

MAX_ADDRESSES = 1000


class GeolookupRequestSchema(Schema):
    addresses = fields.List(fields.Str(metadata={"example": "1.2.3.4"}), required=True,
                            metadata={"description": f"IP addresses (at most {MAX_ADDRESSES})"})


class GeolocationSchema(Schema):
    cc = fields.Str(allow_none=True, metadata={"description": "country code or null"})
    asn = fields.Int(allow_none=True, metadata={"description": "AS number or null"})
    as_name = fields.Str(allow_none=True, metadata={"description": "AS organisation or null"})


class GeolookupResponseSchema(Schema):
    v = fields.Int(metadata={"description": "response format version"})
    geolocation = fields.Dict(keys=fields.Str(), values=fields.Nested(GeolocationSchema))


@docs(tags=TAGS, summary="Probe Services: geolookup for multiple IP addresses")
@json_body(GeolookupRequestSchema, "IP addresses")
@response_schema(GeolookupResponseSchema, 200)
async def post_geolookup(request: web.Request) -> web.Response:
    data = await read_object(request, message="JSON expected")
    addresses = data.get("addresses")
    if not isinstance(addresses, list):
        raise APIError("addresses must be a list of IP addresses", 400)
    if len(addresses) > MAX_ADDRESSES:
        raise APIError(f"Too many addresses (at most {MAX_ADDRESSES})", 400)
    geo = request.app[GEOIP]
    out: dict[str, Any] = {}
    for ip in addresses:
        if not isinstance(ip, str) or len(ip) > 64:
            raise APIError("Invalid IP address", 400)
        try:
            cc, asn, name = geo.lookup(ip)
        except ValueError as e:
            raise APIError(f"Invalid IP address: {ip}", 400) from e
        out[ip] = {"cc": cc, "asn": asn, "as_name": name}
    return jsonutil.response({"v": 1, "geolocation": out}, cache=0)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/geolookup", post_geolookup)
