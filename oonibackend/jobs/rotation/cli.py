"""`oonibackend rotate [--dry-run]`: test-helper rotation (see rotate.py for the rules).

Exit status: 0 done, 1 failed (provider, readiness or database error; what was done is
consistent and the next run carries on), 2 bad configuration, 3 another run holds the lock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from oonibackend.cli import datetime_arg
from oonibackend.exitcodes import EXIT_LOCKED
from oonibackend.fileutil import release_flock, try_flock
from oonibackend.jobs import metrics as jobmetrics
from oonibackend.jobs.harness import Job, open_database
from oonibackend.jobs.rotation import rotate
from oonibackend.jobs.rotation.journal import JournalError
from oonibackend.jobs.rotation.provider import ProviderError
from oonibackend.jobs.rotation.rotate import Result, RotationError
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend rotate")
METRICS = "rotate"
log = logging.getLogger(__name__)

DESCRIPTION = """\
Keep [rotation] count web-connectivity test helpers running on the cloud provider, each
replaced after max_age_days. A run:
  - forgets hosts whose droplet is gone, destroys hosts drained for drain_hours;
  - creates hosts while fewer than `count` are live, else one replacement when the oldest
    is older than max_age_days: droplet, wait until active, end-to-end check (a
    web_connectivity control request), DNS A/AAAA <n>.<dns_zone>, row in
    test_helper_instances;
  - then drains the oldest hosts beyond `count` (no longer in DNS nor served by
    GET /api/v1/test-helpers).
A new droplet that fails its check is destroyed and the run exits 1. The droplet name is
journaled before the create call, so a run killed midway is finished (adopted) by the next
one, never duplicated.
"""


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("rotate", parents=parents,
                              help="create, drain and destroy test-helper hosts",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (create/drain/destroy); change nothing")
    jobmetrics.add_option(p, METRICS)
    # Tests and drills: the current time, to age hosts without waiting.
    p.add_argument("--now", type=datetime_arg, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def read_token(cfg: Config) -> str:
    """The API token: configured, or the first line of token_file. ValueError if none."""
    rc = cfg.rotation
    if rc.token:
        return rc.token.strip()
    if not rc.token_file:
        raise ValueError("no API token: set [rotation] token or token_file")
    path = cfg.path(rc.token_file)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"cannot read the token file {path}: {e.strerror}") from e
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


async def run(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend.jobs.rotation.digitalocean import DigitalOcean

    rc = cfg.rotation
    try:
        rotate.validate(rc)
        token = read_token(cfg)
        user_data = cfg.path(rc.user_data_file).read_text(encoding="utf-8") \
            if rc.user_data_file else ""
    except ValueError as e:
        return JOB.usage(f"bad [rotation] configuration: {e}")
    except OSError as e:
        return JOB.usage(f"cannot read user_data_file: {e}")
    workdir = cfg.path("rotation")
    workdir.mkdir(parents=True, exist_ok=True)
    lock = None
    if not args.dry_run:
        lock = try_flock(workdir / "rotate.lock", write_pid=True)
        if lock is None:
            return JOB.fail(f"another rotate run is in progress ({workdir / 'rotate.lock'})",
                            EXIT_LOCKED)
    now = args.now or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    provider = DigitalOcean(rc.api_url, token, timeout=max(30.0, rc.check_timeout))
    rotator = rotate.Rotator(rc, provider, lambda: open_database(cfg),
                             workdir / "pending.json", now=now, say=JOB.say, user_data=user_data)
    t0 = time.monotonic()
    error = ""
    try:
        plan = await rotator.plan(dry_run=args.dry_run)
        for line in plan.describe():
            JOB.say(("plan: " if args.dry_run else "") + line)
        if args.dry_run:
            JOB.say("dry run: nothing changed")
            return 0
        await rotator.apply(plan)
    except (ProviderError, RotationError, DatabaseError, JournalError) as e:
        error = str(e) or type(e).__name__
    finally:
        await provider.close()
        if lock is not None:
            release_flock(lock)
    seconds = time.monotonic() - t0
    result = rotator.result
    # Written after failures too: what the run did before failing.
    JOB.write_metrics(args, cfg, METRICS, not error, seconds, _metrics(result))
    if error:
        log.error("rotate failed", extra={"error": error, "seconds": round(seconds, 3)})
        return JOB.fail(error)
    assert result is not None
    JOB.say(f"done: {result.live} live, {result.created} created, {result.drained} drained, "
         f"{result.destroyed} destroyed, {result.forgotten} forgotten"
         + (f", {result.orphans} orphan droplet(s)" if result.orphans else ""))
    # Prefixed: "created" would clash with the LogRecord attribute of that name.
    log.info("rotate done", extra={**{f"hosts_{k}": v for k, v in vars(result).items()},
                                   "seconds": round(seconds, 3)})
    return 0


def _metrics(r: Result | None) -> dict[str, tuple[str, float]]:
    return {
        "live": ("Live test helpers after the latest rotate run", r.live if r else float("nan")),
        "created": ("Test helpers created by the latest rotate run", r.created if r else 0),
        "drained": ("Test helpers drained by the latest rotate run", r.drained if r else 0),
        "destroyed": ("Test helpers destroyed by the latest rotate run",
                      r.destroyed if r else 0),
        "orphans": ("Droplets with the rotation's name prefix in no table row",
                    r.orphans if r else float("nan")),
    }
