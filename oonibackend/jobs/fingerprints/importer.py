"""Load validated fingerprints into both tables, all or nothing.

The rows go into fingerprints_{dns,http}_tmp, are counted, and only then swapped in with
`EXCHANGE TABLES` (atomic for readers). After the swap the _tmp tables hold the previous
fingerprints, for inspection or a manual swap back, and the `fingerprints` dataset version is
bumped (oonibackend/storage/versions.py), which a running fastpath notices within seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oonibackend.jobs.fingerprints.parse import HEADER, KINDS, FingerprintSet, Row
from oonibackend.storage import versions
from oonibackend.storage.swap import ImportRefused, check_size

BATCH_SIZE = 5000

Progress = Callable[[str], None]


@dataclass
class ImportStats:
    dns: int
    http: int
    previous_dns: int
    previous_http: int

    def summary(self) -> str:
        return (f"imported {self.dns} DNS and {self.http} HTTP fingerprints; previous tables "
                f"had {self.previous_dns} and {self.previous_http}")


async def _count(db: Any, table: str) -> int:
    row = await db.query_one(f"SELECT count() AS n FROM {table}")
    return int(row["n"]) if row else 0


async def import_fingerprints(db: Any, fps: FingerprintSet, *, force: bool = False,
                              progress: Progress | None = None,
                              batch_size: int = BATCH_SIZE) -> ImportStats:
    """Load both _tmp tables, check them, then swap both in; on any failure the live tables
    are as they were (a failed second swap undoes the first)."""
    say = progress or (lambda _m: None)
    previous = {}
    for kind in KINDS:
        table = f"fingerprints_{kind}"
        rows: list[Row] = getattr(fps, kind)
        previous[kind] = await _count(db, table)
        check_size(table, len(rows), previous[kind], force)
    for kind in KINDS:
        table, rows = f"fingerprints_{kind}", getattr(fps, kind)
        await db.execute(f"TRUNCATE TABLE {table}_tmp")
        for start in range(0, len(rows), batch_size):
            await db.insert(f"{table}_tmp", rows[start:start + batch_size], columns=HEADER)
        loaded = await _count(db, f"{table}_tmp")
        if loaded != len(rows):
            raise ImportRefused(f"{table}_tmp holds {loaded} rows after inserting "
                                f"{len(rows)}; not swapping")
        say(f"loaded {loaded} rows into {table}_tmp")
    await db.execute("EXCHANGE TABLES fingerprints_dns AND fingerprints_dns_tmp")
    try:
        await db.execute("EXCHANGE TABLES fingerprints_http AND fingerprints_http_tmp")
    except BaseException:
        await db.execute("EXCHANGE TABLES fingerprints_dns AND fingerprints_dns_tmp")
        raise
    say("swapped fingerprints_dns and fingerprints_http with their _tmp tables")
    await versions.bump(db, versions.FINGERPRINTS)  # the fastpath reloads them at once
    return ImportStats(len(fps.dns), len(fps.http), previous["dns"], previous["http"])
