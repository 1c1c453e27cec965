"""The base of the absolute links the API hands out (`next_url`, `measurement_url`, the Atom
feed's self link): this instance's own address, never OONI's production API by accident.

`server.base_url` set: that, always ending in "/". Empty (the default): taken from the request,
scheme and host from `X-Forwarded-Proto` / `X-Forwarded-Host` when the TCP peer is a trusted
proxy (`server.trusted_proxies`, see clientip), else the connection's scheme and the `Host`
header. The host value is attacker-controlled and ends up in (cacheable) answers, so only a
strict `host[:port]` is accepted (letters, digits, dots and hyphens, or an IPv6 address in
brackets; a numeric port); anything else gives `server.host:server.port`.

A proxy in front must *set* X-Forwarded-Host / X-Forwarded-Proto (not pass the client's
through), and a cache must key on the host, as etc/nginx-oonibackend.conf does
(`proxy_cache_key $scheme$host$request_uri`).
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address

from aiohttp import hdrs, web

from oonibackend.appkeys import CONFIG
from oonibackend.clientip import from_trusted_proxy
from oonibackend.validate import DNS_LABEL

_HOST = re.compile(
    rf"(?P<host>\[(?P<ipv6>[0-9A-Fa-f:.]{{2,45}})\]|{DNS_LABEL}(?:\.{DNS_LABEL})*\.?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
MAX_HOST = 253
SCHEMES = ("http", "https")


def valid_host(value: str | None) -> str | None:
    """`value` as a normalised `host[:port]` (lower case, no leading zeros in the port) when it
    is strictly one, else None. No user info, path, spaces, zone ids or empty port."""
    if not value or len(value) > MAX_HOST + 8:
        return None
    m = _HOST.fullmatch(value)
    if m is None:
        return None
    host, port = m["host"], m["port"]
    if m["ipv6"] is not None:
        try:
            host = f"[{IPv6Address(m['ipv6'])}]"
        except ValueError:
            return None
    elif len(host) > MAX_HOST:
        return None
    host = host.lower()
    if port is None:
        return host
    number = int(port)
    if not 0 < number < 65536:
        return None
    return f"{host}:{number}"


def _first(value: str | None) -> str | None:
    """The first element of a comma-separated header value, stripped."""
    if value is None:
        return None
    return value.split(",", 1)[0].strip()


def fallback_host(server_host: str, server_port: int) -> str:
    """`server.host:server.port`, IPv6 addresses in brackets."""
    if ":" in server_host and not server_host.startswith("["):
        server_host = f"[{server_host}]"
    return f"{server_host}:{server_port}"


def configured(base: str) -> str:
    """A configured base URL, ending in "/"."""
    return base if base.endswith("/") else base + "/"


def base_url(request: web.Request) -> str:
    """The base of this instance's absolute links for `request`, ending in "/"."""
    server = request.app[CONFIG].server
    if server.base_url:
        return configured(server.base_url)
    scheme = request.scheme
    host = request.headers.get(hdrs.HOST)
    if from_trusted_proxy(request):
        proto = _first(request.headers.get("X-Forwarded-Proto"))
        if proto and proto.lower() in SCHEMES:
            scheme = proto.lower()
        forwarded = request.headers.get("X-Forwarded-Host")
        if forwarded is not None:
            host = _first(forwarded)
    if scheme not in SCHEMES:
        scheme = "http"
    return f"{scheme}://{valid_host(host) or fallback_host(server.host, server.port)}/"
