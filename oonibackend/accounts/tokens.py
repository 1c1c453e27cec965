"""The two JWTs of the email login (pure; HS256 with the server's key).

* registration token (aud "register"): sent in the login link, valid one day, carries the
  email address and where to go back to;
* session token (aud "user_auth"): the bearer token; expires after `session_days`, and can be
  refreshed until `login_days` after the email login, then a new login is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

REGISTER_AUDIENCE = "register"
USER_AUDIENCE = "user_auth"
ROLES = ("user", "admin")
REGISTRATION_SECONDS = 86400
_ALGORITHMS = ["HS256"]
_MAX_TOKEN = 4096


class TokenError(Exception):
    """A token was refused; the message is shown to the user."""


@dataclass(frozen=True)
class Session:
    account_id: str
    role: str
    login_time: int
    issued_at: int
    expires: int
    # v2 session tokens carry the address (OONI's v2 claims); legacy ones do not: "".
    email: str = ""


def registration_token(email: str, account_id: str, redirect_to: str, secret: str,
                       now: int) -> str:
    claims = {"nbf": now, "exp": now + REGISTRATION_SECONDS, "aud": REGISTER_AUDIENCE,
              "account_id": account_id, "email_address": email, "redirect_to": redirect_to}
    return jwt.encode(claims, secret, algorithm="HS256")


def decode_registration(token: str, secret: str, now: int) -> dict[str, Any]:
    """The claims of a login link's token; TokenError with the legacy messages otherwise."""
    if not token or len(token) > _MAX_TOKEN:
        raise TokenError("Invalid credentials")
    try:
        claims = jwt.decode(token, secret, algorithms=_ALGORITHMS, audience=REGISTER_AUDIENCE,
                            options={"verify_exp": False, "verify_nbf": False})
    except jwt.InvalidAudienceError:
        raise TokenError("Invalid token type") from None
    except jwt.InvalidSignatureError:
        raise TokenError("Invalid credential signature") from None
    except jwt.PyJWTError:
        raise TokenError("Invalid credentials") from None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise TokenError("Expired token")
    if isinstance(claims.get("nbf"), int) and claims["nbf"] > now + 60:
        raise TokenError("Invalid credentials")
    for key in ("account_id", "email_address"):
        if not isinstance(claims.get(key), str):
            raise TokenError("Invalid credentials")
    return claims


def session_token(account_id: str, role: str, login_time: int, secret: str, now: int,
                  session_days: float, login_days: float, email: str = "") -> str:
    """The bearer token; `email` (v2 logins) adds OONI's v2 `email_address` claim."""
    exp = int(min(now + session_days * 86400, login_time + login_days * 86400))
    claims: dict[str, Any] = {"nbf": now, "iat": now, "exp": exp, "aud": USER_AUDIENCE,
                              "account_id": account_id, "login_time": login_time,
                              "role": role}
    if email:
        claims["email_address"] = email
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    # A JWT is ASCII; a header's undecodable bytes arrive as surrogates, which PyJWT cannot
    # encode (UnicodeEncodeError, not a PyJWTError).
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN or \
            not token.isascii():
        return None
    return token


def decode_session(authorization: str | None, secret: str, now: int | None = None
                   ) -> Session | None:
    """The session of a valid bearer header, else None (absent, forged, expired, foreign)."""
    token = bearer(authorization)
    if token is None:
        return None
    try:
        opts: dict[str, Any] = {"require": ["exp"]}
        if now is not None:
            opts["verify_exp"] = False
        claims = jwt.decode(token, secret, algorithms=_ALGORITHMS, audience=USER_AUDIENCE,
                            options=opts)
    except jwt.PyJWTError:
        return None
    if now is not None and claims["exp"] <= now:
        return None
    account, role = claims.get("account_id"), claims.get("role")
    if not isinstance(account, str) or not 0 < len(account) <= 128 or role not in ROLES:
        return None
    issued = claims.get("iat", 0)  # no iat: issued before any expunge threshold
    login_time = claims.get("login_time", issued)
    if not isinstance(issued, int) or not isinstance(login_time, int):
        return None
    email = claims.get("email_address")
    return Session(account, role, login_time, issued, int(claims["exp"]),
                   email if isinstance(email, str) and len(email) <= 255 else "")
