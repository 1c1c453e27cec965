"""Email login and account roles (docs/api.md §2.6; Explorer's flow: docs/clients.md Explorer §4).

* POST /api/v1/user_register        {email_address, redirect_to} → emails a one-day login link
* GET  /api/v1/user_login?k=        the link's token → a session bearer token
* GET  /api/v1/user_refresh_token   a fresh bearer, until login_expiry_days after the login
* GET  /api/_/account_metadata      {logged_in, role}: on every Explorer page, no DB query
* POST /api/v1/set_account_role     admin: {email_address, role}
* GET  /api/v1/get_account_role/{email_address}   admin
* POST /api/v1/set_session_expunge  admin: {email_address}: that account must log in again
No email address is stored: accounts are keyed by the hash of the address. OONI's v2 login
(routes/auth_v2.py) uses the same accounts, roles, login links and expunges.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.accounts import tokens
from oonibackend.accounts.auth import AUTH, Auth, current_session, require_session
from oonibackend.accounts.ids import account_id, normalize_email
from oonibackend.accounts.links import login_link, redirect_ok
from oonibackend.accounts.mailer import MailError, send_login_link
from oonibackend.accounts.store import AccountStore, refresh_loop
from oonibackend.appkeys import CONFIG, DB
from oonibackend.errors import APIError
from oonibackend.routes.body import read_body, read_object

log = logging.getLogger(__name__)
TAGS = ["Accounts"]
_MAX_BODY = 8192


async def _form(request: web.Request) -> dict[str, Any]:
    """A JSON or form body as a dict of strings (both are accepted, like legacy)."""
    if request.content_type == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qsl

        raw = await read_body(request, _MAX_BODY)
        return dict(parse_qsl(raw.decode("utf-8", "replace")))
    return await read_object(request, _MAX_BODY)


def _now() -> int:
    return int(time.time())


@docs(tags=TAGS, summary="Send a login link by email",
      description="Body (JSON or form): `email_address`, `redirect_to` (an https URL on one of "
                  "the configured hosts). The link leads to `<redirect host>/login?token=...` "
                  "and is valid for 24 hours.",
      responses={200: {"description": '{"msg": "ok"}'}, 400: {"description": "Invalid request"}})
async def user_register(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    body = await _form(request)
    raw_email, redirect_to = body.get("email_address"), body.get("redirect_to")
    if not raw_email or not redirect_ok(redirect_to, cfg.accounts.redirect_hosts):
        raise APIError("Invalid request", 400)
    email = normalize_email(raw_email)
    if email is None:
        raise APIError("Invalid email address", 400)
    auth = request.app[AUTH]
    token = tokens.registration_token(email, account_id(email, auth.hashing_key),
                                      redirect_to.strip(), auth.secret, _now())
    link = login_link(redirect_to, token)
    try:
        await send_login_link(cfg.smtp, email, link)
    except MailError as e:
        log.error("cannot send login email", extra={"error": str(e)})
        raise APIError("Unable to send the email", 400) from None
    log.info("login link sent")
    return jsonutil.response({"msg": "ok"}, cache=0)


@docs(tags=TAGS, summary="Log in with the token of a login link",
      parameters=[{"in": "query", "name": "k", "required": True, "type": "string",
                   "description": "The token of the emailed link"}],
      responses={200: {"description": "{bearer, email_address, redirect_to}"},
                 401: {"description": "Invalid or expired token"}})
async def user_login(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    now = _now()
    try:
        claims = tokens.decode_registration(request.query.get("k", ""), auth.secret, now)
    except tokens.TokenError as e:
        raise APIError(str(e), 401) from None
    account = claims["account_id"]
    role = await _store(request).effective_role(account)
    cfg = request.app[CONFIG].accounts
    bearer = tokens.session_token(account, role, now, auth.secret, now,
                                  cfg.session_expiry_days, cfg.login_expiry_days)
    log.info("user logged in", extra={"role": role})
    return jsonutil.response({"bearer": bearer, "email_address": claims["email_address"],
                              "redirect_to": claims.get("redirect_to", "")}, cache=0)


@docs(tags=TAGS, summary="A fresh session token",
      responses={200: {"description": '{"bearer": ...}'}, 401: {"description": "Not logged in"}})
async def user_refresh_token(request: web.Request) -> web.Response:
    session = require_session(request)
    cfg = request.app[CONFIG].accounts
    now = _now()
    if now >= session.login_time + cfg.login_expiry_days * 86400:
        raise APIError("Authentication required", 401)
    bearer = tokens.session_token(session.account_id, session.role, session.login_time,
                                  request.app[AUTH].secret, now, cfg.session_expiry_days,
                                  cfg.login_expiry_days)
    return jsonutil.response({"bearer": bearer}, cache=0)


@docs(tags=TAGS, summary="Whether the caller is logged in, and its role",
      responses={200: {"description": '{"logged_in": bool, "role": "user"|"admin"|""}'}})
async def account_metadata(request: web.Request) -> web.Response:
    # 200 for anonymous callers too (the current OONI service does so; legacy answered 401):
    # Explorer accepts both, and a 200 keeps the browser console clean on every page.
    session = current_session(request)
    body = {"logged_in": session is not None, "role": session.role if session else ""}
    return jsonutil.response(body, cache=0)


def _email_of(value: object) -> str:
    email = normalize_email(value)
    if email is None:
        raise APIError("Invalid email address", 400)
    return email


@docs(tags=TAGS, summary="Set an account's role (admin)",
      description="Body: `email_address`, `role` (user or admin). Takes effect at the "
                  "account's next login.",
      responses={200: {"description": "{}"}, 401: {"description": "Authentication required"},
                 403: {"description": "Role not authorized"}})
async def set_account_role(request: web.Request) -> web.Response:
    require_session(request, "admin")
    body = await _form(request)
    email = _email_of(body.get("email_address"))
    role = body.get("role")
    if role not in tokens.ROLES:
        raise APIError("Invalid role", 400)
    await _store(request).set_role(account_id(email, request.app[AUTH].hashing_key), role)
    log.info("account role set", extra={"role": role})
    return jsonutil.response({}, cache=0)


@docs(tags=TAGS, summary="An account's role (admin)",
      responses={200: {"description": '{"role": ...}'}, 400: {"description": "Not found"}})
async def get_account_role(request: web.Request) -> web.Response:
    require_session(request, "admin")
    email = _email_of(request.match_info["email_address"])
    role = await _store(request).role(account_id(email, request.app[AUTH].hashing_key))
    if role is None:
        raise APIError("Account not found", 400)
    return jsonutil.response({"role": role}, cache=0)


@docs(tags=TAGS, summary="Force an account to log in again (admin)",
      description="Body: `email_address`. Every session token issued before now is refused.",
      responses={200: {"description": "{}"}})
async def set_session_expunge(request: web.Request) -> web.Response:
    require_session(request, "admin")
    body = await _form(request)
    email = _email_of(body.get("email_address"))
    # Tokens carry whole seconds: a token issued in this very second stays valid.
    await _store(request).expunge(account_id(email, request.app[AUTH].hashing_key), _now())
    log.info("sessions expunged")
    return jsonutil.response({}, cache=0)


def _store(request: web.Request) -> AccountStore:
    store = request.app[AUTH].store
    assert store is not None  # set by accounts_ctx before the app serves
    return store


async def accounts_ctx(app: web.Application) -> AsyncIterator[None]:
    auth = app[AUTH]
    auth.store = AccountStore(app[DB])
    task = asyncio.create_task(refresh_loop(auth.store,
                                            app[CONFIG].accounts.expunge_refresh))
    yield
    task.cancel()


def setup(app: web.Application) -> None:
    cfg = app[CONFIG]
    app[AUTH] = Auth(secret=cfg.jwt_secret(), hashing_key=cfg.account_hashing_key())
    app.cleanup_ctx.append(accounts_ctx)
    r = app.router
    r.add_post("/api/v1/user_register", user_register)
    r.add_get("/api/v1/user_login", user_login)
    r.add_get("/api/v1/user_refresh_token", user_refresh_token)
    r.add_get("/api/_/account_metadata", account_metadata)
    r.add_post("/api/v1/set_account_role", set_account_role)
    r.add_get("/api/v1/get_account_role/{email_address}", get_account_role)
    r.add_post("/api/v1/set_session_expunge", set_session_expunge)
