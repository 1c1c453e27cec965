"""`oonibackend restore --table T`: reload a table from a backup run.

The rows go into a new table (`<T>_restore` unless `--into`), created like the live one,
chunk by chunk: each object is streamed, decompressed and inserted as it arrives, then its
sha256 and row count are checked against the manifest, and at the end the table's row count.
Only then does `--replace` swap it with the live table (EXCHANGE TABLES, atomic for readers;
the previous rows stay in the other table). Any failure drops the new table: a live table is
never left half-written, since it is never written at all.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oonibackend.jobs.backup import catalog, plan
from oonibackend.jobs.backup.backup import Say, mb
from oonibackend.jobs.backup.export import read_json
from oonibackend.jobs.backup.stream import Decompressor, LineCounter, StreamError
from oonibackend.storage import Database, DatabaseError, sql, versions

if TYPE_CHECKING:
    from oonibackend.config import Config
    from oonibackend.objectstore import ObjectStore

log = logging.getLogger(__name__)

# Rows go in exactly as backed up: stored MATERIALIZED values, no dedup/collapse of the
# inserted blocks (optimize_on_insert), and an unknown column is an error, never dropped.
INSERT_SETTINGS = {"insert_allow_materialized_columns": 1, "optimize_on_insert": 0,
                   "input_format_skip_unknown_fields": 0}
_CREATE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+", re.I)


class RestoreError(Exception):
    """No such backup, a target in the way, or data not matching its manifest."""


@dataclass
class RestoreSummary:
    table: str = ""
    target: str = ""
    run: str = ""
    chunks: int = 0
    rows: int = 0
    bytes: int = 0
    replaced: bool = False


async def find_run(store: ObjectStore, prefix: str, table: str, run: str | None) -> str:
    """`run` if it holds a manifest for `table`, else the newest run that does."""
    keys = [o.key for o in await store.list(prefix + "/")]
    runs = plan.runs_with(keys, prefix, table)
    if run is not None:
        if run not in runs:
            raise RestoreError(f"run {run} has no backup of {table} in {store.name}"
                               + (f" (runs with one: {', '.join(runs[-5:])})" if runs else ""))
        return run
    if not runs:
        raise RestoreError(f"no backup of {table} in {store.name} under {prefix}/")
    return runs[-1]


async def _exists(db: Database, table: str) -> bool:
    return await catalog.describe(db, table, {}) is not None


async def _create(db: Database, table: str, target: str, manifest: dict[str, Any]) -> None:
    if await _exists(db, table):
        await db.execute(f"CREATE TABLE {target} AS {table}")
        return
    query = manifest.get("create_table_query") or ""
    if not _CREATE.match(query):
        raise RestoreError(f"{table} does not exist and the manifest has no CREATE statement")
    await db.execute(_CREATE.sub(f"CREATE TABLE {target}", query, count=1))


async def restore(cfg: Config, db: Database, store: ObjectStore, table: str, *, run: str | None,
                  into: str | None, replace: bool, say: Say,
                  clock: Callable[[], float] = time.monotonic) -> RestoreSummary:
    prefix = cfg.backup.prefix
    table = sql.ident(table)
    target = sql.ident(into or f"{table}_restore")
    if target == table:
        raise RestoreError("--into must name a new table (use --replace to swap it in)")
    run = await find_run(store, prefix, table, run)
    manifest = await read_json(store, plan.manifest_key(prefix, run, table))
    if not isinstance(manifest, dict) or manifest.get("format") != plan.BACKUP_FORMAT:
        raise RestoreError(f"run {run}: unusable manifest for {table}")
    if await _exists(db, target):
        raise RestoreError(f"table {target} already exists: drop it or choose --into")
    columns = [c["name"] for c in manifest["columns"]]
    chunks = manifest["chunks"]
    s = RestoreSummary(table, target, run)
    say(f"restoring {table} from run {run} ({manifest['rows']} rows, {len(chunks)} chunks) "
        f"into {target}")
    await _create(db, table, target, manifest)
    swapped = False
    try:
        try:  # a merge must not change the row count before it is checked
            await db.execute(f"SYSTEM STOP MERGES {target}")
        except DatabaseError:
            log.info("cannot stop merges on %s", target)
        for i, c in enumerate(chunks, 1):
            t0 = clock()
            dec = Decompressor(LineCounter(header_lines=2), c["sha256"])
            try:
                await db.insert_raw(target, plan.BACKUP_FORMAT, dec.run(
                    store.get_stream(c["key"])), columns, INSERT_SETTINGS)
            except StreamError as e:
                raise RestoreError(f"{c['key']}: {e}") from e
            if dec.rows != c["rows"]:
                raise RestoreError(f"{c['key']}: {dec.rows} rows, the manifest says "
                                   f"{c['rows']}")
            s.chunks += 1
            s.rows += dec.rows
            s.bytes += dec.bytes
            say(f"{table}: chunk {i}/{len(chunks)} {c['name']}: {dec.rows} rows, "
                f"{mb(dec.bytes)} in {clock() - t0:.1f} s")
        n, _ = await catalog.count_rows(db, target, {})
        if n != manifest["rows"]:
            raise RestoreError(f"{target} has {n} rows after the restore, the backup "
                               f"{manifest['rows']}")
        try:
            await db.execute(f"SYSTEM START MERGES {target}")
        except DatabaseError:
            log.info("cannot start merges on %s", target)
        if replace:
            if await _exists(db, table):
                await db.execute(f"EXCHANGE TABLES {table} AND {target}")
            else:
                await db.execute(f"RENAME TABLE {target} TO {table}")
            swapped = s.replaced = True
            dataset = versions.DATASET_OF_TABLE.get(table)
            if dataset is not None:  # running readers reload the restored reference data
                await versions.bump(db, dataset)
    except BaseException:
        if not swapped:
            try:
                await db.execute(f"DROP TABLE IF EXISTS {target}")
            except DatabaseError:
                log.warning("cannot drop %s after a failed restore", target)
        raise
    return s
