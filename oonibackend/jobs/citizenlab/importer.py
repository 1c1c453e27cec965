"""Load a test-lists checkout into the citizenlab table, all or nothing.

The new rows go into `citizenlab_flip`, are counted, and only then swapped in with
`EXCHANGE TABLES citizenlab AND citizenlab_flip` (atomic for readers: check-in snapshots see
either the old or the new list, never a mix). A list that shrank below half of the current
table is refused unless forced: that is far more often a broken checkout than real news.
After the swap `citizenlab_flip` holds the previous list, for inspection or a manual swap back,
and the `citizenlab` dataset version is bumped (storage/versions.py): the running API reloads
check-in's lists within `probe.version_poll` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oonibackend.jobs.citizenlab.lists import GLOBAL_CC, Entry, ListError, read_lists
from oonibackend.storage import versions
from oonibackend.storage.swap import ImportRefused, check_size

COLUMNS = ("domain", "url", "cc", "category_code")
BATCH_SIZE = 10_000

Progress = Callable[[str], None]


@dataclass
class ImportStats:
    files: int
    rows: int
    countries: int
    global_rows: int
    duplicates: int
    previous_rows: int

    def summary(self) -> str:
        return (f"imported {self.rows} rows from {self.files} files "
                f"({self.countries} country lists, {self.global_rows} global rows, "
                f"{self.duplicates} duplicates dropped); previous table had "
                f"{self.previous_rows} rows")


async def _count(db: Any, table: str) -> int:
    row = await db.query_one(f"SELECT count() AS n FROM {table} FINAL")
    return int(row["n"]) if row else 0


async def import_citizenlab(db: Any, source_dir: str | Path, *, force: bool = False,
                            progress: Progress | None = None,
                            batch_size: int = BATCH_SIZE) -> ImportStats:
    """Validate every list under `source_dir`, then replace the citizenlab table.

    Raises ListError (bad files), ImportRefused (sanity check) or a storage DatabaseError;
    in every case the citizenlab table is left as it was.
    """
    say = progress or (lambda _msg: None)
    lists = await asyncio.to_thread(read_lists, Path(source_dir))
    entries: list[Entry] = lists.entries
    say(f"read {lists.files} files, {len(entries)} rows")
    current = await _count(db, "citizenlab")
    check_size("the new list", len(entries), current, force)

    await db.execute("TRUNCATE TABLE citizenlab_flip")
    for start in range(0, len(entries), batch_size):
        batch = [e.as_row() for e in entries[start:start + batch_size]]
        await db.insert("citizenlab_flip", batch, columns=COLUMNS)
        say(f"inserted {min(start + batch_size, len(entries))}/{len(entries)} rows")
    loaded = await _count(db, "citizenlab_flip")
    if loaded != len(entries):
        raise ImportRefused(f"citizenlab_flip holds {loaded} rows after inserting "
                            f"{len(entries)}; not swapping")
    await db.execute("EXCHANGE TABLES citizenlab AND citizenlab_flip")
    say("swapped citizenlab and citizenlab_flip")
    await versions.bump(db, versions.CITIZENLAB)  # check-in reloads its lists at once
    countries = {e.cc for e in entries if e.cc != GLOBAL_CC}
    return ImportStats(files=lists.files, rows=len(entries), countries=len(countries),
                       global_rows=sum(e.cc == GLOBAL_CC for e in entries),
                       duplicates=lists.duplicates, previous_rows=current)


__all__ = ["ImportRefused", "ImportStats", "ListError", "import_citizenlab", "check_size"]
