"""Anonymous credentials (docs/current_services.md §1):

* GET  /api/v1/manifest          the current manifest and its version (cacheable a minute)
* POST /api/v1/sign_credential   a credential for the current manifest version
plus the verdict step of POST /api/v1/submit_measurement (`submission_verdict`, called by
routes/collector.py).

Errors carry our usual `{"error": message}` and, for the probe (OONI's FastAPI shape, read
as `detail.error`), `"detail": {"error": code, "message": message}` in the same body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import ooniauth_py
from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.anonc import verdict as vd
from oonibackend.anonc.service import AnoncService, Busy
from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.errors import APIError
from oonibackend.routes.body import read_body
from oonibackend.routes.links import base_url, configured

# Set by anonc_ctx below; absent when [anonc] is disabled.
ANONC = web.AppKey("anonc", AnoncService)


def anonc_error(code: str, message: str, status: int) -> APIError:
    return APIError(message, status, detail={"error": code, "message": message})


def _busy() -> APIError:
    err = anonc_error("busy", "Too many credential requests, retry later", 503)
    err.headers["Retry-After"] = "1"
    return err


def _service(request: web.Request) -> AnoncService | None:
    return request.app.get(ANONC)


def _min_protocol(request: web.Request) -> tuple[int, ...]:
    return vd.parse_version(request.app[CONFIG].anonc.min_protocol_version) or (0,)


# -- routes ----------------------------------------------------------------------------------

@docs(summary="Anonymous credentials: manifest",
      description="The current manifest (nym scope, submission policy, public parameters) "
      "and `meta.version`, the version a probe names in sign_credential and "
      "submit_measurement.")
async def get_manifest(request: web.Request) -> web.Response:
    svc = _service(request)
    if svc is None or svc.current is None:
        raise anonc_error("manifest_not_found", "No manifest: anonymous credentials are "
                          "disabled on this server", 404)
    m = svc.current.manifest
    cfg = request.app[CONFIG].anonc
    url = (configured(cfg.manifest_url) if cfg.manifest_url
           else base_url(request) + "api/v1/manifest").rstrip("/")
    return jsonutil.response({
        "manifest": m.document,
        "meta": {"version": m.version,
                 "last_modification_date": jsonutil.rfc3339(m.last_modified),
                 "manifest_url": url,
                 "library_version": ooniauth_py.__version__,
                 "protocol_version": ooniauth_py.get_protocol_version()},
    }, cache=60)


@docs(summary="Anonymous credentials: sign a credential",
      description="Body `{manifest_version, credential_sign_request}`; answers "
      "`{credential_sign_response, emission_day}`. 404 for a manifest version that is not "
      "the current one.")
async def sign_credential(request: web.Request) -> web.Response:
    try:
        req = jsonutil.loads(await read_body(request))
    except jsonutil.JSONDecodeError:
        req = None
    if not isinstance(req, dict):
        raise anonc_error("deserialization_failed", "Body must be a JSON object", 400)
    svc = _service(request)
    creds = svc.current if svc is not None else None
    if creds is None or req.get("manifest_version") != creds.manifest.version:
        raise anonc_error("manifest_not_found", "Unknown manifest version: fetch "
                          "/api/v1/manifest again", 404)
    csr = req.get("credential_sign_request")
    if not isinstance(csr, str) or not csr:
        raise anonc_error("deserialization_failed",
                          "credential_sign_request must be a base64 string", 400)
    assert svc is not None
    try:
        resp = await svc.sign(creds, csr)
    except Busy:
        raise _busy() from None
    except ooniauth_py.DeserializationFailed as e:
        raise anonc_error("deserialization_failed", str(e), 400) from None
    except Exception as e:
        code = vd.library_error(e)
        raise anonc_error(code, str(e) if code != "unknown_error"
                          else "Credential sign request refused", 403) from None
    request.app[METRICS].inc("anonc_credentials_signed_total", help="Credentials signed")
    return jsonutil.response({"credential_sign_response": resp,
                              "emission_day": ooniauth_py.ServerState.today()}, cache=0)


# -- submit_measurement ----------------------------------------------------------------------

async def submission_verdict(request: web.Request, req: Mapping[str, Any],
                             content: Mapping[str, Any], content_text: str) -> vd.Verdict:
    """The verification status of a submission (docs/current_services.md §1); raises a 503
    only when too many proofs are already waiting (nothing is stored then)."""
    svc = _service(request)
    creds = svc.current if svc is not None else None
    step = vd.precheck(req, content, content_text,
                       creds.manifest.version if creds is not None else None,
                       creds.manifest.rules if creds is not None else (),
                       _min_protocol(request))
    if isinstance(step, vd.Verdict):
        if step.error is not None:
            request.app[METRICS].inc("anonc_verifications_total",
                                     help="Proofs checked, by verdict",
                                     status=step.status, error=step.error)
        return step
    assert svc is not None and creds is not None
    try:
        return await svc.verify(creds, step)
    except Busy:
        raise _busy() from None


def submission_answer(stored: web.Response, report_id: Any, verdict: vd.Verdict
                      ) -> web.Response:
    """submit_measurement's answer: the stored uid plus the verdict fields the probe reads
    (`submit_response` rotates its credential)."""
    assert isinstance(stored.body, bytes)
    answer = jsonutil.loads(stored.body)
    answer.update(report_id=report_id, verification_status=verdict.status,
                  submit_response=verdict.submit_response,
                  protocol_version=ooniauth_py.get_protocol_version(), error=verdict.error)
    headers = {k: v for k, v in stored.headers.items()
               if k.lower() not in ("content-type", "content-length")}
    return jsonutil.response(answer, stored.status, headers=headers)


# -- wiring ----------------------------------------------------------------------------------

async def anonc_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    if not cfg.anonc.enabled:
        yield
        return
    svc = AnoncService(cfg, app[METRICS])
    await svc.start()
    app[ANONC] = svc
    try:
        yield
    finally:
        await svc.close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(anonc_ctx)
    app.router.add_get("/api/v1/manifest", get_manifest)
    app.router.add_post("/api/v1/sign_credential", sign_credential)
