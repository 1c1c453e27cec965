"""`oonibackend bootstrap`: load every reference dataset of a fresh install.

Exit status: 0 every selected dataset loaded (or already loaded), 1 one or more failed (each
failed one is left as it was; the others are loaded), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oonibackend import refdata
from oonibackend.exitcodes import EXIT_FAILED
from oonibackend.jobs.harness import Job
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend bootstrap")
# The public sources of the datasets whose command has no default one.
TEST_LISTS_SOURCE = "https://github.com/citizenlab/test-lists.git"
FINGERPRINTS_SOURCE = "https://github.com/ooni/blocking-fingerprints.git"
DEFAULT_TIMEOUT = 300.0
NAMES = tuple(d.name for d in refdata.DATASETS)

DESCRIPTION = f"""\
Load every reference dataset from its public source, in turn, so that a fresh install
scores and geolocates measurements properly (without fingerprints a block page scores "OK",
without GeoIP every probe is ZZ / AS0):

  test-lists    CitizenLab URL test lists       {TEST_LISTS_SOURCE}
  fingerprints  OONI's blocking fingerprints    {FINGERPRINTS_SOURCE}
  asnmeta       AS-to-organisation history      [asnmeta] source
  geoip         country and ASN databases       [geoip] download_url (db-ip lite)

By default only the empty datasets are loaded (a second run does nothing); --force reloads
the selected ones. Each is loaded exactly as its own command does it (update-citizenlab,
update-fingerprints, update-asnmeta, download-geoip: validated, then swapped in atomically),
with their sanity checks. A dataset that fails is left as it was and the next one is still
loaded; the exit status is 1 if any failed. Progress goes to stderr.

Works with `oonibackend run` up (through its database owner) or down (the database is
opened directly).
"""


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {', '.join(unknown) or repr(value)} (one of {', '.join(NAMES)})")
    return names


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bootstrap", parents=parents,
        help="load every reference dataset (test lists, fingerprints, AS names, GeoIP) from "
             "its public source",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", type=_names, metavar="NAME[,NAME]",
                   help=f"only these datasets ({', '.join(NAMES)})")
    p.add_argument("--skip", type=_names, metavar="NAME[,NAME]",
                   help="every dataset but these")
    p.add_argument("--force", action="store_true",
                   help="reload the selected datasets even if they are already loaded")
    p.add_argument("--test-lists-source", metavar="DIR_OR_GIT_URL",
                   help=f"test-lists checkout or git URL (default {TEST_LISTS_SOURCE})")
    p.add_argument("--fingerprints-source", metavar="DIR_OR_URL",
                   help="directory, http(s) directory URL or git URL (default "
                        f"{FINGERPRINTS_SOURCE})")
    p.add_argument("--asnmeta-source", metavar="URL_OR_FILE",
                   help="URL or file (default: [asnmeta] source)")
    p.add_argument("--geoip-source", metavar="URL_TEMPLATE",
                   help="URL template with {kind} and {month}, or a directory (default: "
                        "[geoip] download_url)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="time limit of each download or clone (default %(default)g)")
    p.set_defaults(func=run)


# ---------------------------------------------------------------- progress


class Progress:
    """Lines to stderr: a step header, the importer's own messages indented, a step result."""

    def __init__(self, total: int) -> None:
        self.total = total

    def step(self, i: int, msg: str) -> None:
        print(f"[{i}/{self.total}] {msg}", file=sys.stderr, flush=True)

    def detail(self, msg: str) -> None:
        print(f"      {msg}", file=sys.stderr, flush=True)


Say = Callable[[str], None]


# ---------------------------------------------------------------- the importers


async def _test_lists(db: Any, cfg: Config, source: str, timeout: float, say: Say) -> str:
    from oonibackend.jobs.citizenlab.importer import import_citizenlab
    from oonibackend.jobs.citizenlab.source import checkout

    async with checkout(source, timeout) as repo:
        stats = await import_citizenlab(db, repo, progress=say)
    return f"{stats.rows:,} rows"


async def _fingerprints(db: Any, cfg: Config, source: str, timeout: float, say: Say) -> str:
    from oonibackend.jobs.fingerprints.importer import import_fingerprints
    from oonibackend.jobs.fingerprints.parse import read_dir
    from oonibackend.jobs.fingerprints.source import open_source

    async with open_source(source, timeout) as src:
        fps = await asyncio.to_thread(read_dir, src)
        stats = await import_fingerprints(db, fps, progress=say)
    return f"{stats.dns + stats.http:,} rows ({stats.dns:,} DNS, {stats.http:,} HTTP)"


async def _asnmeta(db: Any, cfg: Config, source: str, timeout: float, say: Say) -> str:
    from oonibackend.jobs.asnmeta.importer import import_asnmeta
    from oonibackend.jobs.asnmeta.source import iter_source

    async with aclosing(iter_source(source, max_bytes=cfg.asnmeta.max_bytes,
                                    timeout=timeout)) as chunks:
        stats = await import_asnmeta(db, chunks, progress=say)
    return f"{stats.rows:,} rows ({stats.parsed.asns:,} ASNs)"


async def _geoip(db: Any, cfg: Config, source: str, timeout: float, say: Say) -> str:
    from oonibackend.jobs.geoip import importer as g

    g.check_template(source)
    months = g.candidate_months(None, dt.datetime.now(dt.UTC).date())
    infos = await g.install(cfg, g.Options(source, months, timeout=timeout), say)
    return f"country and ASN databases of {infos['country'].month}"


Loader = Callable[[Any, "Config", str, float, Say], Awaitable[str]]


@dataclass
class Step:
    dataset: refdata.Dataset
    source: str
    load: Loader

    @property
    def needs_db(self) -> bool:
        return bool(self.dataset.tables)


def _display(source: str) -> str:
    from oonibackend.jobs.asnmeta.source import display

    return display(source)


def plan(args: argparse.Namespace, cfg: Config) -> list[Step]:
    """The selected datasets, in DATASETS order, with their sources."""
    sources = {"test-lists": (args.test_lists_source or TEST_LISTS_SOURCE, _test_lists),
               "fingerprints": (args.fingerprints_source or FINGERPRINTS_SOURCE,
                                _fingerprints),
               "asnmeta": (args.asnmeta_source or cfg.asnmeta.source, _asnmeta),
               "geoip": (args.geoip_source or cfg.geoip.download_url, _geoip)}
    chosen = set(args.only or NAMES) - set(args.skip or ())
    return [Step(d, *sources[d.name]) for d in refdata.DATASETS if d.name in chosen]


# ---------------------------------------------------------------- the job


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} ({e.filename})" if e.filename else e.strerror
    return str(e) or type(e).__name__


async def _run_steps(steps: list[Step], db: Any, cfg: Config, args: argparse.Namespace
                     ) -> dict[str, str]:
    """Each step in turn; the failures, by dataset name."""
    progress = Progress(len(steps))
    current = await refdata.status(db, cfg) if db is not None else {
        "geoip": await asyncio.to_thread(refdata.geoip_present, cfg)}
    failed: dict[str, str] = {}
    for i, step in enumerate(steps, 1):
        d = step.dataset
        have = current.get(d.key, 0)
        if have > 0 and not args.force:
            what = "installed" if not d.tables else f"{have:,} rows"
            progress.step(i, f"{d.label}: already loaded ({what}), skipped (--force reloads)")
            continue
        where = f"{d.label} from {_display(step.source)}"
        progress.step(i, f"{where} ...")
        t0 = time.monotonic()
        try:
            result = await step.load(db, cfg, step.source, args.timeout, progress.detail)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # every importer error: reported, then the next dataset
            failed[d.name] = _reason(e)
            progress.step(i, f"{where}: FAILED after {time.monotonic() - t0:.1f} s: "
                             f"{failed[d.name]}")
            continue
        progress.step(i, f"{where}: {result} in {time.monotonic() - t0:.1f} s")
    return failed


async def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.timeout <= 0:
        return JOB.usage("--timeout must be positive")
    steps = plan(args, cfg)
    if not steps:
        return JOB.usage("nothing selected (--only / --skip)")
    try:
        if any(s.needs_db for s in steps):
            async with JOB.database(cfg) as db:
                failed = await _run_steps(steps, db, cfg, args)
        else:
            failed = await _run_steps(steps, None, cfg, args)
    except DatabaseError as e:
        return JOB.fail(f"database error: {e}")
    if failed:
        JOB.fail(f"{len(failed)} of {len(steps)} datasets failed (left as they were):")
        for name, why in failed.items():
            print(f"  {name}: {why}", file=sys.stderr)
        print(f"retry with: oonibackend bootstrap --only {','.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{JOB.prog}: done", file=sys.stderr)
    return 0
