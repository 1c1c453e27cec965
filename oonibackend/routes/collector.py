"""Measurement collection: open report, submit, close, and the newer submit_measurement.

A measurement is answered with its uid only once it is durable in the spool; delivery to the
fastpath happens afterwards, in the background (oonibackend.spool.Forwarder).

Request bodies are decompressed by routes/body.py, capped at server.max_body_size
(decompression bombs).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import ids, jsonutil, validate
from oonibackend.anonc import envelope as anonc_envelope
from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.errors import APIError
from oonibackend.faulty import record as faulty
from oonibackend.routes import anonc
from oonibackend.routes.body import read_body
from oonibackend.spool import Forwarder, Spool, SpoolError, SpoolUnavailable

log = logging.getLogger(__name__)
# Set by collector_ctx below.
SPOOL = web.AppKey("spool", Spool)
FORWARDER = web.AppKey("forwarder", Forwarder)

BACKEND_VERSION = "1.3.5"


# -- request bodies ------------------------------------------------------------------------

def _json_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = jsonutil.loads(data)
    except jsonutil.JSONDecodeError:
        raise APIError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise APIError(f"{what} must be a JSON object")
    return obj


def _asn_number(value: Any) -> int:
    """`AS1234` -> 1234; anything else -> 0 (unknown), like the legacy collector."""
    try:
        return validate.asn(str(value or "AS0").upper(), prefixes=("AS",))
    except validate.InvalidValue:
        return 0


# -- storing -----------------------------------------------------------------------------------

async def _store(request: web.Request, cc: str, testname: str, asn: int, body: bytes,
                 endpoint: str) -> web.Response:
    """Spool `body`, answer with its uid once durable, then queue it for the fastpath."""
    metrics = request.app[METRICS]
    uid = ids.new_measurement_uid(cc, testname)
    hour_dir = ids.hour_dir_of(uid)
    try:
        await request.app[SPOOL].write(hour_dir, uid, body)
    except SpoolError as e:
        # Degraded (WAL replay pending, /health says so): one refusal per submission is
        # not worth an error line each.
        (log.debug if isinstance(e, SpoolUnavailable) else log.error)(
            "measurement not stored", extra={"error": str(e)})
        err = APIError("Measurement could not be stored, retry later", 503)
        err.headers["Retry-After"] = str(e.retry_after)
        raise err from None
    metrics.inc("measurements_received_total", help="Measurements spooled, by endpoint",
                endpoint=endpoint)
    if asn == 0 or cc == "ZZ":
        # The legacy API answered `{}` and dropped these. They are kept: an unknown network
        # or country is still a measurement that belongs to the public record.
        metrics.inc("as0_zz_measurements_total",
                    help="Measurements from an unknown network (AS0) or country (ZZ)")
    request.app[FORWARDER].enqueue(hour_dir, uid, body)
    # Never raises nor awaits: a mismatch is only queued for a batch insert (§2 of
    # docs/current_services.md).
    faulty.check_submission(request, cc, asn, uid, body)
    return jsonutil.response({"measurement_uid": uid}, cache=0)


# -- handlers ----------------------------------------------------------------------------------

@docs(summary="Probe Services: Open report",
      description="Returns a report_id for the legacy collector flow. Body: JSON with "
      "probe_cc, probe_asn (`AS<n>`) and test_name (other fields are ignored).")
async def open_report(request: web.Request) -> web.Response:
    try:
        data = jsonutil.loads(await read_body(request))
    except jsonutil.JSONDecodeError:
        raise APIError("JSON expected") from None
    if not isinstance(data, dict):
        raise APIError("JSON expected")
    cc = str(data.get("probe_cc") or "ZZ").upper().replace("_", "")
    cc = ids.normalize_cc(cc)
    asn = _asn_number(data.get("probe_asn"))
    test_name = str(data.get("test_name") or "").lower()
    try:
        rid = ids.new_report_id(test_name, cc, asn, request.app[CONFIG].server.collector_id)
    except ValueError:
        raise APIError("Invalid test_name") from None
    return jsonutil.response({
        "backend_version": BACKEND_VERSION,
        "supported_formats": ["yaml", "json"],
        "report_id": rid,
    }, cache=0)


@docs(summary="Probe Services: Submit measurement",
      description="Body: `{\"format\": \"json\", \"content\": {measurement}}`, optionally "
      "compressed (Content-Encoding zstd or gzip). Answers `{\"measurement_uid\": ...}` once "
      "the measurement is durably stored.")
async def submit_report(request: web.Request) -> web.Response:
    try:
        rid = ids.parse_report_id(request.match_info["report_id"])
    except ValueError:
        raise APIError("Incorrect format") from None
    body = await read_body(request)
    # The legacy API spooled any bytes (even garbage) and left the fastpath to choke on them;
    # here the body must at least be the documented envelope.
    msm = _json_object(body, "Body")
    if not isinstance(msm.get("content"), dict | str):
        raise APIError("content must be a JSON object (or a YAML string)")
    return await _store(request, rid.cc, rid.testname, rid.asn, body, "report")


@docs(summary="Probe Services: Close report",
      description="Kept for old probes; does nothing.")
async def close_report(request: web.Request) -> web.Response:
    return jsonutil.response({}, cache=3600)


@docs(summary="Probe Services: Submit measurement (without a report)",
      description="Body: `{format: \"json\", content: <measurement as a JSON string or "
      "object>, nym, zkp_request, manifest_version, protocol_version}`. The credential "
      "fields (anonymous credentials, may be null) are checked and dropped: only the verdict "
      "is stored. Answers `{measurement_uid, report_id, verification_status, submit_response, "
      "protocol_version, error}` once the measurement is durably stored.")
async def submit_measurement(request: web.Request) -> web.Response:
    req = _json_object(await read_body(request), "Body")
    fmt = req.get("format", "json")
    if fmt != "json":
        raise APIError("Unsupported format (expected \"json\")")
    content = req.get("content")
    raw_content: bytes | None = None
    if isinstance(content, str):
        proof_text = content
        try:
            raw_content = content.encode("utf-8")
        except UnicodeEncodeError:
            raise APIError("content is not valid JSON") from None
        content = _json_object(raw_content, "content")
    elif isinstance(content, dict):
        # No exact bytes to prove or embed: its compact JSON serves both (encoded once).
        raw_content = jsonutil.dumps(content)
        proof_text = raw_content.decode()
    else:
        raise APIError("content must be a measurement (JSON object or string)")
    try:
        testname = ids.testname_of(content.get("test_name"))
    except ValueError:
        raise APIError("Invalid test_name") from None
    cc = ids.normalize_cc(content.get("probe_cc"))
    asn = _asn_number(content.get("probe_asn"))
    # The proof is checked against the content as sent (before a report_id is assigned);
    # nym and zkp_request go no further than this call (docs/current_services.md §1).
    verdict = await anonc.submission_verdict(request, req, content, proof_text)
    try:
        ids.parse_report_id(content.get("report_id"))
    except ValueError:
        # Downstream indexes measurements by report_id: give one to measurements without.
        try:
            content["report_id"] = ids.new_report_id(
                content["test_name"], cc, asn, request.app[CONFIG].server.collector_id)
            raw_content = None
        except ValueError:
            pass  # test name too long for a report id: keep the probe's value
    # Spool the legacy collector envelope (plus the kept credential metadata and the verdict)
    # so the fastpath and the uploader see one format; an unchanged content string is
    # embedded byte for byte.
    body = anonc_envelope.build(raw_content if raw_content is not None
                                else jsonutil.dumps(content), req, verdict.code)
    stored = await _store(request, cc, testname, asn, body, "submit_measurement")
    return anonc.submission_answer(stored, content.get("report_id"), verdict)


# -- wiring ------------------------------------------------------------------------------------

async def collector_ctx(app: web.Application) -> AsyncIterator[None]:
    """Spool (replays a crashed run's WAL) and forwarder live as long as the app.

    A replay that fails (disk full) does not stop the API: the spool starts degraded, the
    submission routes answer 503 with Retry-After and /health says `spool_recovery_pending`
    until a background retry succeeds."""
    cfg, metrics = app[CONFIG], app[METRICS]
    spool = Spool(cfg, metrics)
    await spool.start(degraded_ok=True)
    forwarder = Forwarder(cfg, spool, metrics)
    try:
        await forwarder.start()
        app[SPOOL] = spool
        app[FORWARDER] = forwarder
        yield
    finally:
        await forwarder.close()
        await spool.close()


def setup(app: web.Application) -> None:
    # Bodies are decompressed by body.read_body with a size cap (make_app turns aiohttp's off).
    app.cleanup_ctx.append(collector_ctx)
    app.cleanup_ctx.append(faulty.geoip_anomalies_ctx)
    app.router.add_post("/report", open_report)
    app.router.add_post("/report/{report_id}", submit_report)
    app.router.add_post("/report/{report_id}/close", close_report)
    app.router.add_post("/api/v1/submit_measurement", submit_measurement)
