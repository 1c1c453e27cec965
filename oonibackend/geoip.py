"""IP geolocation from the two MaxMind-format files (country and ASN).

The files are the monthly db-ip "lite" (or GeoLite2) databases; a missing or unreadable file
is logged once and treated as empty, so the API still answers (with ZZ / AS0) on a fresh
machine. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for
an IPv4 client) are looked up as IPv4: generated databases do not alias that range.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import maxminddb
from aiohttp import web

log = logging.getLogger("oonibackend.geoip")

Location = tuple[str | None, int | None, str | None]


def _open(path: str | Path, what: str) -> Any:
    try:
        return maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
        log.warning("GeoIP %s database unavailable, lookups return nothing", what,
                    extra={"path": str(path), "error": str(e)})
        return None


def parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an address, unwrapping IPv4-mapped IPv6. Raises ValueError on garbage."""
    addr = ipaddress.ip_address(ip.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class GeoIP:
    """Country + ASN lookups; safe to share (maxminddb readers are read-only)."""

    def __init__(self, cc_path: str | Path, asn_path: str | Path) -> None:
        self._cc = _open(cc_path, "country")
        self._asn = _open(asn_path, "ASN")

    def lookup(self, ip: str) -> Location:
        """(country code, AS number, AS organisation); None for what is not found.

        Raises ValueError when `ip` is not an IP address.
        """
        addr = parse_ip(ip)
        return self._country(addr), *self._as(addr)

    def _country(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        if self._cc is None:
            return None
        rec = self._cc.get(addr)
        if not isinstance(rec, dict):
            return None
        for key in ("country", "registered_country"):
            sub = rec.get(key)
            if isinstance(sub, dict) and isinstance(sub.get("iso_code"), str):
                return sub["iso_code"]
        return None

    def _as(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address
            ) -> tuple[int | None, str | None]:
        if self._asn is None:
            return None, None
        rec = self._asn.get(addr)
        if not isinstance(rec, dict):
            return None, None
        num = rec.get("autonomous_system_number")
        org = rec.get("autonomous_system_organization")
        return (num if isinstance(num, int) else None), (org if isinstance(org, str) else None)

    def close(self) -> None:
        for reader in (self._cc, self._asn):
            if reader is not None:
                reader.close()
        self._cc = self._asn = None


async def geoip_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: open the configured files into app[GEOIP] for the app's lifetime."""
    from oonibackend.appkeys import CONFIG, GEOIP

    cfg = app[CONFIG]
    geo = GeoIP(cfg.path(cfg.geoip.cc_db), cfg.path(cfg.geoip.asn_db))
    app[GEOIP] = geo
    yield
    geo.close()
