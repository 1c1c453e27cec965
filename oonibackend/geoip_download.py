"""`oonibackend download-geoip [--source URL_TEMPLATE] [--month YYYY-MM] [--dry-run]`.

Fetches the monthly country and ASN databases (db-ip "lite" by default:
`dbip-country-lite-YYYY-MM.mmdb.gz`, `dbip-asn-lite-YYYY-MM.mmdb.gz`), decompresses each
into a temporary file beside its target, checks it (it opens as a MaxMind database of the
right type and answers lookups of well-known addresses), and only then moves it over
`geoip.cc_db` / `geoip.asn_db` with `os.replace` (file and directory fsynced). A running API
notices the new files within `geoip.reload_interval` seconds (see oonibackend/geoip.py).
Until the current month's files are published the previous month's are used.

Exit status: 0 replaced (or, with --dry-run, valid), 1 failed (the live files are untouched
and the temporary files removed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from oonibackend import jobmetrics
from oonibackend.asnmeta.source import (
    DEFAULT_TIMEOUT,
    SourceError,
    SourceNotFound,
    display,
    iter_source,
)
from oonibackend.fileutil import fsync_dir, release_flock, try_flock

if TYPE_CHECKING:
    from oonibackend.config import Config

PROG = "oonibackend download-geoip"
JOB = "geoip"
KINDS = ("country", "asn")
# The file names of a directory source (db-ip's names).
DEFAULT_NAME = "dbip-{kind}-lite-{month}.mmdb.gz"
# Every database must answer for these (public resolvers, in every real database).
VERIFY_ADDRESSES = ("8.8.8.8", "1.1.1.1")
MAX_BYTES = 512 * 1024 * 1024  # one decompressed database
MIN_RATIO = 0.5  # a new file below half the size of the live one is refused unless forced
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])", re.ASCII)
_CC = re.compile(r"[A-Z]{2}", re.ASCII)

log = logging.getLogger("oonibackend.geoip")
Progress = Callable[[str], None]


class DownloadError(Exception):
    """A database could not be fetched or is not valid; nothing was replaced."""


class DownloadLocked(DownloadError):
    """Another download-geoip holds the lock."""


# ---------------------------------------------------------------- pure parts


def parse_month(value: str) -> str:
    """`YYYY-MM` validated; ValueError otherwise."""
    if not _MONTH.fullmatch(value):
        raise ValueError(f"month must be YYYY-MM, got {value[:20]!r}")
    return value


def previous_month(month: str) -> str:
    y, m = (int(x) for x in parse_month(month).split("-"))
    return f"{y - 1}-12" if m == 1 else f"{y}-{m - 1:02d}"


def candidate_months(explicit: str | None, today: dt.date) -> list[str]:
    """The months to try: an explicit one alone, else this month (UTC) then the previous."""
    if explicit:
        return [parse_month(explicit)]
    current = f"{today.year}-{today.month:02d}"
    return [current, previous_month(current)]


def check_template(template: str) -> None:
    """ValueError for a template naming no kind (both files would be the same)."""
    if ("{month}" in template) and "{kind}" not in template:
        raise ValueError("the source template must contain {kind} (country or asn)")


def source_url(template: str, kind: str, month: str) -> str:
    """The URL or path of one file. A template without placeholders is a directory (path,
    file:// or http(s) URL) holding db-ip's file names."""
    if "{kind}" not in template:
        template = template.rstrip("/") + "/" + DEFAULT_NAME
    return template.replace("{kind}", kind).replace("{month}", month)


def type_matches(kind: str, database_type: str) -> bool:
    """Whether a database's metadata type suits `kind` (DBIP-Country-Lite, GeoLite2-ASN, ...).
    City databases carry the country too."""
    t = database_type.lower()
    return ("country" in t or "city" in t) if kind == "country" else "asn" in t


@dataclass
class DbInfo:
    kind: str
    database_type: str
    build_epoch: int
    size: int
    month: str = ""


def verify(path: Path, kind: str) -> DbInfo:
    """Open `path` as a `kind` database and look up VERIFY_ADDRESSES; DownloadError."""
    import maxminddb

    from oonibackend.geoip import as_of, country_of

    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
        raise DownloadError(f"not a valid MaxMind database: {e}") from e
    try:
        meta = reader.metadata()
        if not type_matches(kind, str(meta.database_type)):
            raise DownloadError(f"database type {meta.database_type!r} does not hold "
                                f"{kind} data")
        for ip in VERIFY_ADDRESSES:
            try:
                rec = reader.get(ip)
            except (ValueError, maxminddb.InvalidDatabaseError) as e:
                raise DownloadError(f"lookup of {ip} failed: {e}") from e
            if kind == "country":
                cc = country_of(rec)
                if cc is None or not _CC.fullmatch(cc):
                    raise DownloadError(f"no country for {ip}")
            else:
                asn, _ = as_of(rec)
                if asn is None or asn <= 0:
                    raise DownloadError(f"no AS number for {ip}")
        return DbInfo(kind, str(meta.database_type), int(meta.build_epoch),
                      path.stat().st_size)
    finally:
        reader.close()


# ---------------------------------------------------------------- files


def _temp_beside(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


def _remove_stale_temps(target: Path) -> None:
    """Temporary files of a run that was killed (we hold the lock: none is in use)."""
    for p in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


async def fetch(url: str, dest: Path, *, max_bytes: int, timeout: float) -> int:
    """Write the (gunzipped) file at `url` into `dest`, fsynced; its size."""
    size = 0
    with open(dest, "wb") as f:
        async with contextlib.aclosing(iter_source(url, max_bytes=max_bytes,
                                                   timeout=timeout)) as chunks:
            async for data in chunks:
                f.write(data)
                size += len(data)
        f.flush()
        os.fsync(f.fileno())
    return size


def _replace(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    fsync_dir(target.parent)


# ---------------------------------------------------------------- the job


@dataclass
class Options:
    template: str
    months: list[str]
    dry_run: bool = False
    force: bool = False
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = MAX_BYTES


async def download(targets: dict[str, Path], opts: Options,
                   say: Progress = lambda _m: None) -> dict[str, DbInfo]:
    """Fetch, verify and install both databases; DownloadError / SourceError otherwise, with
    the live files untouched and no temporary file left behind."""
    import asyncio

    temps: dict[str, Path] = {}
    try:
        infos: dict[str, DbInfo] = {}
        for i, month in enumerate(opts.months):
            try:
                for kind in KINDS:
                    url = source_url(opts.template, kind, month)
                    temps[kind] = _temp_beside(targets[kind])
                    say(f"fetching {display(url)}")
                    await fetch(url, temps[kind], max_bytes=opts.max_bytes,
                                timeout=opts.timeout)
                break
            except SourceNotFound as e:
                for p in temps.values():
                    p.unlink(missing_ok=True)
                temps.clear()
                if i + 1 == len(opts.months):
                    raise
                say(f"{month} not published yet ({e}); trying {opts.months[i + 1]}")
        for kind in KINDS:
            try:
                info = await asyncio.to_thread(verify, temps[kind], kind)
            except DownloadError as e:
                raise DownloadError(f"{kind} database of {month}: {e}") from e
            info.month = month
            infos[kind] = info
            live = targets[kind].stat().st_size if targets[kind].is_file() else 0
            if not opts.force and info.size < live * MIN_RATIO:
                raise DownloadError(f"{kind} database of {month}: {info.size} bytes, less "
                                    f"than {MIN_RATIO:.0%} of the current {live} (use "
                                    f"--force to install it anyway)")
            say(f"verified {kind} database of {month}: {info.database_type}, "
                f"{info.size} bytes, built "
                f"{dt.datetime.fromtimestamp(info.build_epoch, dt.UTC):%Y-%m-%d}")
        if opts.dry_run:
            return infos
        for kind in KINDS:
            await asyncio.to_thread(_replace, temps.pop(kind), targets[kind])
            say(f"installed {targets[kind]}")
        return infos
    finally:
        for p in temps.values():
            p.unlink(missing_ok=True)


async def install(cfg: Config, opts: Options,
                  say: Progress = lambda _m: None) -> dict[str, DbInfo]:
    """`download` into geoip.cc_db / geoip.asn_db under the download lock, after removing the
    temporary files of a killed run; DownloadLocked when another download runs, else
    DownloadError, SourceError or OSError, with the live files untouched."""
    targets = {"country": cfg.path(cfg.geoip.cc_db), "asn": cfg.path(cfg.geoip.asn_db)}
    for t in targets.values():
        t.parent.mkdir(parents=True, exist_ok=True)
    lock = try_flock(targets["country"].parent / ".download-geoip.lock")
    if lock is None:
        raise DownloadLocked("another download-geoip is running")
    try:
        for t in targets.values():
            _remove_stale_temps(t)
        return await download(targets, opts, say)
    finally:
        release_flock(lock)


# ---------------------------------------------------------------- command line


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download-geoip", help="download and install the monthly GeoIP databases",
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
    jobmetrics.add_option(p, "geoip")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _write_metrics(args: argparse.Namespace, cfg: Config, infos: dict[str, DbInfo] | None,
                   seconds: float) -> None:
    path = jobmetrics.path_for(args, cfg, JOB)
    values: dict[str, tuple[str, float]] = {}
    for kind in KINDS:
        info = (infos or {}).get(kind)
        values[f"{kind}_build_timestamp_seconds"] = (
            f"Build time of the {kind} database installed by the latest run (0: none)",
            info.build_epoch if info else 0)
        values[f"{kind}_bytes"] = (f"Size of the {kind} database installed by the latest run",
                                   info.size if info else 0)
    try:
        jobmetrics.write(path, JOB, infos is not None, seconds, values)
    except OSError as e:
        log.warning("cannot write the metrics file", extra={"path": str(path),
                                                            "error": str(e)})


async def run(args: argparse.Namespace, cfg: Config) -> int:
    template = args.source or cfg.geoip.download_url
    try:
        months = candidate_months(args.month, dt.datetime.now(dt.UTC).date())
        check_template(template)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if args.timeout <= 0 or args.max_bytes <= 0:
        print(f"{PROG}: --timeout and --max-bytes must be positive", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    infos: dict[str, DbInfo] | None = None
    try:
        opts = Options(template, months, dry_run=args.dry_run, force=args.force,
                       timeout=args.timeout, max_bytes=args.max_bytes)
        infos = await install(cfg, opts, _say)
    except DownloadLocked as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except (DownloadError, SourceError) as e:
        print(f"{PROG}: {e}; nothing replaced", file=sys.stderr)
    except OSError as e:
        print(f"{PROG}: {e.strerror or e} ({e.filename or ''}); nothing replaced",
              file=sys.stderr)
    seconds = time.monotonic() - t0
    if not args.dry_run:
        _write_metrics(args, cfg, infos, seconds)
    if infos is None:
        return 1
    month = infos["country"].month
    if args.dry_run:
        _say(f"dry run: the {month} databases are valid; nothing replaced")
    log.info("geoip download done", extra={"month": month, "dry_run": args.dry_run,
                                           "seconds": round(seconds, 3)})
    return 0

