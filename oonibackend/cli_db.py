"""`oonibackend db migrate`, `oonibackend db exec FILE.sql` and `oonibackend db rebuild-rollups
--start-day D --end-day D` (storage/rollups.py), on the database a job opens
(oonibackend/jobs/harness.py: the running owner's, or chdb itself under the owner lock).

Exit status: 0 done, 1 failed (database unavailable, a statement failed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from oonibackend.jobs.harness import Job, open_database
from oonibackend.storage import Database, DatabaseError, DatabaseUnavailable, sql

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend db")
EXEC = Job("oonibackend db exec")


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("db", parents=parents, help="database schema and maintenance",
                              description="Apply migrations or run SQL against the database.")
    sub = p.add_subparsers(dest="db_command", metavar="DB_COMMAND")
    sub.required = True
    m = sub.add_parser("migrate", parents=parents, help="apply pending schema migrations",
                       description="Apply pending schema migrations; prints applied versions.")
    m.set_defaults(func=run_db, db_command="migrate")
    e = sub.add_parser("exec", parents=parents, help="run the statements of a .sql file",
                       description="Run each statement of FILE; SELECT results are printed "
                                   "as JSON lines on stdout.")
    e.add_argument("file", metavar="FILE.sql", help="SQL file ('-' for stdin)")
    e.set_defaults(func=run_db, db_command="exec")
    r = sub.add_parser("rebuild-rollups", parents=parents,
                       help="recount the rollups of some days from fastpath",
                       description="Replace the rollups' rows of the days [start, end) with "
                                   "the counts of fastpath FINAL (after re-processing them).")
    r.add_argument("--start-day", required=True, type=dt.date.fromisoformat,
                   help="first day, YYYY-MM-DD")
    r.add_argument("--end-day", required=True, type=dt.date.fromisoformat,
                   help="end day (excluded), YYYY-MM-DD")
    r.set_defaults(func=run_db, db_command="rebuild-rollups")


def _where(cfg: Config) -> str:
    return cfg.db_url() if cfg.database.driver != "embedded" else str(cfg.path(cfg.database.path))


async def _migrate(db: Database) -> int:
    from oonibackend.storage.migrate import current_version, migrate

    applied = await migrate(db)
    for v in applied:
        print(f"applied {v:04d}")
    print(f"schema version {await current_version(db)}"
          + ("" if applied else " (up to date)"))
    return 0


async def _exec(db: Database, path: str) -> int:
    from oonibackend import jsonutil

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    for i, stmt in enumerate(sql.split_statements(text), 1):
        try:
            if sql.statement_kind(stmt) == "select":
                for row in await db.query(stmt):
                    sys.stdout.write(jsonutil.dumps(row).decode() + "\n")
            else:
                await db.execute(stmt)
        except DatabaseUnavailable:
            raise
        except DatabaseError as e:
            return EXEC.fail(f"statement {i} failed: {e}")
    sys.stdout.flush()
    return 0


async def run_db(args: argparse.Namespace, cfg: Config) -> int:
    cmd = getattr(args, "db_command", None)
    if cmd == "exec" and args.file != "-" and not Path(args.file).is_file():
        return EXEC.usage(f"no such file: {args.file}")
    try:
        async with open_database(cfg) as db:
            if cmd == "migrate":
                return await _migrate(db)
            if cmd == "exec":
                return await _exec(db, args.file)
            if cmd == "rebuild-rollups":
                if args.end_day <= args.start_day:
                    return JOB.usage("--end-day must be after --start-day")
                from oonibackend.storage import rollups

                n = (args.end_day - args.start_day).days
                await rollups.rebuild(db, [args.start_day + dt.timedelta(days=i)
                                           for i in range(n)])
                print(f"rollups rebuilt from {args.start_day} to {args.end_day} (excluded)")
                return 0
    except DatabaseUnavailable as e:
        return JOB.fail(f"database unavailable ({_where(cfg)}): {e}")
    except DatabaseError as e:
        return JOB.fail(str(e))
    return JOB.usage("missing subcommand (migrate, exec or rebuild-rollups)")
