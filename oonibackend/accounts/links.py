"""Where a login link may lead, and the link itself (pure), for both e-mail logins: legacy
`user_register` and v2 `user-login` (docs/api.md §2.6, docs/current_services.md §4).

One validator and one host list (`accounts.redirect_hosts`) for both, so a host allowed for
one login is allowed for the other.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

MAX_REDIRECT = 2048


def redirect_ok(url: object, hosts: list[str]) -> bool:
    """An https URL on one of `hosts` (exact host; no port other than 443)."""
    if not isinstance(url, str) or len(url) > MAX_REDIRECT:
        return False
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        return False
    return parts.scheme == "https" and parts.hostname in hosts and port in (None, 443)


def login_link(redirect_to: str, token: str) -> str:
    """`https://<host of redirect_to>/login?token=...`: the path and query of redirect_to stay
    in the token only."""
    host = urlsplit(redirect_to.strip()).hostname
    return f"https://{host}/login?" + urlencode({"token": token})
