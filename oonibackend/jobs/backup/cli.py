"""`oonibackend backup`, `oonibackend export` and `oonibackend restore`.

Exit status: 0 done (or nothing to do), 1 failed (object store, database, data not matching
its manifest, another run in progress; the message says which), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING

from oonibackend.fileutil import release_flock, try_flock
from oonibackend.jobs import metrics as jobmetrics
from oonibackend.jobs.backup import backup, plan
from oonibackend.jobs.backup.export import Export, ExportSummary
from oonibackend.jobs.backup.restore import RestoreError, restore
from oonibackend.jobs.backup.state import StateError
from oonibackend.jobs.backup.stream import StreamError
from oonibackend.jobs.harness import Job
from oonibackend.objectstore import StoreError, open_store
from oonibackend.storage import Database, DatabaseError, sql

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger(__name__)
BACKUP = Job("oonibackend backup")
EXPORT = Job("oonibackend export")
RESTORE = Job("oonibackend restore")

FAILURES = (StoreError, DatabaseError, backup.BackupError, plan.PlanError, StateError,
            StreamError, RestoreError, OSError)


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    b = subparsers.add_parser(
        "backup", parents=parents, help="back up the database tables to the object store",
        description="Copy every table of [backup] tables to the object store (the [s3] "
        "bucket, or the local object store) as zstd-compressed TSV chunks under "
        "<prefix>/<run id>/<table>/, streamed without temporary files, at low priority, "
        "then a manifest per table. A killed run is resumed by the next invocation; once "
        "complete, a new run starts the next day (run id YYYYMMDD).")
    b.add_argument("--dry-run", action="store_true",
                   help="print the tables and chunks that would be written; write nothing")
    b.add_argument("--tables", metavar="T1,T2", help="only these tables")
    b.add_argument("--run", metavar="ID", help="run id (default: the unfinished run, else "
                                               "today's date YYYYMMDD)")
    jobmetrics.add_option(b, "backup")
    b.set_defaults(func=run_backup)

    e = subparsers.add_parser(
        "export", parents=parents, help="export the public tables as CSV files to the object store",
        description="Write the [backup] public_tables as zstd-compressed CSV with a header: "
        "<export_prefix>/<table>/<YYYY-MM>.csv.zst per month for monthly tables, "
        "<export_prefix>/<table>/<table>.csv.zst otherwise, listed in <table>/manifest.json. "
        "Files already up to date (past months with the same row count) are not rewritten.")
    e.add_argument("--dry-run", action="store_true",
                   help="print the files that would be written; write nothing")
    e.add_argument("--tables", metavar="T1,T2", help="only these public tables")
    e.add_argument("--since", metavar="YYYY-MM", help="only months from this one on")
    jobmetrics.add_option(e, "export")
    e.set_defaults(func=run_export)

    r = subparsers.add_parser(
        "restore", parents=parents, help="reload a table from a backup",
        description="Stream a table's backup chunks into a new table (<table>_restore, or "
        "--into), checking each chunk's sha256 and row count and the total against the "
        "manifest. With --replace the verified table is then swapped with the live one "
        "(EXCHANGE TABLES; the previous rows stay in the other table). On any failure the "
        "new table is dropped and the live one is untouched.")
    r.add_argument("--table", required=True, help="table to restore")
    r.add_argument("--run", metavar="ID", help="backup run (default: the newest one with a "
                                               "manifest for the table)")
    r.add_argument("--into", metavar="NEW_TABLE",
                   help="name of the table to create (default <table>_restore)")
    r.add_argument("--replace", action="store_true",
                   help="after verification, swap the restored table into the live name")
    r.set_defaults(func=run_restore)


def parse_tables(text: str | None, default: Sequence[str]) -> list[str]:
    if not text:
        return list(default)
    tables = [t.strip() for t in text.split(",") if t.strip()]
    for t in tables:
        sql.ident(t)
    return tables


@contextlib.asynccontextmanager
async def open_db(job: Job, cfg: Config, *, migrate: bool = True) -> AsyncIterator[Database]:
    """`job`'s database; over HTTP (`[backup] http_url`) when the configured driver is
    native, whose protocol cannot carry raw formatted data."""
    if cfg.database.driver == "native":
        if not cfg.backup.http_url:
            raise backup.BackupError("database.driver is native: set [backup] http_url to "
                                     "the server's HTTP interface (e.g. http://db:8123)")
        cfg = copy.deepcopy(cfg)
        cfg.database.driver, cfg.database.url = "http", cfg.backup.http_url
    async with job.database(cfg, migrate=migrate) as db:
        yield db


@contextlib.contextmanager
def job_lock(cfg: Config, name: str) -> Iterator[None]:
    path = cfg.path(cfg.backup.dir) / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = try_flock(path, write_pid=True)
    if fd is None:
        raise backup.BackupError(f"another {name} is running (lock {path})")
    try:
        yield
    finally:
        release_flock(fd)


async def run_backup(args: argparse.Namespace, cfg: Config) -> int:
    try:
        tables = parse_tables(args.tables, cfg.backup.tables)
        if args.run is not None:
            plan.valid_run_id(args.run)
    except ValueError as e:
        return BACKUP.usage(str(e))
    writer = open_store(cfg)
    if args.dry_run:
        try:
            BACKUP.say(f"dry run: backup of {len(tables)} tables to {writer.name} under "
                       f"{cfg.backup.prefix}/ (nothing is written)")
            async with open_db(BACKUP, cfg, migrate=False) as db:
                await backup.plan_all(cfg, db, tables, BACKUP.say)
            return 0
        except FAILURES as e:
            return BACKUP.error(e)
        finally:
            await writer.close()
    t0 = time.monotonic()
    ok = False
    job: backup.Backup | None = None
    try:
        await writer.check()
        with job_lock(cfg, "backup"):
            async with open_db(BACKUP, cfg) as db:
                job = backup.Backup(cfg, db, writer, BACKUP.say)
                await job.run(tables, args.run)
        ok = True
    except FAILURES as e:
        return BACKUP.error(e)
    finally:
        await writer.close()
        summary = job.summary if job else backup.Summary()
        secs = time.monotonic() - t0
        BACKUP.say(f"backup {'done' if ok else 'FAILED'}: {summary.line()} in {secs:.1f} s")
        log.info("backup summary", extra={
            "ok": ok, "run": summary.run, "chunks": summary.chunks, "rows": summary.rows,
            "bytes": summary.bytes, "raw_bytes": summary.raw_bytes, "seconds": round(secs, 3),
            "destination": writer.name})
        BACKUP.write_metrics(args, cfg, "backup", ok, secs, summary.metrics())
    return 0


async def run_export(args: argparse.Namespace, cfg: Config) -> int:
    public = cfg.backup.public_tables
    try:
        tables = parse_tables(args.tables, public)
        since = plan.parse_month(args.since) if args.since else None
    except ValueError as e:
        return EXPORT.usage(str(e))
    if private := [t for t in tables if t not in public]:
        return EXPORT.usage(f"not in [backup] public_tables: {', '.join(private)}")
    writer = open_store(cfg)
    t0 = time.monotonic()
    ok = False
    job: Export | None = None
    try:
        if args.dry_run:
            EXPORT.say(f"dry run: export to {writer.name} under {cfg.backup.export_prefix}/ "
                       "(nothing is written)")
            async with open_db(EXPORT, cfg, migrate=False) as db:
                job = Export(cfg, db, writer, EXPORT.say)
                await job.run(tables, since, dry_run=True)
            return 0
        await writer.check()
        with job_lock(cfg, "export"):
            async with open_db(EXPORT, cfg) as db:
                job = Export(cfg, db, writer, EXPORT.say)
                await job.run(tables, since, dry_run=False)
        ok = True
    except FAILURES as e:
        return EXPORT.error(e)
    finally:
        await writer.close()
        if not args.dry_run:
            summary = job.summary if job else ExportSummary()
            secs = time.monotonic() - t0
            EXPORT.say(f"export {'done' if ok else 'FAILED'}: {summary.line()} in {secs:.1f} s")
            log.info("export summary", extra={
                "ok": ok, "files": summary.files, "skipped": summary.skipped,
                "rows": summary.rows, "bytes": summary.bytes, "seconds": round(secs, 3),
                "destination": writer.name})
            EXPORT.write_metrics(args, cfg, "export", ok, secs, summary.metrics())
    return 0


async def run_restore(args: argparse.Namespace, cfg: Config) -> int:
    try:
        sql.ident(args.table)
        if args.into:
            sql.ident(args.into)
        if args.run is not None:
            plan.valid_run_id(args.run)
    except ValueError as e:
        return RESTORE.usage(str(e))
    writer = open_store(cfg)
    try:
        await writer.check()
        # Migrated: a fresh database gets the schema of the live tables.
        async with open_db(RESTORE, cfg) as db:
            s = await restore(cfg, db, writer, args.table, run=args.run, into=args.into,
                              replace=args.replace, say=RESTORE.say)
    except FAILURES as e:
        return RESTORE.error(e)
    finally:
        await writer.close()
    if s.replaced:
        RESTORE.say(f"restored {s.rows} rows of {s.table} from run {s.run} and swapped them "
                    f"in; the previous rows are in {s.target}")
    else:
        RESTORE.say(f"restored {s.rows} rows of {s.table} from run {s.run} into {s.target}")
    return 0
