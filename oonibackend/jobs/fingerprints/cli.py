"""`oonibackend update-fingerprints --source DIR_OR_URL`: refresh the blocking fingerprints.

Exit status: 0 imported, 1 refused or failed (invalid file, sanity check, download, git or
database error; the tables are unchanged in every case), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from oonibackend.jobs.fingerprints.importer import import_fingerprints
from oonibackend.jobs.fingerprints.parse import FingerprintError, read_dir
from oonibackend.jobs.fingerprints.source import DEFAULT_TIMEOUT, open_source
from oonibackend.jobs.harness import Job
from oonibackend.storage import DatabaseError
from oonibackend.storage.swap import ImportRefused

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend update-fingerprints")


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "update-fingerprints", parents=parents,
        help="import the blocking fingerprints into the database",
        description="Validate fingerprints_dns.csv and fingerprints_http.csv (a directory, "
                    "an http(s) URL of a directory, or a git URL cloned with --depth 1; a "
                    "directory may hold the .json fixtures instead) and atomically replace "
                    "the fingerprints_dns / fingerprints_http tables. Any invalid line "
                    "aborts with file:line and leaves the tables unchanged.")
    p.add_argument("--source", required=True, metavar="DIR_OR_URL",
                   help="directory, http(s) directory URL or git URL")
    p.add_argument("--force", action="store_true",
                   help="import even if a table would shrink below half of its rows")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="download / clone time limit (default %(default)g)")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        async with open_source(args.source, args.timeout) as src:
            JOB.say(f"reading fingerprints from {src}")
            fps = await asyncio.to_thread(read_dir, src)
            JOB.say(f"read {len(fps.dns)} DNS and {len(fps.http)} HTTP fingerprints")
            async with JOB.database(cfg) as db:
                stats = await import_fingerprints(db, fps, force=args.force, progress=JOB.say)
    except (FingerprintError, ImportRefused) as e:
        return JOB.fail(str(e))
    except DatabaseError as e:
        return JOB.fail(f"database error, nothing changed: {e}")
    JOB.say(stats.summary())
    return 0
