"""`oonibackend update-citizenlab --source DIR_OR_GIT_URL`: refresh the URL test lists.

Exit status: 0 imported, 1 refused or failed (invalid list file, sanity check, git or
database error; the table is unchanged in every case), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from oonibackend.citizenlab.importer import ImportRefused, import_citizenlab
from oonibackend.citizenlab.lists import ListError
from oonibackend.citizenlab.source import DEFAULT_CLONE_TIMEOUT, SourceError, checkout
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

PROG = "oonibackend update-citizenlab"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "update-citizenlab", help="import the CitizenLab test lists into the database",
        description="Validate lists/<cc>.csv and lists/global.csv of a test-lists checkout "
                    "(a directory, or a git URL cloned with --depth 1) and atomically replace "
                    "the citizenlab table. Any invalid line aborts with file:line and leaves "
                    "the table unchanged.")
    p.add_argument("--source", required=True, metavar="DIR_OR_GIT_URL",
                   help="test-lists checkout directory or git URL")
    p.add_argument("--force", action="store_true",
                   help="import even if the new list has less than half the current rows")
    p.add_argument("--clone-timeout", type=float, default=DEFAULT_CLONE_TIMEOUT,
                   metavar="SECONDS", help="git clone time limit (default %(default)g)")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(msg, flush=True)


async def run(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend.cli_db import open_database
    from oonibackend.storage.migrate import migrate

    try:
        async with checkout(args.source, args.clone_timeout) as repo:
            _say(f"reading test lists from {repo}")
            async with open_database(cfg) as db:
                await migrate(db)  # a fresh data directory has no tables yet
                stats = await import_citizenlab(db, repo, force=args.force, progress=_say)
    except (ListError, SourceError, ImportRefused) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except DatabaseError as e:
        print(f"{PROG}: database error, nothing changed: {e}", file=sys.stderr)
        return 1
    _say(stats.summary())
    return 0
