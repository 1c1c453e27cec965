"""Fetch, verify and install the monthly GeoIP databases (`download-geoip`).

Fetches the monthly country and ASN databases (db-ip "lite" by default:
`dbip-country-lite-YYYY-MM.mmdb.gz`, `dbip-asn-lite-YYYY-MM.mmdb.gz`), decompresses each
into a temporary file beside its target, checks it (it opens as a MaxMind database of the
right type and answers lookups of well-known addresses), and only then moves it over
`geoip.cc_db` / `geoip.asn_db` with `os.replace` (file and directory fsynced). A running API
notices the new files within `geoip.reload_interval` seconds (see oonibackend/geoip.py).
Until the current month's files are published the previous month's are used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from oonibackend import validate
from oonibackend.fileutil import fsync_dir, release_flock, try_flock
from oonibackend.jobs.asnmeta.source import (
    DEFAULT_TIMEOUT,
    SourceNotFound,
    display,
    iter_source,
)

if TYPE_CHECKING:
    from oonibackend.config import Config

KINDS = ("country", "asn")
# The file names of a directory source (db-ip's names).
DEFAULT_NAME = "dbip-{kind}-lite-{month}.mmdb.gz"
# Every database must answer for these (public resolvers, in every real database).
VERIFY_ADDRESSES = ("8.8.8.8", "1.1.1.1")
MAX_BYTES = 512 * 1024 * 1024  # one decompressed database
MIN_RATIO = 0.5  # a new file below half the size of the live one is refused unless forced
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])", re.ASCII)

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
                if not validate.is_country_code(cc, case="upper"):
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
