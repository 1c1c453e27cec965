"""Check-in (docs/api.md §2.1): what a probe should run, and where.

POST /api/v1/check-in is the busiest probe call: it geolocates the caller, picks the URL list
from the in-memory snapshot (no database query on this path) and mints a report id per test.
POST /api/_/check-in is the experimental v2 shape (`nettests` with targets).

Differences from the legacy API, all on bad input: an invalid probe_cc / probe_asn / category
code, or a field of the wrong type, is a 400 `{"error": ...}` instead of a 500; category codes
are upper-cased. Feature flags follow OONI's current service (docs/current_services.md §7):
the configured `conf.features`, `webconnectivity_0.5: true` among them, for every probe.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs, response_schema
from marshmallow import Schema, fields

from oonibackend import clientip, jsonutil, validate
from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.errors import APIError
from oonibackend.ids import new_report_id
from oonibackend.prioritization.rules import url_limit
from oonibackend.prioritization.snapshot import TEST_LISTS
from oonibackend.routes.body import read_object
from oonibackend.routes.nettests import CHECKIN_V1_TESTS, CHECKIN_V2_TESTS, FIXED_TARGETS
from oonibackend.routes.params import checked
from oonibackend.routes.probe_common import TAGS, geolocate, json_body
from oonibackend.routes.test_helpers import request_test_helpers


@dataclass(frozen=True)
class CheckIn:
    """A validated check-in request (probe-declared values)."""

    probe_cc: str
    probe_asn: int
    run_type: str
    charging: bool
    category_codes: list[str]

    @property
    def url_limit(self) -> int:
        return url_limit(self.run_type, self.charging)


def _optional(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any
              ) -> Any:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise APIError(f"Invalid {key}", 400)
    return value


def parse_checkin(data: dict[str, Any]) -> CheckIn:
    """Validate the fields check-in uses; the others (platform, software_*, on_wifi) are
    informational and ignored, as by the legacy API."""
    wc = _optional(data, "web_connectivity", dict, {})
    return CheckIn(
        probe_cc=checked(validate.probe_cc, data.get("probe_cc")),
        probe_asn=checked(validate.probe_asn, data.get("probe_asn")),
        run_type=_optional(data, "run_type", str, "timed"),
        charging=bool(_optional(data, "charging", (bool, int), True)),
        category_codes=checked(validate.category_codes, wc.get("category_codes"),
                               "web_connectivity.category_codes"),
    )


@dataclass(frozen=True)
class Resolved:
    """What the response reports (geolocation) and what the lists and ids use."""

    geo_cc: str
    geo_asn: str
    network_name: str | None
    cc: str
    asn: int
    ip: str


def resolve(request: web.Request, req: CheckIn) -> Resolved:
    """Geolocate the caller. The response always carries the looked-up values; the URL list
    and report ids use the declared ones unless the probe declared nothing (ZZ and AS0)."""
    ip = clientip.request_ip(request)
    geo_cc, geo_asn, name = geolocate(request, ip)
    if req.probe_cc == "ZZ" and req.probe_asn == 0:
        cc, asn = geo_cc, int(geo_asn[2:])
    else:
        cc, asn = req.probe_cc, req.probe_asn
        m = request.app[METRICS]
        if req.probe_cc != geo_cc:
            m.inc("checkin_geoip_mismatch_total", help="Declared vs looked-up check-in location",
                  field="cc")
        if f"AS{req.probe_asn}" != geo_asn:
            m.inc("checkin_geoip_mismatch_total", help="Declared vs looked-up check-in location",
                  field="asn")
    return Resolved(geo_cc, geo_asn, name, cc, asn, ip)


def _url_list(request: web.Request, req: CheckIn, res: Resolved) -> list[dict[str, Any]]:
    store = request.app[TEST_LISTS]
    return store.snapshot.test_list(res.cc, res.asn, req.category_codes, req.url_limit)


def _report_ids(request: web.Request, names: tuple[str, ...], res: Resolved) -> dict[str, str]:
    cid = request.app[CONFIG].server.collector_id
    return {name: new_report_id(name, res.cc, res.asn, cid) for name in names}


def _header(res: Resolved, version: int) -> dict[str, Any]:
    return {"v": version, "probe_cc": res.geo_cc, "probe_asn": res.geo_asn,
            "probe_network_name": res.network_name,
            "utc_time": jsonutil.rfc3339(dt.datetime.now(dt.UTC))}


def _conf(request: web.Request) -> dict[str, Any]:
    """Feature flags and test helpers. The flags are the same for every probe, as in OONI's
    current service (docs/current_services.md §7): `webconnectivity_0.5` is no longer a
    canary by address or version, and the private check-in gets the same flags."""
    features = {k: bool(v) for k, v in request.app[CONFIG].probe.features.items()}
    return {"features": features, "test_helpers": request_test_helpers(request)}


def _no_cache(body: dict[str, Any]) -> web.Response:
    """Exactly `Cache-Control: no-cache`, as OONI's check-in answers (a fresh list and ids
    per call)."""
    return jsonutil.response(body, headers={"Cache-Control": "no-cache"})


class WebConnectivityCategoriesSchema(Schema):
    category_codes = fields.List(fields.Str(metadata={"example": "NEWS"}), metadata={
        "description": "URL categories (a comma-separated string is accepted too)"})


class CheckInRequestSchema(Schema):
    probe_cc = fields.Str(metadata={"example": "IT", "description": "Two letter country code"})
    probe_asn = fields.Str(metadata={"example": "AS1234", "description": "AS<number>"})
    platform = fields.Str(metadata={"example": "android"})
    software_name = fields.Str(metadata={"example": "ooniprobe"})
    software_version = fields.Str(metadata={"example": "0.0.1"})
    on_wifi = fields.Bool()
    charging = fields.Bool(metadata={"description": "true when charging (default true)"})
    run_type = fields.Str(metadata={"example": "timed", "description": "timed or manual"})
    web_connectivity = fields.Nested(WebConnectivityCategoriesSchema)


class CheckInConfSchema(Schema):
    features = fields.Dict(keys=fields.Str(), values=fields.Bool(),
                           metadata={"description": "feature flags"})
    test_helpers = fields.Dict(metadata={"description": "as GET /api/v1/test-helpers"})


class CheckInResponseSchema(Schema):
    v = fields.Int(metadata={"description": "response format version (1)"})
    probe_cc = fields.Str(metadata={"description": "probe CC inferred from GeoIP or ZZ"})
    probe_asn = fields.Str(metadata={"description": "probe ASN inferred from GeoIP or AS0"})
    probe_network_name = fields.Str(allow_none=True, metadata={
        "description": "probe network name inferred from GeoIP or null"})
    utc_time = fields.Str(metadata={"description": "current UTC time as YYYY-mm-ddTHH:MM:SSZ"})
    conf = fields.Nested(CheckInConfSchema)
    tests = fields.Dict(metadata={
        "description": "test name -> {report_id}; web_connectivity also has urls "
                       "[{category_code, country_code, url}]"})


class NettestTargetSchema(Schema):
    attributes = fields.Dict()
    input = fields.Str()
    options = fields.Dict()


class NettestSchema(Schema):
    test_name = fields.Str()
    report_id = fields.Str()
    targets = fields.List(fields.Nested(NettestTargetSchema))


class CheckInV2ResponseSchema(Schema):
    v = fields.Int(metadata={"description": "response format version (2)"})
    probe_cc = fields.Str()
    probe_asn = fields.Str()
    probe_network_name = fields.Str(allow_none=True)
    utc_time = fields.Str()
    conf = fields.Nested(CheckInConfSchema)
    nettests = fields.List(fields.Nested(NettestSchema))


@docs(tags=TAGS, summary="Probe Services: check-in. Probes ask for tests to be run",
      description="Give a URL test list to a probe running web_connectivity tests and a "
                  "report id per test. The body is read as JSON whatever its Content-Type.")
@json_body(CheckInRequestSchema, "probe_asn and probe_cc are not provided if unknown")
@response_schema(CheckInResponseSchema, 200)
async def post_check_in(request: web.Request) -> web.Response:
    req = parse_checkin(await read_object(request, message="JSON expected"))
    res = resolve(request, req)
    tests: dict[str, dict[str, Any]] = {
        name: {"report_id": rid}
        for name, rid in _report_ids(request, CHECKIN_V1_TESTS, res).items()
    }
    tests["web_connectivity"]["urls"] = _url_list(request, req, res)
    body = _header(res, 1)
    body["conf"] = _conf(request)
    body["tests"] = tests
    return _no_cache(body)


@docs(tags=TAGS, summary="Private, experimental check-in",
      description="Same inputs as /api/v1/check-in; answers v 2 with `nettests` and targets.")
@json_body(CheckInRequestSchema, "probe_asn and probe_cc are not provided if unknown")
@response_schema(CheckInV2ResponseSchema, 200)
async def post_private_check_in(request: web.Request) -> web.Response:
    req = parse_checkin(await read_object(request, message="JSON expected"))
    res = resolve(request, req)
    rids = _report_ids(request, CHECKIN_V2_TESTS, res)
    urls = _url_list(request, req, res)
    nettests = []
    for name in CHECKIN_V2_TESTS:
        if name == "web_connectivity":
            targets = [{"attributes": {"category_code": u["category_code"],
                                       "country_code": u["country_code"]},
                        "input": u["url"], "options": {}} for u in urls]
        else:
            targets = [{"attributes": {}, "input": t, "options": {}}
                       for t in FIXED_TARGETS.get(name, ())]
        nettests.append({"test_name": name, "report_id": rids[name], "targets": targets})
    body = _header(res, 2)
    body["conf"] = _conf(request)
    body["nettests"] = nettests
    return _no_cache(body)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/check-in", post_check_in)
    app.router.add_post("/api/_/check-in", post_private_check_in)
