"""Probe register / login (docs/api.md §2.3) and the probe-token check used by config routes.

Stateless: register signs a client_id, login exchanges it for a probe token with an expiry.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import docs, response_schema
from marshmallow import Schema, fields

from oonibackend import jsonutil, probe_tokens
from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.errors import APIError
from oonibackend.routes.body import read_object
from oonibackend.routes.probe_common import TAGS, json_body

log = logging.getLogger(__name__)

# The HS256 key, read once per app: Config.jwt_secret() may read a file on every call.
JWT_KEY = web.AppKey("probe_jwt_key", str)


async def jwt_key_ctx(app: web.Application) -> AsyncIterator[None]:
    app[JWT_KEY] = app[CONFIG].jwt_secret()
    yield


def jwt_key(app: web.Application) -> str:
    return app[JWT_KEY]


class RegisterRequestSchema(Schema):
    password = fields.Str(metadata={"description": "random string chosen by the probe"})
    platform = fields.Str()
    probe_asn = fields.Str()
    probe_cc = fields.Str()
    software_name = fields.Str()
    software_version = fields.Str()
    supported_tests = fields.List(fields.Str())


class RegisterResponseSchema(Schema):
    client_id = fields.Str(required=True, metadata={"description": "JWT, the probe's login"})


class LoginRequestSchema(Schema):
    username = fields.Str(metadata={"description": "client_id from /api/v1/register"})
    password = fields.Str()


class LoginResponseSchema(Schema):
    token = fields.Str(required=True, metadata={"description": "probe token (Bearer)"})
    expire = fields.Str(required=True,
                        metadata={"description": "expiry, RFC 3339 YYYY-MM-DDTHH:MM:SSZ"})


@docs(tags=TAGS, summary="Probe Services: Register",
      description="Probes send a random string called password and receive a client_id. "
                  "The client_id/password tuple is saved by the probe and long-lived.")
@json_body(RegisterRequestSchema, "Registration data")
@response_schema(RegisterResponseSchema, 200, description="Registration confirmation")
async def post_register(request: web.Request) -> web.Response:
    # The legacy API insisted on a JSON Content-Type and ignored the body's content.
    if request.content_type != "application/json":
        raise APIError("error: JSON expected!", 400)
    await read_object(request, message="error: JSON expected!")
    client_id = probe_tokens.new_client_id(jwt_key(request.app))
    return jsonutil.response({"client_id": client_id}, cache=0)


@docs(tags=TAGS, summary="Probe Services: login",
      description="Exchange a client_id for a probe token, valid until `expire`.")
@json_body(LoginRequestSchema, "Username and password")
@response_schema(LoginResponseSchema, 200, description="Auth object")
async def post_login(request: web.Request) -> web.Response:
    data = await read_object(request, message="JSON expected")
    cfg = request.app[CONFIG]
    key = jwt_key(request.app)
    username = data.get("username")
    registration_time: int | None = None
    try:
        if not isinstance(username, str):
            raise probe_tokens.NotAJWT("no username")
        registration_time = probe_tokens.decode_client_id(key, username)
    except probe_tokens.NotAJWT:
        # Legacy login, kept from the old API: probes registered before client_ids were JWTs
        # (or sending no username) still get a token, with registration_time null.
        registration_time = None
    except probe_tokens.TokenError as e:
        raise APIError(e.message, 401) from e
    token, expire = probe_tokens.new_probe_token(key, registration_time,
                                                 cfg.probe.token_expiry_days)
    request.app[METRICS].inc("probe_login_total", help="Probe logins by kind",
                             kind="legacy" if registration_time is None else "client_id")
    return jsonutil.response({"token": token, "expire": jsonutil.rfc3339(expire)}, cache=0)


def require_probe_token(request: web.Request) -> dict:
    """The claims of the request's probe token, or the legacy API's errors."""
    try:
        token = probe_tokens.bearer_token(request.headers.get("Authorization"))
    except LookupError as e:
        raise APIError("Authentication required", 401) from e
    except ValueError as e:
        raise APIError("Invalid token format", 400) from e
    try:
        return probe_tokens.verify_probe_token(jwt_key(request.app), token)
    except probe_tokens.TokenError as e:
        raise APIError(e.message, 401) from e


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(jwt_key_ctx)
    app.router.add_post("/api/v1/register", post_register)
    app.router.add_post("/api/v1/login", post_login)
