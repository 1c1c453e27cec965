"""Where to look for a body, in which order, and the app component doing it.

Order (docs/api.md §2.7): a measurement with a new-format report id and a uid is "fresh"
during the hour after it was received (uid > now - 1 h, as `YYYYmmddHHMM` strings); fresh
ones are most likely still spooled, so: local spool, other API hosts, archive. Older new-format
ones are most likely archived: archive, local spool, other hosts. Anything else (legacy report
ids) was only ever archived.

One `BodyLookup` per app (`app[BODIES]`), made by `bodies_ctx`: it owns the object-store
reader and the HTTP session for peers, both closed at shutdown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from oonibackend.appkeys import CONFIG, DB
from oonibackend.bodies import archive, peers, spool
from oonibackend.bodies.cache import BodyCache
from oonibackend.objectstore import ObjectStore, open_store
from oonibackend.storage import Database

log = logging.getLogger(__name__)

SPOOL, PEERS, ARCHIVE = "spool", "peers", "archive"
FRESH = dt.timedelta(hours=1)


def is_new_format(report_id: str, uid: str | None) -> bool:
    return bool(uid) and report_id.count("_") == 5


def is_fresh(uid: str, now: dt.datetime) -> bool:
    return uid > (now - FRESH).strftime("%Y%m%d%H%M")


def source_order(report_id: str, uid: str | None, now: dt.datetime) -> tuple[str, ...]:
    """The sources to try, in order; `now` is naive UTC."""
    if uid and is_new_format(report_id, uid):
        if is_fresh(uid, now):
            return SPOOL, PEERS, ARCHIVE
        return ARCHIVE, SPOOL, PEERS
    return (ARCHIVE,)


class BodyLookup:
    def __init__(self, db: Database, reader: ObjectStore, spool_dir: Path, hosts: list[str],
                 session: aiohttp.ClientSession | None, settings: Mapping[str, Any],
                 cache: BodyCache | None = None) -> None:
        self.db = db
        self.reader = reader
        self.spool_dir = spool_dir
        self.hosts = hosts
        self.session = session
        self.settings = dict(settings)
        self.cache = cache or BodyCache()

    async def fetch(self, uid: str, report_id: str, inp: str) -> bytes | None:
        """The body of the measurement with this uid (report id and input from its fastpath
        row), or None when no source has it."""
        return await self.cache.get_or_load(uid, lambda: self._find(uid, report_id, inp))

    async def _find(self, uid: str, report_id: str, inp: str) -> bytes | None:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        for source in source_order(report_id, uid, now):
            body = await self._from(source, uid, report_id, inp)
            if body is not None:
                return body
        log.info("measurement body not found", extra={"uid": uid})
        return None

    async def _from(self, source: str, uid: str, report_id: str, inp: str) -> bytes | None:
        if source == SPOOL:
            return await asyncio.to_thread(spool.read_local, self.spool_dir, uid,
                                           archive.MAX_BODY)
        if source == PEERS:
            if self.session is None:
                return None
            return await peers.fetch(self.session, self.hosts, uid, archive.MAX_BODY)
        return await archive.fetch(self.db, self.reader, report_id, inp, uid, self.settings)


BODIES = web.AppKey("bodies", BodyLookup)


async def bodies_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    hosts: list[str] = []
    if cfg.server.other_collectors:  # only then is this host's name needed (may ask DNS)
        local = await asyncio.to_thread(peers.local_name, cfg.server.hostname)
        hosts = peers.ring(cfg.server.other_collectors, local)
    session = aiohttp.ClientSession(raise_for_status=False) if hosts else None
    reader = open_store(cfg)
    settings = {"max_execution_time": cfg.database.max_execution_time, "priority": 3}
    app[BODIES] = BodyLookup(app[DB], reader, cfg.path(cfg.spool.dir), hosts, session,
                             settings)
    try:
        yield
    finally:
        if session is not None:
            await session.close()
        await reader.close()
