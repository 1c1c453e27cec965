"""The v2 e-mail login's rules (pure; docs/current_services.md §4): request validation, the
login token's errors, and the response bodies.

The v2 login shares everything with the legacy one (accounts/__init__.py): the login link's
token (the same registration token, so a link from either route works with both), the
account id, the roles in `accounts` and the forced re-logins of `session_expunge`. Its session
tokens add OONI's `email_address` claim; legacy session tokens, without it, are accepted too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from oonibackend.accounts import tokens
from oonibackend.accounts.ids import normalize_email
from oonibackend.accounts.links import redirect_ok
from oonibackend.errors import DomainError, Invalid, Unauthenticated

MIN_EMAIL, MAX_EMAIL = 5, 255
NO_SESSION = "no valid session found"
LOGGED_OUT: dict[str, Any] = {"session_token": "", "redirect_to": "", "email_address": "",
                              "account_id": "", "role": "", "login_time": None,
                              "is_logged_in": False}


def error(kind: type[DomainError], message: str) -> DomainError:
    """Our error body plus OONI's `detail`: `{"error": m, "detail": m}`."""
    return kind(message, detail=message)


def invalid(field: str, message: str) -> Invalid:
    """Bad body field (400), `detail` shaped like OONI's validation errors (which are 422;
    docs/compatibility.md: bad input is a 400 here)."""
    return Invalid(message, detail=[{"type": "value_error", "loc": ["body", field],
                                     "msg": message}])


def iso_micro(epoch: int) -> str:
    """OONI's v2 datetimes: `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    t = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_login_request(body: dict[str, Any], hosts: list[str]) -> tuple[str, str]:
    """(lower-cased address, redirect_to) of a user-login body, else a 400."""
    raw = body.get("email_address")
    if not isinstance(raw, str):
        raise invalid("email_address", "Field required: email_address (a string)")
    email = normalize_email(raw)
    if email is None or not MIN_EMAIL <= len(email) <= MAX_EMAIL:
        raise invalid("email_address", "Invalid email address")
    redirect_to = body.get("redirect_to")
    if not isinstance(redirect_to, str):
        raise invalid("redirect_to", "Field required: redirect_to (a string)")
    if not redirect_ok(redirect_to, hosts):
        raise invalid("redirect_to",
                      "Invalid redirect_to: an https URL on one of " + ", ".join(hosts))
    return email, redirect_to.strip()


def decode_login_token(token: str, secret: str, now: int) -> dict[str, Any]:
    """The claims of a login link's token; 401 `Invalid credentials` or `Expired token`.

    A token of another audience or one not yet valid (nbf in the future) is refused with 401
    too (OONI's service answered those 500)."""
    try:
        claims = tokens.decode_registration(token, secret, now)
    except tokens.TokenError as e:
        msg = "Expired token" if str(e) == "Expired token" else "Invalid credentials"
        raise error(Unauthenticated, msg) from None
    if normalize_email(claims["email_address"]) is None:
        raise error(Unauthenticated, "Invalid credentials")
    return claims


def session_body(token: str, redirect_to: str, email: str, account_id: str, role: str,
                 login_time: int) -> dict[str, Any]:
    return {"session_token": token, "redirect_to": redirect_to, "email_address": email,
            "account_id": account_id, "role": role, "login_time": iso_micro(login_time),
            "is_logged_in": True}
