"""OONI's v2 e-mail login (docs/current_services.md §4), on the legacy login's accounts, roles
and forced re-logins (routes/auth.py; logic in accounts/v2.py):

* POST /api/v2/ooniauth/user-login    {email_address, redirect_to} → mails a one-day link
* POST /api/v2/ooniauth/user-session  {login_token} → a session; no token: refresh the bearer
* GET  /api/v2/ooniauth/user-session  the bearer's session, or a logged-out body (always 200)

Errors carry our `error` field and OONI's `detail`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.accounts import tokens, v2
from oonibackend.accounts.auth import AUTH, current_session
from oonibackend.accounts.ids import account_id
from oonibackend.accounts.links import login_link
from oonibackend.accounts.mailer import SUBJECT_V2, MailError, send_login_link
from oonibackend.appkeys import CONFIG
from oonibackend.errors import APIError, Unauthenticated, Unavailable
from oonibackend.routes.body import read_object
from oonibackend.storage import DatabaseError

log = logging.getLogger(__name__)
TAGS = ["Accounts"]
_MAX_BODY = 8192


async def _body(request: web.Request) -> dict[str, Any]:
    """A JSON object body (empty: `{}`); 400 with OONI's `detail` too otherwise."""
    try:
        return await read_object(request, _MAX_BODY)
    except APIError as e:
        e.extra.setdefault("detail", e.message)
        raise


def _now() -> int:
    return int(time.time())


async def _role(request: web.Request, account: str) -> str:
    store = request.app[AUTH].store
    assert store is not None  # set by routes.auth's accounts_ctx before the app serves
    return await store.effective_role(account)


@docs(tags=TAGS, summary="Send a login link by e-mail (v2)",
      description="Body: `email_address`, `redirect_to` (an https URL on one of "
                  "`accounts.redirect_hosts`). Mails a link to `<redirect host>/login?token=...`"
                  ", valid 24 hours.",
      responses={200: {"description": '{"email_address", "login_token_expiration"}'},
                 400: {"description": "Invalid body"},
                 503: {"description": "Unable to send the email"}})
async def user_login(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    auth = request.app[AUTH]
    email, redirect_to = v2.parse_login_request(await _body(request),
                                                cfg.accounts.redirect_hosts)
    now = _now()
    token = tokens.registration_token(email, account_id(email, auth.hashing_key), redirect_to,
                                      auth.secret, now)
    try:
        await send_login_link(cfg.smtp, email, login_link(redirect_to, token), SUBJECT_V2)
    except MailError as e:
        log.error("cannot send login email", extra={"error": str(e)})
        raise v2.error(Unavailable, "Unable to send the email") from None
    log.info("login link sent", extra={"api": "v2"})
    body = {"email_address": email,
            "login_token_expiration": v2.iso_micro(now + tokens.REGISTRATION_SECONDS)}
    return jsonutil.response(body, cache=0)


@docs(tags=TAGS, summary="Log in with a login link's token, or refresh the session (v2)",
      description="Body `{\"login_token\": ...}`: a new session from the e-mailed link's "
                  "token. No token: a new session token for the `Authorization: Bearer` "
                  "session, until `accounts.login_expiry_days` after the login.",
      responses={200: {"description": "{session_token, redirect_to, email_address, "
                                      "account_id, role, login_time, is_logged_in}"},
                 401: {"description": "Invalid credentials, Expired token, or no valid "
                                      "session found"}})
async def create_session(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    cfg = request.app[CONFIG].accounts
    body = await _body(request)
    login_token = body.get("login_token")
    now = _now()
    if login_token is not None:
        if not isinstance(login_token, str):
            raise v2.invalid("login_token", "Invalid login_token: a string expected")
        claims = v2.decode_login_token(login_token, auth.secret, now)
        email = claims["email_address"].strip().lower()
        account = account_id(email, auth.hashing_key)
        login_time, redirect_to = now, claims.get("redirect_to")
        redirect_to = redirect_to if isinstance(redirect_to, str) else ""
    else:
        session = current_session(request)  # expunged sessions are refused here
        if session is None or now >= session.login_time + cfg.login_expiry_days * 86400:
            raise v2.error(Unauthenticated, v2.NO_SESSION)
        email, account, login_time, redirect_to = (session.email, session.account_id,
                                                   session.login_time, "")
    role = await _role(request, account)  # recomputed on every login and refresh
    token = tokens.session_token(account, role, login_time, auth.secret, now,
                                 cfg.session_expiry_days, cfg.login_expiry_days, email=email)
    if login_token is not None:
        log.info("user logged in", extra={"role": role, "api": "v2"})
    return jsonutil.response(
        v2.session_body(token, redirect_to, email, account, role, login_time), cache=0)


@docs(tags=TAGS, summary="The caller's session (v2)",
      description="Always 200: the bearer's session (the token is not reissued: "
                  "`session_token` is empty), or `is_logged_in: false`.",
      responses={200: {"description": "{session_token, redirect_to, email_address, "
                                      "account_id, role, login_time, is_logged_in}"}})
async def get_session(request: web.Request) -> web.Response:
    session = current_session(request)
    if session is None:
        return jsonutil.response(v2.LOGGED_OUT, cache=0)
    try:
        role = await _role(request, session.account_id)
    except DatabaseError:
        role = session.role  # the database is down: the role the token was issued with
    return jsonutil.response(
        v2.session_body("", "", session.email, session.account_id, role, session.login_time),
        cache=0)


def setup(app: web.Application) -> None:
    """After routes.auth.setup, which sets app[AUTH] and its account store."""
    r = app.router
    r.add_post("/api/v2/ooniauth/user-login", user_login)
    r.add_post("/api/v2/ooniauth/user-session", create_session)
    r.add_get("/api/v2/ooniauth/user-session", get_session)
