"""Static service discovery: test helpers, collectors and the legacy bouncer.

The addresses are the ones the legacy API hands out (api_inventory §2.2); probes keep the
test-helpers object as their helper list, so its shape and keys are part of the protocol.
The web-connectivity HTTPS helpers come in a random order per request (crude load
balancing between the two), the CloudFront front last.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs, response_schema
from marshmallow import Schema, fields

from oonibackend import clientip, jsonutil
from oonibackend.appkeys import CONFIG
from oonibackend.errors import APIError
from oonibackend.routes.probe_common import TAGS, json_body, read_json

WEB_CONNECTIVITY_HTTPS = ("https://6.th.ooni.org", "https://5.th.ooni.org")
WEB_CONNECTIVITY_CLOUDFRONT = {"address": "https://d33d1gs9kpq1c5.cloudfront.net",
                               "front": "d33d1gs9kpq1c5.cloudfront.net", "type": "cloudfront"}
LEGACY_HELPERS = {
    "dns": "37.218.241.93:57004",
    "http-return-json-headers": "http://37.218.241.94:80",
    "ssl": "https://37.218.241.93",
    "tcp-echo": "37.218.241.93",
    "traceroute": "37.218.241.93",
}

ONION_COLLECTOR = {"address": "httpo://guegdifjy7bjpequ.onion", "type": "onion"}
HTTPS_COLLECTOR = {"address": "https://ams-pg.ooni.org:443", "type": "https"}
CLOUDFRONT_COLLECTOR = {"address": "https://dkyhjv0wpi2dk.cloudfront.net",
                        "front": "dkyhjv0wpi2dk.cloudfront.net", "type": "cloudfront"}
# Each collector twice, as the legacy API answered (old probes pick by position).
COLLECTORS = [ONION_COLLECTOR, HTTPS_COLLECTOR, CLOUDFRONT_COLLECTOR] * 2


def canary_order(helpers: Sequence[str], ip: str) -> list[str]:
    """Deterministic per-client order of helpers whose first entry is a canary (OONI's 0.th
    rotation, api_inventory §2.2): q = IP as an integer mod 100 (12 when unparsable); q < 10
    keeps the order, otherwise the list starts at entry q mod (n-1) + 1. With four helpers the
    canary comes first for 10 % of clients and each other helper for 30 %."""
    try:
        q = int(ipaddress.ip_address(ip)) % 100
    except ValueError:
        q = 12
    helpers = list(helpers)
    if q < 10 or len(helpers) < 2:
        return helpers
    start = q % (len(helpers) - 1) + 1
    return helpers[start:] + helpers[:start]


def make_test_helpers(client_ip: str = "", canary_helpers: Sequence[str] = (),
                      rng: random.Random | None = None) -> dict[str, list[dict[str, str]]]:
    """A fresh test-helpers object (also `conf.test_helpers` of check-in).

    Web-connectivity HTTPS helpers: `canary_helpers` (probe.th_canary_helpers) in the client's
    canary order when configured, else the two legacy helpers in a random order per request.
    """
    out: dict[str, list[dict[str, str]]] = {
        name: [{"address": addr, "type": "legacy"}, {"address": addr, "type": "legacy"}]
        for name, addr in LEGACY_HELPERS.items()
    }
    if canary_helpers:
        addrs = canary_order(canary_helpers, client_ip)
    else:
        addrs = list(WEB_CONNECTIVITY_HTTPS)
        (rng or random).shuffle(addrs)
    https = [{"address": a, "type": "https"} for a in addrs]
    out["web-connectivity"] = [*https, dict(WEB_CONNECTIVITY_CLOUDFRONT)]
    return out


def request_test_helpers(request: web.Request) -> dict[str, list[dict[str, str]]]:
    """The test helpers for the client of `request`."""
    canary = request.app[CONFIG].probe.th_canary_helpers
    return make_test_helpers(clientip.request_ip(request) if canary else "", canary)


def bouncer_answer(name: str, version: str) -> dict[str, Any]:
    return {"net-tests": [{
        "collector": ONION_COLLECTOR["address"],
        "collector-alternate": [
            {"type": "https", "address": "https://ams-pg.ooni.org"},
            {"front": "dkyhjv0wpi2dk.cloudfront.net", "type": "cloudfront",
             "address": "https://dkyhjv0wpi2dk.cloudfront.net"},
        ],
        "input-hashes": None,
        "name": name,
        "test-helpers": {
            "tcp-echo": "37.218.241.93",
            "http-return-json-headers": "http://37.218.241.94:80",
            "web-connectivity": "httpo://y3zq5fwelrzkkv3s.onion",
        },
        "test-helpers-alternate": {
            "web-connectivity": [
                {"type": "https", "address": "https://wcth.ooni.io"},
                {"front": "d33d1gs9kpq1c5.cloudfront.net", "type": "cloudfront",
                 "address": "https://d33d1gs9kpq1c5.cloudfront.net"},
            ],
        },
        "version": version,
    }]}


class ServiceAddressSchema(Schema):
    address = fields.Str(required=True)
    type = fields.Str(required=True, metadata={"description": "legacy, https, onion, cloudfront"})
    front = fields.Str(metadata={"description": "CloudFront fronting domain"})


class TestHelpersSchema(Schema):
    dns = fields.List(fields.Nested(ServiceAddressSchema))
    http_return_json_headers = fields.List(fields.Nested(ServiceAddressSchema),
                                           data_key="http-return-json-headers")
    ssl = fields.List(fields.Nested(ServiceAddressSchema))
    tcp_echo = fields.List(fields.Nested(ServiceAddressSchema), data_key="tcp-echo")
    traceroute = fields.List(fields.Nested(ServiceAddressSchema))
    web_connectivity = fields.List(fields.Nested(ServiceAddressSchema),
                                   data_key="web-connectivity")


class BouncerNetTestSchema(Schema):
    name = fields.Str(required=True)
    version = fields.Str(required=True)


class BouncerRequestSchema(Schema):
    net_tests = fields.List(fields.Nested(BouncerNetTestSchema), required=True,
                            data_key="net-tests")


@docs(tags=TAGS, summary="Probe Services: List test helpers",
      description="Web-connectivity HTTPS helpers come in a random order per request.")
@response_schema(TestHelpersSchema, 200, description="Test helpers by name")
async def get_test_helpers(request: web.Request) -> web.Response:
    return jsonutil.response(request_test_helpers(request),
                             headers={"Cache-Control": "max-age=0"})


@docs(tags=TAGS, summary="Probe Services: list collectors")
@response_schema(ServiceAddressSchema(many=True), 200, description="List available collectors")
async def get_collectors(request: web.Request) -> web.Response:
    return jsonutil.response(COLLECTORS, cache=3600)


@docs(tags=TAGS, summary="Probe Services: (legacy)",
      description="Legacy bouncer: collector and test helpers for the first net-test.")
@json_body(BouncerRequestSchema, "open report data")
async def post_bouncer_net_tests(request: web.Request) -> web.Response:
    data = await read_json(request, "Malformed request")
    try:
        first = data["net-tests"][0]
        name, version = first["name"], first["version"]
    except (KeyError, IndexError, TypeError) as e:
        raise APIError("Malformed request", 400) from e
    if not isinstance(name, str) or not isinstance(version, str):
        raise APIError("Malformed request", 400)
    return jsonutil.response(bouncer_answer(name, version), cache=0)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/test-helpers", get_test_helpers)
    app.router.add_get("/api/v1/collectors", get_collectors)
    app.router.add_post("/bouncer/net-tests", post_bouncer_net_tests)
