"""Who is calling: the session of a request's bearer token, and role checks for handlers.

    session = current_session(request)            # None when anonymous
    session = require_session(request)            # 401 unless logged in
    session = require_session(request, "admin")   # and 403 unless admin

Invalid, expired, forged and expunged tokens all count as absent. Insufficient roles get 403
(legacy answered 401 'Role not authorized'; 403 is what the status means, and Explorer only
reads the message).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from oonibackend.accounts.store import AccountStore
from oonibackend.accounts.tokens import Session, decode_session
from oonibackend.errors import Forbidden, Unauthenticated


@dataclass
class Auth:
    """What the app needs to authenticate requests (app[AUTH])."""
    secret: str
    hashing_key: str
    store: AccountStore | None = None


AUTH = web.AppKey("auth", Auth)


def current_session(request: web.Request) -> Session | None:
    auth = request.app[AUTH]
    session = decode_session(request.headers.get("Authorization"), auth.secret)
    if session is None or (auth.store is not None and auth.store.expunged(session)):
        return None
    return session


def require_session(request: web.Request, *roles: str) -> Session:
    session = current_session(request)
    if session is None:
        raise Unauthenticated("Authentication required")
    if roles and session.role not in roles:
        raise Forbidden("Role not authorized")
    return session
