"""Dataset generation numbers: tell long-running processes that a reference table changed.

Check-in's URL snapshot and the fastpath's fingerprints are in-memory copies of tables that
jobs replace wholesale (EXCHANGE TABLES). After a successful swap the job calls
`bump(db, name)`, which inserts a row into `dataset_versions` (migration 0006) with a version
larger than any before; the holders of a copy poll `current(db)` (one tiny query) every
second or so and reload at once when the version of a dataset they use moved, with their
periodic full refresh kept as a safety net.

Versions are `time.time_ns()`, but never below the previous one + 1, so a clock stepping
back (or another host's clock) cannot hide a change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from oonibackend.storage import DatabaseError

log = logging.getLogger(__name__)

CITIZENLAB = "citizenlab"
URL_PRIORITIES = "url_priorities"
FINGERPRINTS = "fingerprints"
ASNMETA = "asnmeta"

# The live tables behind each dataset (a restore --replace of one bumps its dataset too).
DATASET_OF_TABLE = {"citizenlab": CITIZENLAB, "url_priorities": URL_PRIORITIES,
                    "fingerprints_dns": FINGERPRINTS, "fingerprints_http": FINGERPRINTS,
                    "asnmeta": ASNMETA}

TABLE = "dataset_versions"
CURRENT_SQL = f"SELECT name, max(version) AS v FROM {TABLE} GROUP BY name"


async def current(db: Any) -> dict[str, int]:
    """The latest version of every dataset ever bumped (raises DatabaseError)."""
    rows = await db.query(CURRENT_SQL)
    return {str(r["name"]): int(r["v"]) for r in rows}


async def bump(db: Any, name: str) -> int | None:
    """Record a new version of `name`; the new version, or None when it could not be written.

    Called after the data is swapped in, so a failure here must not fail the job: it is
    logged, and readers get the change at their next periodic refresh instead.
    """
    try:
        previous = (await current(db)).get(name, 0)
        version = max(time.time_ns(), previous + 1)
        await db.insert(TABLE, [{"name": name, "version": version}], columns=("name", "version"))
    except DatabaseError as e:
        log.warning("cannot record the new dataset version; readers pick it up at their "
                    "next periodic refresh", extra={"dataset": name, "error": str(e)})
        return None
    log.debug("dataset version bumped", extra={"dataset": name, "version": version})
    return version


class Watcher:
    """Polls `current(db)` for some datasets and says when any of them moved.

    `changed()` compares with the versions recorded by the last `seen()` (taken just before
    a load, so a bump racing with the load only causes one more load, never a missed one).
    A failed poll is logged once per failure streak (warning), then at debug level.
    """

    def __init__(self, db: Any, names: tuple[str, ...], what: str,
                 logger: logging.Logger | None = None) -> None:
        self.db = db
        self.names = names
        self.what = what
        self.log = logger or log
        self.loaded: dict[str, int] | None = None  # versions behind the copy in use
        self.failures = 0

    async def poll(self) -> dict[str, int] | None:
        """The watched datasets' current versions, or None if the poll failed."""
        try:
            all_versions = await current(self.db)
        except (DatabaseError, ValueError, TypeError, KeyError) as e:
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            self.log.log(level, "dataset version poll failed; retrying",
                         extra={"for": self.what, "error": str(e),
                                "consecutive_failures": self.failures})
            return None
        if self.failures:
            self.log.info("dataset version poll recovered",
                          extra={"for": self.what, "after_failures": self.failures})
            self.failures = 0
        return {n: all_versions[n] for n in self.names if n in all_versions}

    async def seen(self) -> None:
        """Call right before loading the copy: record the versions it will reflect."""
        versions = await self.poll()
        if versions is not None:
            self.loaded = versions

    async def changed(self) -> bool:
        """True when a watched dataset has a version the copy in use may not reflect."""
        versions = await self.poll()
        if versions is None:
            return False
        # Versions unknown at the last load (poll failed then): reload once to be sure.
        return self.loaded is None or versions != self.loaded


async def reload_forever(load: Callable[[], Awaitable[bool]], watcher: Watcher | None, *,
                         interval: float, retry: float, poll: float,
                         first_delay: float = 0.0) -> None:
    """Keep an in-memory copy fresh until cancelled: `load()` after `first_delay`, then
    `interval` seconds after a successful load (`retry` after a failed one), and at once when
    `watcher` (polled every `poll` seconds; None: never) sees a new version."""
    due = time.monotonic() + first_delay
    while True:
        if time.monotonic() >= due:
            ok = await load()
            due = time.monotonic() + (interval if ok else retry)
        wait = max(due - time.monotonic(), 0.0)
        if watcher is None:
            await asyncio.sleep(wait)
            continue
        await asyncio.sleep(min(wait, poll))
        if time.monotonic() < due and await watcher.changed():
            watcher.log.info("dataset version changed, reloading", extra={"for": watcher.what})
            due = time.monotonic()
