"""`oonibackend upload [--dry-run] [--hour YYYYMMDDHH]` (started hourly by the systemd timer)."""

from __future__ import annotations

import argparse
import logging
import re
import time
from typing import TYPE_CHECKING

from oonibackend.jobs import metrics as jobmetrics
from oonibackend.jobs.harness import Job
from oonibackend.jobs.upload import files
from oonibackend.jobs.upload.uploader import (
    GRACE_SECONDS,
    Options,
    Summary,
    Uploader,
    UploadError,
    write_metrics,
)
from oonibackend.objectstore import StoreError, open_store
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger(__name__)
JOB = Job("oonibackend upload")

_HOUR = re.compile(r"[0-9]{10}", re.ASCII)


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "upload", parents=parents,
        help="upload closed spool hours to the object store (postcans, jsonl.gz)",
        description="Turn every closed hour of the spool into postcans and seekable jsonl.gz "
        "files, upload them to the configured bucket (or the local object store), record "
        "them in the jsonl table, then delete the spooled files. Safe to interrupt at any "
        "point: the next run resumes. Exit status 0 on success, 1 on any error (the spool is "
        "then left as it was for the failed cans).")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be uploaded; change nothing")
    p.add_argument("--hour", metavar="YYYYMMDDHH",
                   help="only this hour (UTC), even if it is not closed yet")
    p.add_argument("--can-size", type=int, default=files.CAN_MAX_BYTES, metavar="BYTES",
                   help="close a postcan above this many bytes of .post files (default 20 MB)")
    p.add_argument("--grace", type=float, default=GRACE_SECONDS, metavar="SECONDS",
                   help="an hour is closed this long after its end (default 300)")
    jobmetrics.add_option(p, "upload")
    p.set_defaults(func=run)


async def _recover_spool(cfg: Config) -> None:
    """When no API process owns the spool, replay its WAL first, so that no acknowledged
    measurement exists only in the log. With the API running, its WAL only covers the last
    seconds, never a closed hour."""
    from oonibackend.spool import Spool, SpoolError

    spool = Spool(cfg)
    try:
        await spool.start()
    except SpoolError:
        log.info("spool owned by a running API process; no recovery needed")
        return
    await spool.close()


async def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.hour is not None and not _HOUR.fullmatch(args.hour):
        return JOB.usage("--hour wants YYYYMMDDHH")
    if args.can_size < 1:
        return JOB.usage("--can-size must be positive")
    opts = Options(dry_run=args.dry_run, hour=args.hour, can_bytes=args.can_size,
                   grace=args.grace)
    metrics = jobmetrics.path_for(args, cfg, "upload")
    writer = open_store(cfg)
    summary = Summary()
    ok = False
    t0 = time.monotonic()
    try:
        await writer.check()
        if opts.dry_run:
            up = Uploader(cfg, writer, None, opts)
            summary = await up.run()
            JOB.say(f"dry run: {len(summary.planned)} cans would be uploaded to {writer.name}")
            return 0
        await _recover_spool(cfg)
        async with JOB.database(cfg) as db:
            up = Uploader(cfg, writer, db, opts)
            up.lock()
            try:
                summary = await up.run()
            finally:
                summary = up.summary
                up.unlock()
        ok = True
    except (StoreError, UploadError, DatabaseError, OSError, ValueError) as e:
        return JOB.error(e)
    finally:
        await writer.close()
        summary.seconds = time.monotonic() - t0
        if not opts.dry_run:
            JOB.say(f"upload {'done' if ok else 'FAILED'}: {summary.line()}")
            log.info("upload summary", extra={
                "ok": ok, "hours": summary.hours, "cans": summary.cans, "files": summary.files,
                "files_present": summary.files_present, "measurements": summary.measurements,
                "bytes": summary.bytes, "seconds": round(summary.seconds, 3),
                "skipped": summary.skipped, "destination": writer.name})
            try:
                write_metrics(metrics, summary, ok)
            except OSError as e:
                log.warning("cannot write metrics file", extra={"error": str(e)})
    return 0
