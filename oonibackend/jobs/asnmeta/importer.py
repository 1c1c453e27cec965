"""Load the AS-to-organisation history into asnmeta, all or nothing.

Rows stream from the parser into `asnmeta_tmp` in batches (emptied first, so a run killed
half-way leaves only a stale tmp table that the next run discards). Only once the whole
document parsed, the share of invalid entries is acceptable and the row count passes
`storage.swap.check_size` against the live table is it swapped in with
`EXCHANGE TABLES asnmeta_tmp AND asnmeta` (atomic for readers), after which the tmp table,
now holding the previous rows, is emptied.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

from oonibackend.jobs.asnmeta.parse import COLUMNS, MAX_INVALID_FRACTION, AsnmetaParser, ParseStats
from oonibackend.storage import DatabaseError, versions
from oonibackend.storage.swap import ImportRefused, check_size

BATCH_SIZE = 10_000
log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class ImportStats:
    parsed: ParseStats
    rows: int
    previous_rows: int
    dry_run: bool = False

    def summary(self) -> str:
        p = self.parsed
        verb = "would import" if self.dry_run else "imported"
        return (f"{verb} {self.rows} rows for {p.asns} ASNs ({p.invalid} invalid entries "
                f"skipped, {p.duplicates} duplicates dropped); previous table had "
                f"{self.previous_rows} rows")


async def _count(db: Any, table: str) -> int:
    row = await db.query_one(f"SELECT count() AS n FROM {table}")
    return int(row["n"]) if row else 0


async def import_asnmeta(db: Any, chunks: AsyncIterable[bytes], *, force: bool = False,
                         dry_run: bool = False, progress: Progress | None = None,
                         batch_size: int = BATCH_SIZE,
                         max_invalid: float = MAX_INVALID_FRACTION) -> ImportStats:
    """Parse `chunks` (the document's bytes) into asnmeta_tmp, check, then swap it in.

    Raises parse.FormatError, ImportRefused, source.SourceError or a storage DatabaseError;
    the live asnmeta table is unchanged in every case. With `dry_run` nothing is written.
    """
    say = progress or (lambda _msg: None)
    parser = AsnmetaParser()
    try:
        current = await _count(db, "asnmeta")
    except DatabaseError:
        if not dry_run:
            raise
        current = 0  # a fresh data directory: nothing to compare with
    if not dry_run:
        await db.execute("TRUNCATE TABLE asnmeta_tmp")
    pending: list[dict[str, Any]] = []
    inserted = 0

    async def flush(final: bool) -> None:
        nonlocal pending, inserted
        while len(pending) >= batch_size or (final and pending):
            batch, pending = pending[:batch_size], pending[batch_size:]
            if not dry_run:
                await db.insert("asnmeta_tmp", batch, columns=COLUMNS)
            inserted += len(batch)
            say(f"{'parsed' if dry_run else 'inserted'} {inserted} rows "
                f"({parser.stats.asns} ASNs, {parser.stats.invalid} invalid entries)")

    try:
        async for data in chunks:
            pending.extend(r.as_row() for r in parser.feed(data))
            await flush(final=False)
        pending.extend(r.as_row() for r in parser.finish())
        await flush(final=True)
        parser.check(max_invalid)
        check_size("the new AS list", inserted, current, force)
        stats = ImportStats(parser.stats, inserted, current, dry_run)
        if dry_run:
            return stats
        loaded = await _count(db, "asnmeta_tmp")
        if loaded != inserted:
            raise ImportRefused(f"asnmeta_tmp holds {loaded} rows after inserting "
                                f"{inserted}; not swapping")
        await db.execute("EXCHANGE TABLES asnmeta_tmp AND asnmeta")
    except Exception:
        if not dry_run:
            await _discard(db)
        raise
    say("swapped asnmeta_tmp and asnmeta")
    await versions.bump(db, versions.ASNMETA)
    await _discard(db)
    return stats


async def _discard(db: Any) -> None:
    """Empty asnmeta_tmp (best effort: the next run empties it anyway)."""
    try:
        await db.execute("TRUNCATE TABLE asnmeta_tmp")
    except Exception:
        log.warning("could not empty asnmeta_tmp", exc_info=True)
