"""`oonibackend detect [--dry-run] [--since T] [--until T]`: the blocking-event detector.

Exit status: 0 done (or nothing to do), 1 failed (database error; rerun: the job resumes from
its watermark), 2 bad usage or configuration, 3 another detect run holds the lock.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from oonibackend.cli import datetime_arg
from oonibackend.exitcodes import EXIT_FAILED, EXIT_LOCKED
from oonibackend.fileutil import release_flock, try_flock
from oonibackend.jobs import metrics as jobmetrics
from oonibackend.jobs.detector import job
from oonibackend.jobs.detector.job import Event, Stats
from oonibackend.jobs.harness import Job
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend detect")
METRICS = "detect"
log = logging.getLogger(__name__)

DESCRIPTION = """\
Detect blocking events in the fastpath table. For each series (test_name, input, probe_cc,
probe_asn) of the [detector] test_names, the job reads the measurements per time bucket
(bucket_minutes), keeps moving averages of the confirmed, pure-anomaly and accessible shares
in blocking_status, derives a status (OK, BLOCKED or UNKNOWN) with hysteresis, and writes an
event to blocking_events whenever a series turns from OK to BLOCKED or back, dated at the
change point (the first bucket of the run that caused it). See
oonibackend/jobs/detector/changepoint.py for the algorithm.

A run processes every complete bucket from the watermark (or, the first time, window_hours
back) to delay_minutes ago, in batches, printing one line per batch. It is safe to kill: the
next run resumes from the watermark and writes the same events, without duplicates.
--since/--until backfill another range (buckets a series already went past are skipped).
"""


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("detect", parents=parents,
                              help="detect blocking events (change points)",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="compute and print the events; write nothing")
    p.add_argument("--since", metavar="TIME", type=datetime_arg,
                   help="first bucket to process (YYYY-MM-DD or ISO time, UTC; "
                        "default: the watermark)")
    p.add_argument("--until", metavar="TIME", type=datetime_arg,
                   help="end of the range, exclusive (default: now - delay_minutes)")
    p.add_argument("--batch-buckets", type=int, metavar="N",
                   help="buckets per batch (default: [detector] batch_buckets)")
    jobmetrics.add_option(p, METRICS)
    p.set_defaults(func=run)


def _show(e: Event) -> None:
    test_name, input_, cc, asn = e.key
    c = e.change
    JOB.say(f"event {c.time:%Y-%m-%dT%H:%M:%SZ} {test_name} {cc} AS{asn & 0xFFFFFFFF} "
            f"{input_ or '-'} {c.old_status} -> {c.status} "
            f"(detected in bucket {c.detected:%Y-%m-%dT%H:%M:%SZ})")


async def _detect(args: argparse.Namespace, cfg: Config) -> Stats:
    c = cfg.detector
    async with JOB.database(cfg, migrate=not args.dry_run) as db:
        present = await job.existing_tables(db)
        watermark = await job.read_watermark(db) if "detector_state" in present else None
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        start, end = job.plan(c, now, watermark, args.since, args.until)
        if start >= end:
            JOB.say(f"nothing to do: up to date until {end:%Y-%m-%dT%H:%MZ}")
            return Stats(since=start, until=end)
        return await job.detect(db, c, start, end, dry_run=args.dry_run, progress=JOB.say,
                                on_event=_show if args.dry_run else lambda _: None)


async def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.batch_buckets is not None:
        if args.batch_buckets < 1:
            return JOB.usage("--batch-buckets must be positive")
        cfg.detector = dataclasses.replace(cfg.detector, batch_buckets=args.batch_buckets)
    try:
        job.validate(cfg.detector)
    except ValueError as e:
        return JOB.usage(f"bad [detector] configuration: {e}")
    if args.since and args.until and args.since >= args.until:
        return JOB.usage("--since must be before --until")
    lock_path = cfg.path("detect.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = None if args.dry_run else try_flock(lock_path, write_pid=True)
    if fd is None and not args.dry_run:
        return JOB.fail(f"another detect run is in progress ({lock_path})", EXIT_LOCKED)
    t0 = time.monotonic()
    stats: Stats | None = None
    try:
        stats = await _detect(args, cfg)
    except DatabaseError as e:
        JOB.fail(f"database error: {e}; the next run resumes from the watermark")
    finally:
        if fd is not None:
            release_flock(fd)
    seconds = time.monotonic() - t0
    if not args.dry_run:
        JOB.write_metrics(args, cfg, METRICS, stats is not None, seconds, _metrics(stats))
    if stats is None:
        return EXIT_FAILED
    JOB.say(f"done: {stats.batches} batches, {stats.rows} measurements, {stats.series} series "
            f"updated, {stats.events} events" + (" (dry run)" if args.dry_run else ""))
    log.info("detect done", extra={"batches": stats.batches, "rows": stats.rows,
                                   "series": stats.series, "events": stats.events,
                                   "dry_run": args.dry_run, "seconds": round(seconds, 3)})
    return 0


def _metrics(stats: Stats | None) -> dict[str, tuple[str, float]]:
    return {
        "series": ("Series updated by the latest detect run", stats.series if stats else 0),
        "events": ("Blocking events written by the latest detect run",
                   stats.events if stats else 0),
        "rows": ("Fastpath measurements read by the latest detect run",
                 stats.rows if stats else 0),
    }
