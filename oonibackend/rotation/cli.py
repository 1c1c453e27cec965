"""`oonibackend rotate [--dry-run]`: test-helper rotation (see rotate.py for the rules).

Exit status: 0 done, 1 failed (provider, readiness or database error; what was done is
consistent and the next run carries on), 2 bad configuration, 3 another run holds the lock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from typing import TYPE_CHECKING

from oonibackend import jobmetrics
from oonibackend.cli import datetime_arg
from oonibackend.fileutil import release_flock, try_flock
from oonibackend.rotation import rotate
from oonibackend.rotation.journal import JournalError
from oonibackend.rotation.provider import ProviderError
from oonibackend.rotation.rotate import Result, RotationError
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

PROG = "oonibackend rotate"
JOB = "rotate"
log = logging.getLogger("oonibackend.rotation")

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("rotate", help="create, drain and destroy test-helper hosts",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (create/drain/destroy); change nothing")
    jobmetrics.add_option(p, "rotate")
    # Tests and drills: the current time, to age hosts without waiting.
    p.add_argument("--now", type=datetime_arg, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _fail(msg: str, code: int) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    return code


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
    from oonibackend.cli_db import open_database
    from oonibackend.rotation.digitalocean import DigitalOcean

    rc = cfg.rotation
    try:
        rotate.validate(rc)
        token = read_token(cfg)
        user_data = cfg.path(rc.user_data_file).read_text(encoding="utf-8") \
            if rc.user_data_file else ""
    except ValueError as e:
        return _fail(f"bad [rotation] configuration: {e}", 2)
    except OSError as e:
        return _fail(f"cannot read user_data_file: {e}", 2)
    workdir = cfg.path("rotation")
    workdir.mkdir(parents=True, exist_ok=True)
    lock = None
    if not args.dry_run:
        lock = try_flock(workdir / "rotate.lock", write_pid=True)
        if lock is None:
            return _fail(f"another rotate run is in progress ({workdir / 'rotate.lock'})", 3)
    now = args.now or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    provider = DigitalOcean(rc.api_url, token, timeout=max(30.0, rc.check_timeout))
    rotator = rotate.Rotator(rc, provider, lambda: open_database(cfg),
                             workdir / "pending.json", now=now, say=_say, user_data=user_data)
    t0 = time.monotonic()
    error = ""
    try:
        plan = await rotator.plan(dry_run=args.dry_run)
        for line in plan.describe():
            _say(("plan: " if args.dry_run else "") + line)
        if args.dry_run:
            _say("dry run: nothing changed")
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
    _write_metrics(args, cfg, result, not error, seconds)
    if error:
        log.error("rotate failed", extra={"error": error, "seconds": round(seconds, 3)})
        return _fail(error, 1)
    assert result is not None
    _say(f"done: {result.live} live, {result.created} created, {result.drained} drained, "
         f"{result.destroyed} destroyed, {result.forgotten} forgotten"
         + (f", {result.orphans} orphan droplet(s)" if result.orphans else ""))
    # Prefixed: "created" would clash with the LogRecord attribute of that name.
    log.info("rotate done", extra={**{f"hosts_{k}": v for k, v in vars(result).items()},
                                   "seconds": round(seconds, 3)})
    return 0


def _write_metrics(args: argparse.Namespace, cfg: Config, r: Result | None, ok: bool,
                   seconds: float) -> None:
    """Written after failures too: what the run did before failing."""
    path = jobmetrics.path_for(args, cfg, JOB)
    values: dict[str, tuple[str, float]] = {
        "live": ("Live test helpers after the latest rotate run", r.live if r else float("nan")),
        "created": ("Test helpers created by the latest rotate run", r.created if r else 0),
        "drained": ("Test helpers drained by the latest rotate run", r.drained if r else 0),
        "destroyed": ("Test helpers destroyed by the latest rotate run",
                      r.destroyed if r else 0),
        "orphans": ("Droplets with the rotation's name prefix in no table row",
                    r.orphans if r else float("nan")),
    }
    try:
        jobmetrics.write(path, JOB, ok, seconds, values)
    except OSError as e:
        log.warning("cannot write the metrics file", extra={"path": str(path),
                                                            "error": str(e)})
