"""`oonibackend update-asnmeta [--source URL_OR_FILE] [--dry-run] [--force]`.

Exit status: 0 imported (or, with --dry-run, valid), 1 refused or failed (unreadable source,
invalid or truncated JSON, too many invalid entries, sanity check, database error; the live
asnmeta table is unchanged in every case), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from oonibackend.exitcodes import EXIT_FAILED
from oonibackend.jobs import metrics as jobmetrics
from oonibackend.jobs.asnmeta.importer import BATCH_SIZE, ImportStats, import_asnmeta
from oonibackend.jobs.asnmeta.parse import MAX_INVALID_FRACTION, FormatError
from oonibackend.jobs.asnmeta.source import DEFAULT_TIMEOUT, SourceError, display, iter_source
from oonibackend.jobs.harness import Job
from oonibackend.storage import DatabaseError
from oonibackend.storage.swap import ImportRefused

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend update-asnmeta")
METRICS = "asnmeta"
log = logging.getLogger(__name__)

DESCRIPTION = """\
Import OONI's AS-to-organisation history (ooni/historical-geoip) into the asnmeta table,
atomically: rows are loaded into asnmeta_tmp, checked, then swapped in with EXCHANGE TABLES.

The source (an http(s) URL, a file:// URL or a path; gzip accepted) is one JSON object
mapping an AS number (a string of digits, 0 < ASN < 2**32) to its history, a list of
entries, each either

  [org_name, cc, changed, aut_name, source]   or   [org_name, cc, aut_name, changed, source]

(the order is told by which field is a date) or an object with those keys. `changed` is
YYYY-MM-DD or YYYYMMDD (empty or null: unknown, stored as 1970-01-01); cc is two uppercase
letters or empty; names are at most 512 characters. Invalid entries are skipped, but a
document that is not valid JSON, is truncated, or has more than --max-invalid of its
entries invalid is refused, as is one that would shrink the table below half its rows
(unless --force).
"""


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "update-asnmeta", parents=parents,
        help="import the AS-to-organisation history into the database",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", metavar="URL_OR_FILE",
                   help="http(s) URL, file:// URL or path (default: [asnmeta] source)")
    p.add_argument("--dry-run", action="store_true",
                   help="download and validate only; change nothing")
    p.add_argument("--force", action="store_true",
                   help="import even if the table would shrink below half of its rows")
    p.add_argument("--max-invalid", type=float, default=MAX_INVALID_FRACTION,
                   metavar="FRACTION",
                   help="refuse the document when more than this fraction of its entries "
                        "are invalid (default %(default)g)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, metavar="ROWS",
                   help="rows per insert (default %(default)d)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="download time limit (default %(default)g)")
    jobmetrics.add_option(p, METRICS)
    p.set_defaults(func=run)


async def _import(args: argparse.Namespace, cfg: Config, source: str) -> ImportStats:
    from contextlib import aclosing

    async with aclosing(iter_source(source, max_bytes=cfg.asnmeta.max_bytes,
                                    timeout=args.timeout)) as chunks:
        # The first bytes before the database: an unreachable source fails without
        # taking the owner lock.
        first = await anext(chunks, b"")

        async def document() -> AsyncIterator[bytes]:
            yield first
            async for data in chunks:
                yield data

        async with JOB.database(cfg, migrate=not args.dry_run) as db, \
                aclosing(document()) as doc:
            return await import_asnmeta(db, doc, force=args.force,
                                        dry_run=args.dry_run, progress=JOB.say,
                                        batch_size=args.batch_size,
                                        max_invalid=args.max_invalid)


async def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.batch_size < 1 or not 0 <= args.max_invalid <= 1 or args.timeout <= 0:
        return JOB.usage("--batch-size must be positive, --max-invalid within 0..1 and "
                         "--timeout positive")
    source = args.source or cfg.asnmeta.source
    if not source:
        return JOB.usage("no source (--source or [asnmeta] source)")
    t0 = time.monotonic()
    stats: ImportStats | None = None
    JOB.say(f"reading AS organisations from {display(source)}")
    try:
        stats = await _import(args, cfg, source)
    except (SourceError, FormatError, ImportRefused) as e:
        JOB.fail(f"{e}; nothing changed")
    except DatabaseError as e:
        JOB.fail(f"database error, nothing changed: {e}")
    seconds = time.monotonic() - t0
    if not args.dry_run:
        JOB.write_metrics(args, cfg, METRICS, stats is not None, seconds, _metrics(stats))
    if stats is None:
        return EXIT_FAILED
    JOB.say(stats.summary())
    log.info("asnmeta import done", extra={"rows": stats.rows, "asns": stats.parsed.asns,
                                           "invalid": stats.parsed.invalid,
                                           "dry_run": args.dry_run,
                                           "seconds": round(seconds, 3)})
    return 0


def _metrics(stats: ImportStats | None) -> dict[str, tuple[str, float]]:
    return {
        "rows": ("Rows in asnmeta after the latest run (0 when it failed)",
                 stats.rows if stats else 0),
        "invalid_entries": ("Entries of the source skipped as invalid",
                            stats.parsed.invalid if stats else 0),
    }
