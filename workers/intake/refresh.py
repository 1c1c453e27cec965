"""`FingerprintRefresher`: reload the blocking-fingerprint tables on a schedule.

The main process reads `fingerprints_dns` / `fingerprints_http` through the storage layer
(workers never touch the database) and hands the rows to the pool, which broadcasts them.
A failed or malformed load keeps the previous set and is retried after `retry` seconds
rather than a whole `interval` (at start-up the database may still be coming up).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from oonibackend.metrics import Metrics
from oonibackend.storage import Database, DatabaseError

log = logging.getLogger("workers.intake.refresh")

# The 8 columns the reference selects (spec §3.1), DNS first.
COLUMNS = ("name, scope, other_names, location_found, pattern_type, pattern, "
           "confidence_no_fp, expected_countries")
TABLES = ("fingerprints_dns", "fingerprints_http")

Rows = list[dict[str, Any]]


class FingerprintRefresher:
    def __init__(self, db: Database, interval: float, on_loaded: Callable[[Rows, Rows], None],
                 metrics: Metrics, validate: Callable[[Rows, Rows], object] | None = None,
                 retry: float = 10.0) -> None:
        self._db = db
        self.interval = max(1.0, interval)
        self.retry = max(0.1, min(retry, self.interval))
        self._on_loaded = on_loaded
        self._validate = validate
        self._metrics = metrics
        self.loaded_at = 0.0
        self.count = 0
        metrics.set("fingerprints", lambda: self.count, help="Fingerprints in use")

    async def load(self) -> bool:
        """One load; True when the new set is in use."""
        t0 = time.perf_counter()
        try:
            dns, http = [await self._db.query(f"SELECT {COLUMNS} FROM {t}",
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

    async def run(self) -> None:
        """Load now, then keep the set fresh (until cancelled)."""
        while True:
            ok = await self.load()
            await asyncio.sleep(self.interval if ok else self.retry)
