"""IP geolocation from the two MaxMind-format files (country and ASN).

The files are the monthly db-ip "lite" (or GeoLite2) databases; a missing or unreadable file
is logged once and treated as empty, so the API still answers (with ZZ / AS0) on a fresh
machine. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for
an IPv4 client) are looked up as IPv4: generated databases do not alias that range.

`oonibackend download-geoip` replaces the files with `os.replace`; the running API notices
(a background task stats them every `geoip.reload_interval` seconds and compares inode and
mtime), opens the new files in a thread and swaps the readers on the event loop, so a lookup
never waits for a reload. A replacement that cannot be opened is ignored (the previous
database keeps answering) until the file changes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import maxminddb
from aiohttp import web

from oonibackend.appkeys import CONFIG

log = logging.getLogger(__name__)

Location = tuple[str | None, int | None, str | None]
FileId = tuple[int, int] | None  # (st_ino, st_mtime_ns); None when missing
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _open(path: str | Path, what: str) -> Any:
    try:
        return maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
        log.warning("GeoIP %s database unavailable, lookups return nothing", what,
                    extra={"path": str(path), "error": str(e)})
        return None


def file_id(path: str | Path) -> FileId:
    """What changes when a file is replaced (new inode) or rewritten in place (mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def parse_ip(ip: str) -> Address:
    """Parse an address, unwrapping IPv4-mapped IPv6. Raises ValueError on garbage."""
    addr = ipaddress.ip_address(ip.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def country_of(rec: Any) -> str | None:
    """The ISO country code of a country-database record."""
    if not isinstance(rec, dict):
        return None
    for key in ("country", "registered_country"):
        sub = rec.get(key)
        if isinstance(sub, dict) and isinstance(sub.get("iso_code"), str):
            return sub["iso_code"]
    return None


def as_of(rec: Any) -> tuple[int | None, str | None]:
    """(AS number, organisation) of an ASN-database record."""
    if not isinstance(rec, dict):
        return None, None
    num = rec.get("autonomous_system_number")
    org = rec.get("autonomous_system_organization")
    return (num if isinstance(num, int) else None), (org if isinstance(org, str) else None)


class GeoIP:
    """Country + ASN lookups; safe to share (maxminddb readers are read-only).

    Lookups run on the event loop; `reload` swaps the readers there too, so a lookup sees
    either the old or the new database, and the old reader is freed (unmapped) once nothing
    refers to it.
    """

    def __init__(self, cc_path: str | Path, asn_path: str | Path) -> None:
        self._paths = {"country": Path(cc_path), "ASN": Path(asn_path)}
        # Identity first: if the file is replaced between stat and open, the next check
        # sees a change and reopens it (the reverse order could miss the replacement).
        self._ids: dict[str, FileId] = {k: file_id(p) for k, p in self._paths.items()}
        self._cc = _open(cc_path, "country")
        self._asn = _open(asn_path, "ASN")

    @property
    def loaded(self) -> bool:
        """Both databases are open (without them every address looks like ZZ / AS0)."""
        return self._cc is not None and self._asn is not None

    def lookup(self, ip: str) -> Location:
        """(country code, AS number, AS organisation); None for what is not found.

        Raises ValueError when `ip` is not an IP address.
        """
        addr = parse_ip(ip)
        return self._country(addr), *self._as(addr)

    def _country(self, addr: Address) -> str | None:
        if self._cc is None:
            return None
        return country_of(self._cc.get(addr))

    def _as(self, addr: Address) -> tuple[int | None, str | None]:
        if self._asn is None:
            return None, None
        return as_of(self._asn.get(addr))

    def _open_changed(self) -> dict[str, tuple[FileId, Any]]:
        """(new id, new reader or None) of each file that changed; blocking (a thread)."""
        out: dict[str, tuple[FileId, Any]] = {}
        for what, path in self._paths.items():
            fid = file_id(path)
            if fid == self._ids[what]:
                continue
            reader = _open(path, what) if fid is not None else None
            out[what] = (fid, reader)
        return out

    def _apply(self, changes: dict[str, tuple[FileId, Any]]) -> list[str]:
        """Swap in the readers opened by `_open_changed` (on the loop); what was reloaded."""
        reloaded = []
        for what, (fid, reader) in changes.items():
            self._ids[what] = fid
            if reader is None:  # missing or unreadable: keep answering from the old file
                log.warning("GeoIP %s database changed but cannot be opened; keeping the "
                            "previous one", what, extra={"path": str(self._paths[what])})
                continue
            if what == "country":
                self._cc = reader
            else:
                self._asn = reader
            reloaded.append(what)
            meta = reader.metadata()
            log.info("GeoIP %s database reloaded", what,
                     extra={"path": str(self._paths[what]), "build_epoch": meta.build_epoch,
                            "database_type": meta.database_type})
        return reloaded

    async def reload(self) -> list[str]:
        """Reopen the files that changed on disk; the names of those reloaded."""
        changes = await asyncio.to_thread(self._open_changed)
        return self._apply(changes) if changes else []

    def close(self) -> None:
        for reader in (self._cc, self._asn):
            if reader is not None:
                reader.close()
        self._cc = self._asn = None


async def _reload_loop(geo: GeoIP, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await geo.reload()
        except Exception:  # never let the checker die; the next round retries
            log.warning("GeoIP reload check failed", exc_info=True)


GEOIP = web.AppKey("geoip", GeoIP)


async def geoip_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: open the configured files into app[GEOIP] for the app's lifetime,
    reopening them when they are replaced (every geoip.reload_interval seconds)."""
    cfg = app[CONFIG]
    geo = GeoIP(cfg.path(cfg.geoip.cc_db), cfg.path(cfg.geoip.asn_db))
    app[GEOIP] = geo
    interval = cfg.geoip.reload_interval
    task = asyncio.create_task(_reload_loop(geo, interval)) if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    geo.close()
