"""Whose budget a request spends: an account (valid user token) or the client's network.

Keys are bytes whose first byte tells the kind apart, so one LMDB database holds both:
b"4"/b"6" network keys from `clientip.network_key`, b"t" + account id for accounts.
"""

from __future__ import annotations

from typing import Any

import jwt

from oonibackend.clientip import network_label

ACCOUNT_PREFIX = b"t"
USER_AUDIENCE = "user_auth"
_MAX_ACCOUNT_ID = 128


def account_key(account_id: str) -> bytes:
    return ACCOUNT_PREFIX + account_id.encode()


def is_account_key(key: bytes) -> bool:
    return key[:1] == ACCOUNT_PREFIX


def key_label(key: bytes) -> str:
    """"account:<id>", "1.2.3.0/24" or "2001:db8:1::/48"."""
    if is_account_key(key):
        return "account:" + key[1:].decode(errors="replace")
    try:
        return network_label(key)
    except ValueError:
        return "key:" + key.hex()


def decode_user_token(authorization: str | None, secret: str) -> dict[str, Any] | None:
    """Claims of a valid `Authorization: Bearer <user_auth JWT>` (HS256), else None.

    Invalid, expired or foreign tokens are treated as absent, like the legacy API: the request is
    then anonymous, never an error.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=["HS256"], audience=USER_AUDIENCE)
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def token_account(claims: dict[str, Any] | None) -> str | None:
    """The account id of decoded claims when it is a plausible one (a short non-empty string)."""
    if not claims:
        return None
    account = claims.get("account_id")
    if isinstance(account, str) and 0 < len(account) <= _MAX_ACCOUNT_ID:
        return account
    return None
