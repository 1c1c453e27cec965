"""What a probe gets for a VPN provider (docs/current_services.md §3): a cached entry, kept
fresh off the request path.

* An entry younger than the refresh interval is served from memory.
* An older one is served as it is while a background task fetches a new one (stale while
  revalidate): a probe never waits for the provider once something is cached, and a provider
  that is down only means the stale entry goes on being served.
* With nothing cached (first request, memory and database empty) the request waits for the
  fetch; if it fails the caller gets `Unavailable`. Fetches are single-flight per provider, and
  after a failure none is tried for `retry` seconds, so a provider that is down is not asked
  once per request and requests do not each wait for its timeout.
* The database holds the newest entry of every provider: it survives restarts and is shared by
  the API hosts of one deployment (a refresh first looks there for a newer entry).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from oonibackend.metrics import Metrics
from oonibackend.storage import Database, DatabaseError
from oonibackend.vpn import store
from oonibackend.vpn.provider import Endpoint, VPNProvider
from oonibackend.vpn.store import Entry

log = logging.getLogger(__name__)

MAX_ENDPOINTS = 4  # endpoints per answer, picked at random (as OONI's service)


class Unavailable(Exception):
    """Nothing cached for the provider and it cannot be reached now."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("VPN provider unreachable and nothing cached")
        self.retry_after = retry_after


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def endpoint_url(provider: str, e: Endpoint) -> str:
    """OONI's endpoint string: `openvpn://riseupvpn.corp/?address=ip:port&transport=tcp`."""
    return f"{e.protocol}://{provider}.corp/?address={e.address}&transport={e.transport}"


def answer(entry: Entry, rng: random.Random) -> dict[str, Any]:
    """The response body of the route, in OONI's shape and key order."""
    c = entry.credentials
    picked = rng.sample(c.endpoints, min(MAX_ENDPOINTS, len(c.endpoints)))
    return {
        "provider": entry.provider,
        "protocol": "openvpn",
        "config": {"ca": c.ca, "cert": c.cert, "key": c.key},
        "date_updated": entry.date_updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "endpoints": [endpoint_url(entry.provider, e) for e in picked],
    }


class VPNConfigService:
    def __init__(self, db: Database, providers: Mapping[str, VPNProvider], metrics: Metrics,
                 *, refresh: float, retry: float) -> None:
        self._db = db
        self._providers = dict(providers)
        self._metrics = metrics
        self._refresh = dt.timedelta(seconds=refresh)
        self._retry = retry
        self._entries: dict[str, Entry] = {}
        self._inflight: dict[str, asyncio.Task[Entry]] = {}
        self._failed_at: dict[str, float] = {}  # monotonic time of the last failed fetch
        self.rng = random.Random()

    def known(self, name: str) -> bool:
        return name in self._providers

    def _stale(self, entry: Entry) -> bool:
        return entry.age(utcnow()) >= self._refresh

    def _backing_off(self, name: str) -> float:
        """Seconds left before the provider may be asked again (0: now)."""
        failed = self._failed_at.get(name)
        return 0.0 if failed is None else max(0.0, failed + self._retry - time.monotonic())

    async def _load(self, name: str) -> Entry | None:
        try:
            return await store.load(self._db, name)
        except DatabaseError as e:
            log.warning("VPN configuration cache unreadable", extra={"provider": name,
                                                                     "error": str(e)})
            return None

    async def get(self, name: str) -> Entry:
        """The entry to serve for a known provider; Unavailable when there is none."""
        entry = self._entries.get(name)
        if entry is None and (entry := await self._load(name)) is not None:
            self._entries.setdefault(name, entry)
        if entry is not None:
            if self._stale(entry):
                self._metrics.inc("vpn_config_stale_served_total", provider=name,
                                  help="VPN configurations served past their refresh time")
                if name not in self._inflight and not self._backing_off(name):
                    self._start_refresh(name)
            return entry
        if wait := self._backing_off(name):
            raise Unavailable(wait)
        try:
            # Shielded: a probe that hangs up does not cancel the fetch others wait for.
            return await asyncio.shield(self._start_refresh(name))
        except Exception:
            raise Unavailable(self._retry) from None

    def _start_refresh(self, name: str) -> asyncio.Task[Entry]:
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(self._fetch(name), name=f"vpn-refresh-{name}")
            self._inflight[name] = task
            task.add_done_callback(lambda t: self._done(name, t))
        return task

    def _done(self, name: str, task: asyncio.Task[Entry]) -> None:
        self._inflight.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved: a background failure is logged in _fetch

    async def _fetch(self, name: str) -> Entry:
        # Another API host sharing the database may have refreshed it already.
        newer = await self._load(name)
        if newer is not None and not self._stale(newer):
            self._entries[name] = newer
            return newer
        try:
            creds = await self._providers[name].fetch()
        except Exception as e:  # ProviderError, or a bug: either way the entry stays
            self._failed_at[name] = time.monotonic()
            self._metrics.inc("vpn_config_fetch_total", provider=name, result="error",
                              help="Fetches of VPN configurations from their provider")
            log.warning("VPN configuration fetch failed", extra={
                "provider": name, "error": str(e) or type(e).__name__})
            raise
        self._failed_at.pop(name, None)
        self._metrics.inc("vpn_config_fetch_total", provider=name, result="ok",
                          help="Fetches of VPN configurations from their provider")
        now = utcnow()
        prev = self._entries.get(name) or newer
        entry = Entry(name, creds, now, prev.date_created if prev else now)
        self._entries[name] = entry
        try:
            await store.save(self._db, entry)
        except DatabaseError as e:  # served from memory meanwhile; the next refresh retries
            log.warning("VPN configuration not cached in the database",
                        extra={"provider": name, "error": str(e)})
        log.info("VPN configuration fetched", extra={"provider": name,
                                                     "endpoints": len(creds.endpoints)})
        return entry

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        for p in self._providers.values():
            await p.close()
