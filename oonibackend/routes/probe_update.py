"""PUT /api/v1/update/{client_id}: a probe reports what it is and runs (docs/current_services.md
§4). Nothing is stored; the report becomes Prometheus metrics:

* `oonibackend_probe_update_info{...} 1`: the latest report's fields, as OONI's ooniprobe
  service exports them (`supported_tests` sorted and `;`-joined). An info metric holds one
  series, the latest values, so hostile values cannot grow the scrape; each value is cut to
  MAX_VALUE characters. `password` and `token` are credentials and never exported.
* `oonibackend_probe_updates_total{platform, software_name}`: reports counted by values of a
  fixed set (others count as `other`), so the label set stays bounded.

`client_id` is ignored, as in OONI's service.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import METRICS
from oonibackend.errors import APIError
from oonibackend.routes.body import read_json

TAGS = ["Probe services"]
MAX_BODY = 16384
MAX_VALUE = 64
STRING_FIELDS = ("probe_cc", "probe_asn", "platform", "software_name", "software_version",
                 "network_type", "available_bandwidth", "language", "token", "probe_family",
                 "probe_id", "password")
SECRET_FIELDS = frozenset({"token", "password"})
MAX_TESTS = 200
PLATFORMS = frozenset({"android", "ios", "linux", "macos", "windows", "unknown"})
SOFTWARE_NAMES = frozenset({
    "ooniprobe-android", "ooniprobe-android-unattended", "ooniprobe-ios", "ooniprobe-desktop",
    "ooniprobe-desktop-unattended", "ooniprobe-cli", "ooniprobe-cli-unattended", "miniooni",
    "ooniprobe-engine"})


def parse_update(body: Any) -> dict[str, str | list[str]]:
    """The non-null known fields of an update body; APIError (400) for a wrong shape or type.
    Unknown keys are ignored."""
    if not isinstance(body, dict):
        raise APIError("Invalid request: a JSON object body is required", 400)
    out: dict[str, str | list[str]] = {}
    for field in STRING_FIELDS:
        v = body.get(field)
        if v is None:
            continue
        if not isinstance(v, str):
            raise APIError(f"Invalid {field}: a string expected", 400)
        out[field] = v
    tests = body.get("supported_tests")
    if tests is not None:
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise APIError("Invalid supported_tests: a list of strings expected", 400)
        if len(tests) > MAX_TESTS:
            raise APIError(f"Invalid supported_tests: at most {MAX_TESTS} items", 400)
        out["supported_tests"] = tests
    return out


def _clean(value: str) -> str:
    """Printable characters only, at most MAX_VALUE of them."""
    return "".join(c for c in value if c.isprintable())[:MAX_VALUE]


def info_values(update: dict[str, str | list[str]]) -> dict[str, str]:
    """The info metric's labels: every field but the credentials, bounded in length."""
    out = {}
    for k, v in update.items():
        if k in SECRET_FIELDS:
            continue
        out[k] = _clean(";".join(sorted(v)) if isinstance(v, list) else v)
    return out


def bucket(value: Any, known: frozenset[str]) -> str:
    """A counter label: the value if it is one of `known`, else `other` (absent: `unknown`)."""
    if not isinstance(value, str) or not value:
        return "unknown"
    return value if value in known else "other"


@docs(tags=TAGS, summary="Report a probe's configuration (exported as metrics)",
      description="Body: a JSON object with any of the strings `probe_cc`, `probe_asn`, "
                  "`platform`, `software_name`, `software_version`, `network_type`, "
                  "`available_bandwidth`, `language`, `token`, `probe_family`, `probe_id`, "
                  "`password`, and `supported_tests` (a list of strings); unknown keys are "
                  "ignored. Nothing is stored.",
      responses={200: {"description": '{"status": "ok"}'},
                 400: {"description": "Not a JSON object, or a field of the wrong type"}})
async def update(request: web.Request) -> web.Response:
    body = await read_json(request, MAX_BODY)  # no body: None, a 400 below
    fields = parse_update(body)
    m = request.app[METRICS]
    m.info("probe_update", info_values(fields),
           help="The latest probe update report (PUT /api/v1/update)")
    m.inc("probe_updates", help="Probe update reports by platform and software",
          platform=bucket(fields.get("platform"), PLATFORMS),
          software_name=bucket(fields.get("software_name"), SOFTWARE_NAMES))
    return jsonutil.response({"status": "ok"})


def setup(app: web.Application) -> None:
    app.router.add_put("/api/v1/update/{client_id}", update)
