"""`oonibackend db migrate` and `oonibackend db exec FILE.sql`.

With the embedded driver a job must not open chdb while the owner runs (one process per
directory): if the owner lock is free the job opens chdb itself and holds the lock until it
ends; otherwise it goes through the running owner's HTTP interface. Other drivers connect
to the configured server.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from oonibackend import storage
from oonibackend.storage import Database, DatabaseError, DatabaseUnavailable, sql

if TYPE_CHECKING:
    from oonibackend.config import Config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("db", help="database schema and maintenance",
                              description="Apply migrations or run SQL against the database.")
    sub = p.add_subparsers(dest="db_command", metavar="DB_COMMAND")
    sub.required = True
    m = sub.add_parser("migrate", help="apply pending schema migrations",
                       description="Apply pending schema migrations; prints applied versions.")
    m.set_defaults(func=run_db, db_command="migrate")
    e = sub.add_parser("exec", help="run the statements of a .sql file",
                       description="Run each statement of FILE; SELECT results are printed "
                                   "as JSON lines on stdout.")
    e.add_argument("file", metavar="FILE.sql", help="SQL file ('-' for stdin)")
    e.set_defaults(func=run_db, db_command="exec")


@contextlib.asynccontextmanager
async def open_database(cfg: Config) -> AsyncIterator[Database]:
    """The database for an offline job; chdb in-process only while holding the owner lock."""
    fd = None
    if cfg.database.driver == "embedded":
        from oonibackend.storage import owner

        fd = owner.try_lock(cfg)
    db: Database = storage.connect(cfg, direct=fd is not None)
    try:
        yield db
    finally:
        try:
            await db.close()
        finally:
            if fd is not None:
                from oonibackend.storage import owner

                owner.release_lock(fd)


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
    from oonibackend.storage.chdb_local import statement_kind

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    for i, stmt in enumerate(sql.split_statements(text), 1):
        try:
            if statement_kind(stmt) == "select":
                for row in await db.query(stmt):
                    sys.stdout.write(jsonutil.dumps(row).decode() + "\n")
            else:
                await db.execute(stmt)
        except DatabaseUnavailable:
            raise
        except DatabaseError as e:
            print(f"oonibackend db exec: statement {i} failed: {e}", file=sys.stderr)
            return 1
    sys.stdout.flush()
    return 0


async def run_db(args: argparse.Namespace, cfg: Config) -> int:
    cmd = getattr(args, "db_command", None)
    if cmd == "exec" and args.file != "-" and not Path(args.file).is_file():
        print(f"oonibackend db exec: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        async with open_database(cfg) as db:
            if cmd == "migrate":
                return await _migrate(db)
            if cmd == "exec":
                return await _exec(db, args.file)
    except DatabaseUnavailable as e:
        print(f"oonibackend db: database unavailable ({_where(cfg)}): {e}", file=sys.stderr)
        return 1
    except DatabaseError as e:
        print(f"oonibackend db: {e}", file=sys.stderr)
        return 1
    print("oonibackend db: missing subcommand (migrate or exec)", file=sys.stderr)
    return 2


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Synchronous wrapper of `run_db`."""
    import asyncio

    return asyncio.run(run_db(args, cfg))
