"""`FingerprintRefresher`: reload the blocking-fingerprint tables on a schedule.

The main process reads `fingerprints_dns` / `fingerprints_http` through the storage layer
(workers never touch the database) and hands the rows to the pool, which broadcasts them.
A failed or malformed load keeps the previous set and is retried after `retry` seconds
rather than a whole `interval` (at start-up the database may still be coming up). With
`poll` > 0 the `fingerprints` dataset version (oonibackend/storage/versions.py) is checked
every `poll` seconds, so a finished `update-fingerprints` is in use within about that long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from oonibackend.jobs.fingerprints.parse import MATCH_COLUMNS
from oonibackend.metrics import Metrics
from oonibackend.storage import Database, DatabaseError, versions

log = logging.getLogger(__name__)

# Selected in this order, DNS first (docs/fastpath.md §3.1).
TABLES = ("fingerprints_dns", "fingerprints_http")

Rows = list[dict[str, Any]]


class FingerprintRefresher:
    def __init__(self, db: Database, interval: float, on_loaded: Callable[[Rows, Rows], None],
                 metrics: Metrics, validate: Callable[[Rows, Rows], object] | None = None,
                 retry: float = 10.0, poll: float = 0.0) -> None:
        self._db = db
        self.interval = max(1.0, interval)
        self.retry = max(0.1, min(retry, self.interval))
        self.poll = max(0.0, poll)
        self.watcher = (versions.Watcher(db, (versions.FINGERPRINTS,), "fingerprints", log)
                        if self.poll else None)
        self._on_loaded = on_loaded
        self._validate = validate
        self._metrics = metrics
        self.loaded_at = 0.0
        self.count = 0
        metrics.set("fingerprints", lambda: self.count, help="Fingerprints in use")

    async def load(self) -> bool:
        """One load; True when the new set is in use."""
        t0 = time.perf_counter()
        if self.watcher is not None:
            await self.watcher.seen()  # before the load: a bump racing with it is not missed
        try:
            dns, http = [await self._db.query(f"SELECT {', '.join(MATCH_COLUMNS)} FROM {t}",
                                              settings={"priority": 5}) for t in TABLES]
            if self._validate is not None:
                await asyncio.to_thread(self._validate, dns, http)
        except (DatabaseError, ValueError, TypeError, KeyError) as e:
            self._metrics.inc("fingerprint_load_failures_total",
                              help="Fingerprint loads that failed (previous set kept)")
            log.warning("cannot load fingerprints; keeping the previous set",
                        extra={"error": str(e)})
            return False
        self._on_loaded(dns, http)
        self.loaded_at = time.time()
        self.count = len(dns) + len(http)
        log.info("fingerprints loaded", extra={"dns": len(dns), "http": len(http),
                                               "seconds": round(time.perf_counter() - t0, 3)})
        return True

    async def run(self, first_delay: float = 0.0) -> None:
        """Load after `first_delay`, then keep the set fresh (until cancelled): every
        `interval` seconds, and at once when the fingerprints version moves."""
        await versions.reload_forever(self.load, self.watcher, interval=self.interval,
                                      retry=self.retry, poll=self.poll,
                                      first_delay=first_delay)
