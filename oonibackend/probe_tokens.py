"""Probe credentials: the stateless JWTs of /api/v1/register and /api/v1/login.

* register hands out a `client_id`: `{"iat", "aud": "probe_login"}`, no expiry (it is the
  probe's long-lived identity, stored on the device).
* login exchanges it for a probe token: `{"registration_time", "aud": "probe_token", "iat",
  "exp"}`. The legacy API put no `exp` in the token (it never expired although login told the
  probe it would); we add one at the advertised expiry. Tokens minted by the legacy API (no
  `exp`) are still accepted, so a key migration does not log every probe out.

Always HS256, always `algorithms=["HS256"]` on decode (no algorithm confusion).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import jwt

ALGORITHM = "HS256"
LOGIN_AUDIENCE = "probe_login"
TOKEN_AUDIENCE = "probe_token"


class TokenError(Exception):
    """A credential was rejected; `message` is what the client is told."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAJWT(TokenError):
    """The string is not a JWT at all (login treats that as a legacy username)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_client_id(key: str, now: dt.datetime | None = None) -> str:
    """The client_id returned by register."""
    t = now or _now()
    return jwt.encode({"iat": int(t.timestamp()), "aud": LOGIN_AUDIENCE}, key,
                      algorithm=ALGORITHM)


def decode_client_id(key: str, client_id: str) -> int:
    """The registration time (iat) of a client_id.

    Raises NotAJWT for strings that are not JWTs, TokenError for JWTs we did not sign or that
    are not client ids (the legacy API crashed with a 500 on a wrong audience).
    """
    try:
        claims = jwt.decode(client_id, key, algorithms=[ALGORITHM], audience=LOGIN_AUDIENCE,
                            options={"require": ["iat", "aud"]})
    except jwt.InvalidSignatureError as e:  # subclass of DecodeError: check first
        raise TokenError("Invalid credentials") from e
    except jwt.DecodeError as e:
        raise NotAJWT("not a JWT") from e
    except jwt.PyJWTError as e:
        raise TokenError("Invalid credentials") from e
    iat = claims["iat"]
    if not isinstance(iat, int):
        raise TokenError("Invalid credentials")
    return iat


def new_probe_token(key: str, registration_time: int | None, days: int,
                    now: dt.datetime | None = None) -> tuple[str, dt.datetime]:
    """A probe token and its expiry (UTC, whole seconds)."""
    t = now or _now()
    expire = t + dt.timedelta(days=days)
    claims: dict[str, Any] = {
        "registration_time": registration_time,
        "aud": TOKEN_AUDIENCE,
        "iat": int(t.timestamp()),
        "exp": int(expire.timestamp()),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM), expire


def verify_probe_token(key: str, token: str) -> dict[str, Any]:
    """The claims of a valid probe token; TokenError with the legacy messages otherwise."""
    try:
        return jwt.decode(token, key, algorithms=[ALGORITHM], audience=TOKEN_AUDIENCE,
                          options={"require": ["aud"]})
    except jwt.InvalidSignatureError as e:
        raise TokenError("Invalid JWT signature") from e
    except jwt.ExpiredSignatureError as e:
        raise TokenError("Token expired") from e
    except jwt.PyJWTError as e:
        raise TokenError("Invalid credentials") from e


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header.

    Raises LookupError when the header is missing (401) and ValueError when it is not a Bearer
    header (400 'Invalid token format', as the legacy API).
    """
    if header is None or not header.strip():
        raise LookupError("missing Authorization header")
    if not header.startswith("Bearer "):
        raise ValueError("Invalid token format")
    token = header[len("Bearer "):].strip()
    if not token:
        raise ValueError("Invalid token format")
    return token
