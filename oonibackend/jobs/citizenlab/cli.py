"""`oonibackend update-citizenlab --source DIR_OR_GIT_URL`: refresh the URL test lists.

Exit status: 0 imported, 1 refused or failed (invalid list file, sanity check, git or
database error; the table is unchanged in every case), 2 bad usage.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from oonibackend.jobs.citizenlab.importer import ImportRefused, import_citizenlab
from oonibackend.jobs.citizenlab.lists import ListError
from oonibackend.jobs.citizenlab.source import DEFAULT_CLONE_TIMEOUT, SourceError, checkout
from oonibackend.jobs.harness import Job
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend update-citizenlab")


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "update-citizenlab", parents=parents,
        help="import the CitizenLab test lists into the database",
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


async def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        async with checkout(args.source, args.clone_timeout) as repo:
            JOB.say(f"reading test lists from {repo}")
            async with JOB.database(cfg) as db:
                stats = await import_citizenlab(db, repo, force=args.force, progress=JOB.say)
    except (ListError, SourceError, ImportRefused) as e:
        return JOB.fail(str(e))
    except DatabaseError as e:
        return JOB.fail(f"database error, nothing changed: {e}")
    JOB.say(stats.summary())
    return 0
