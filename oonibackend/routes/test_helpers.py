"""Service discovery: test helpers, collectors and the legacy bouncer.

The addresses are the ones the legacy API hands out (docs/api.md §2.2); probes keep the
test-helpers object as their helper list, so its shape and keys are part of the protocol.
The web-connectivity HTTPS helpers come in a random order per request (crude load
balancing), the CloudFront front last. They are, in order of precedence: the configured
canary helpers (probe.th_canary_helpers, in the client's canary order), the live hosts of
`oonibackend rotate` (non-draining rows of test_helper_instances as https://<rdn>.<dns_zone>,
reloaded in the background every rotation.refresh_interval seconds: requests never query
the database), or the two legacy helpers while there are none.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs, response_schema
from marshmallow import Schema, fields

from oonibackend import clientip, jsonutil, validate
from oonibackend.appkeys import CONFIG, DB, METRICS
from oonibackend.background import refreshing
from oonibackend.errors import APIError
from oonibackend.routes.body import REFUSE, read_json
from oonibackend.routes.probe_common import TAGS, json_body

log = logging.getLogger(__name__)

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
    rotation, docs/api.md §2.2): q = IP as an integer mod 100 (12 when unparsable); q < 10
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
                      rng: random.Random | None = None, live_helpers: Sequence[str] = ()
                      ) -> dict[str, list[dict[str, str]]]:
    """A fresh test-helpers object (also `conf.test_helpers` of check-in).

    Web-connectivity HTTPS helpers: `canary_helpers` (probe.th_canary_helpers) in the client's
    canary order when configured; else `live_helpers` (the rotation's live hosts), or the two
    legacy helpers when there are none, in a random order per request.
    """
    out: dict[str, list[dict[str, str]]] = {
        name: [{"address": addr, "type": "legacy"}, {"address": addr, "type": "legacy"}]
        for name, addr in LEGACY_HELPERS.items()
    }
    if canary_helpers:
        addrs = canary_order(canary_helpers, client_ip)
    else:
        addrs = list(live_helpers or WEB_CONNECTIVITY_HTTPS)
        (rng or random).shuffle(addrs)
    https = [{"address": a, "type": "https"} for a in addrs]
    out["web-connectivity"] = [*https, dict(WEB_CONNECTIVITY_CLOUDFRONT)]
    return out


def request_test_helpers(request: web.Request) -> dict[str, list[dict[str, str]]]:
    """The test helpers for the client of `request`."""
    canary = request.app[CONFIG].probe.th_canary_helpers
    live = request.app.get(LIVE_HELPERS)
    return make_test_helpers(clientip.request_ip(request) if canary else "", canary,
                             live_helpers=live.addresses if live is not None else ())


# ---- the rotation's live hosts, reloaded in the background ----

# How long start-up waits for the first load before serving the static helpers.
FIRST_LOAD_WAIT = 2.0


def live_addresses(hosts: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """https://<rdn>.<dns_zone> of each (rdn, dns_zone), sorted, without duplicates or names
    that are not plain host names (the table is data: never hand probes a malformed URL)."""
    out = set()
    for rdn, zone in hosts:
        name = f"{rdn}.{zone}".lower()
        if len(name) <= 253 and validate.is_dns_name(name, min_labels=2):
            out.add(f"https://{name}")
    return tuple(sorted(out))


class LiveHelpers:
    """app[LIVE_HELPERS]: the live, non-draining rotation hosts, as https URLs."""

    def __init__(self, db: Any, interval: float, metrics: Any = None) -> None:
        self.db = db
        self.interval = interval
        self.addresses: tuple[str, ...] = ()
        self.failures = 0
        if metrics is not None:
            metrics.set("test_helpers_live", lambda: float(len(self.addresses)),
                        help="Rotation test helpers served by GET /api/v1/test-helpers")

    async def refresh(self) -> bool:
        """Reload; on failure keep the current set (log the traceback once in a row)."""
        from oonibackend.jobs.rotation.state import read_instances

        try:
            rows = await read_instances(self.db)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.failures += 1
            log.warning("live test helpers refresh failed, keeping the previous set",
                        extra={"error": str(e), "consecutive_failures": self.failures},
                        exc_info=self.failures == 1)
            return False
        new = live_addresses((r.rdn, r.dns_zone) for r in rows if not r.draining)
        if new != self.addresses:
            log.info("live test helpers changed", extra={"helpers": list(new)})
        self.addresses = new
        self.failures = 0
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()


LIVE_HELPERS = web.AppKey("live_test_helpers", LiveHelpers)


async def live_helpers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: app[LIVE_HELPERS] and its refresh task (none when the interval is 0)."""
    interval = app[CONFIG].rotation.refresh_interval
    live = LiveHelpers(app[DB], interval, app.get(METRICS))
    app[LIVE_HELPERS] = live
    if interval <= 0:
        yield
        return
    async with refreshing("live-test-helpers-refresh", live.refresh, live.run,
                          FIRST_LOAD_WAIT):
        yield


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
    data = await read_json(request, empty=REFUSE, message="Malformed request")
    try:
        first = data["net-tests"][0]
        name, version = first["name"], first["version"]
    except (KeyError, IndexError, TypeError) as e:
        raise APIError("Malformed request", 400) from e
    if not isinstance(name, str) or not isinstance(version, str):
        raise APIError("Malformed request", 400)
    return jsonutil.response(bouncer_answer(name, version), cache=0)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(live_helpers_ctx)
    app.router.add_get("/api/v1/test-helpers", get_test_helpers)
    app.router.add_get("/api/v1/collectors", get_collectors)
    app.router.add_post("/bouncer/net-tests", post_bouncer_net_tests)
