"""`oonibackend download-geoip [--source URL_TEMPLATE] [--month YYYY-MM] [--dry-run]`.

Exit status: 0 replaced (or, with --dry-run, valid), 1 failed (the live files are untouched
and the temporary files removed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from oonibackend.exitcodes import EXIT_FAILED
from oonibackend.jobs import metrics as jobmetrics
from oonibackend.jobs.asnmeta.source import DEFAULT_TIMEOUT, SourceError
from oonibackend.jobs.geoip.importer import (
    DEFAULT_NAME,
    KINDS,
    MAX_BYTES,
    VERIFY_ADDRESSES,
    DbInfo,
    DownloadError,
    DownloadLocked,
    Options,
    candidate_months,
    check_template,
    install,
)
from oonibackend.jobs.harness import Job

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend download-geoip")
METRICS = "geoip"
log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "download-geoip", parents=parents,
        help="download and install the monthly GeoIP databases",
        description="Fetch this month's country and ASN databases (the previous month's "
                    "while this month's are not published), verify them (they open as "
                    "MaxMind databases of the right type and answer lookups of "
                    f"{' and '.join(VERIFY_ADDRESSES)}) and atomically replace geoip.cc_db "
                    "and geoip.asn_db. A running API reopens them within "
                    "geoip.reload_interval seconds. On any error the live files are left "
                    "untouched.")
    p.add_argument("--source", metavar="URL_TEMPLATE",
                   help="http(s) or file:// URL or path with {kind} (country, asn) and "
                        "{month} (YYYY-MM) placeholders, or a directory holding "
                        f"{DEFAULT_NAME} files (default: geoip.download_url)")
    p.add_argument("--month", metavar="YYYY-MM",
                   help="this month only (default: the current month, else the previous)")
    p.add_argument("--dry-run", action="store_true",
                   help="download and verify only; replace nothing")
    p.add_argument("--force", action="store_true",
                   help="install even a database less than half the size of the live one")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="time limit of each download (default %(default)g)")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, metavar="BYTES",
                   help="largest accepted database, uncompressed (default %(default)d)")
    jobmetrics.add_option(p, METRICS)
    p.set_defaults(func=run)


def _metrics(infos: dict[str, DbInfo] | None) -> dict[str, tuple[str, float]]:
    values: dict[str, tuple[str, float]] = {}
    for kind in KINDS:
        info = (infos or {}).get(kind)
        values[f"{kind}_build_timestamp_seconds"] = (
            f"Build time of the {kind} database installed by the latest run (0: none)",
            info.build_epoch if info else 0)
        values[f"{kind}_bytes"] = (f"Size of the {kind} database installed by the latest run",
                                   info.size if info else 0)
    return values


async def run(args: argparse.Namespace, cfg: Config) -> int:
    template = args.source or cfg.geoip.download_url
    try:
        months = candidate_months(args.month, dt.datetime.now(dt.UTC).date())
        check_template(template)
    except ValueError as e:
        return JOB.usage(str(e))
    if args.timeout <= 0 or args.max_bytes <= 0:
        return JOB.usage("--timeout and --max-bytes must be positive")
    t0 = time.monotonic()
    infos: dict[str, DbInfo] | None = None
    try:
        opts = Options(template, months, dry_run=args.dry_run, force=args.force,
                       timeout=args.timeout, max_bytes=args.max_bytes)
        infos = await install(cfg, opts, JOB.say)
    except DownloadLocked as e:
        return JOB.fail(str(e))
    except (DownloadError, SourceError) as e:
        JOB.fail(f"{e}; nothing replaced")
    except OSError as e:
        JOB.fail(f"{e.strerror or e} ({e.filename or ''}); nothing replaced")
    seconds = time.monotonic() - t0
    if not args.dry_run:
        JOB.write_metrics(args, cfg, METRICS, infos is not None, seconds, _metrics(infos))
    if infos is None:
        return EXIT_FAILED
    month = infos["country"].month
    if args.dry_run:
        JOB.say(f"dry run: the {month} databases are valid; nothing replaced")
    log.info("geoip download done", extra={"month": month, "dry_run": args.dry_run,
                                           "seconds": round(seconds, 3)})
    return 0
