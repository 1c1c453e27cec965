"""`oonibackend update-fingerprints --source DIR_OR_URL`: refresh the blocking fingerprints.

The fastpath confirms blocking from these tables (docs/fastpath.md §3), so a broken file must
never reach them: every record is validated first (one bad line aborts with `file:line:
message`), the rows go into fingerprints_{dns,http}_tmp, are counted, and only then swapped in with
`EXCHANGE TABLES` (atomic for readers). After the swap the _tmp tables hold the previous
fingerprints, for inspection or a manual swap back, and the `fingerprints` dataset version is
bumped (oonibackend/storage/versions.py), which a running fastpath notices within seconds.

Sources: a directory with `fingerprints_dns.csv` and `fingerprints_http.csv` (the
ooni/blocking-fingerprints layout) or with the `fingerprints_dns.json` /
`fingerprints_http.json` fixtures (JSON lists of records, used by tests and development);
an http(s) URL of a directory holding the two CSV files; or a git URL (ending in `.git`, or
git://, ssh://, file://, git@...), cloned with --depth 1.

Exit status: 0 imported, 1 refused or failed (tables unchanged), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oonibackend.storage import DatabaseError, versions
from oonibackend.storage.swap import ImportRefused, check_size

if TYPE_CHECKING:
    from oonibackend.config import Config

PROG = "oonibackend update-fingerprints"
HEADER = ["name", "scope", "other_names", "location_found", "pattern_type", "pattern",
          "confidence_no_fp", "expected_countries", "source", "exp_url", "notes"]
# The columns the fastpath reads (§3.1), in its order.
MATCH_COLUMNS = HEADER[:8]
DNS_SCOPES = frozenset({"nat", "isp", "prod", "inst", "vbw", "fp"})
HTTP_SCOPES = DNS_SCOPES | {"injb", "prov"}
PATTERN_TYPES = frozenset({"full", "prefix", "contains", "regexp"})
KINDS = ("dns", "http")
MAX_DOWNLOAD = 64 * 1024 * 1024
DEFAULT_TIMEOUT = 300.0
BATCH_SIZE = 5000
_HEADER_LOCATION = re.compile(r"header\.[a-z0-9][a-z0-9_-]*")
_CC = re.compile(r"[A-Za-z]{2}")

Row = dict[str, Any]
Progress = Callable[[str], None]


class FingerprintError(Exception):
    """A fingerprint file is invalid or missing; messages start with `file:line:`."""


# ---------------------------------------------------------------- validation


def validate(rec: dict[str, Any], kind: str) -> Row:
    """One record as a table row (all columns, confidence as int); ValueError with the reason.
    """
    row: Row = {}
    for col in HEADER:
        v = rec.get(col, "")
        if col == "confidence_no_fp":
            row[col] = v
            continue
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise ValueError(f"{col} must be a string")
        row[col] = v
    name = row["name"]
    if not name or name != name.strip():
        raise ValueError(f"invalid name {name!r}")
    scopes = DNS_SCOPES if kind == "dns" else HTTP_SCOPES
    if row["scope"] not in scopes:
        raise ValueError(f"unknown scope {row['scope']!r} (expected one of "
                         f"{', '.join(sorted(scopes))})")
    if row["pattern_type"] not in PATTERN_TYPES:
        raise ValueError(f"unknown pattern_type {row['pattern_type']!r}")
    loc = row["location_found"]
    if kind == "dns" and loc != "dns":
        raise ValueError(f"location_found must be 'dns', got {loc!r}")
    if kind == "http" and loc != "body" and not _HEADER_LOCATION.fullmatch(loc):
        # Matching compares lower-cased header names with the rest of this value.
        raise ValueError(f"location_found must be 'body' or 'header.<lowercase name>', "
                         f"got {loc!r}")
    if not row["pattern"]:
        raise ValueError("empty pattern")
    if row["pattern_type"] == "regexp":
        try:
            re.compile(row["pattern"])
        except re.error as e:
            raise ValueError(f"pattern is not a valid regexp: {e}") from e
    conf = row["confidence_no_fp"]
    if isinstance(conf, str) and conf.strip().isdigit():
        conf = int(conf.strip())
    if isinstance(conf, bool) or not isinstance(conf, int) or not 0 <= conf <= 255:
        raise ValueError(f"confidence_no_fp must be an integer 0..255, got {conf!r}")
    row["confidence_no_fp"] = conf
    for cc in row["expected_countries"].strip().split(","):
        if cc.strip() and not _CC.fullmatch(cc.strip()):
            raise ValueError(f"invalid country code {cc.strip()!r} in expected_countries")
    return row


def _unique(rows: Iterable[tuple[str, Row]]) -> list[Row]:
    seen: dict[str, str] = {}
    out = []
    for where, row in rows:
        if row["name"] in seen:
            raise FingerprintError(f"{where}: duplicate name {row['name']!r} "
                                   f"(first at {seen[row['name']]})")
        seen[row["name"]] = where
        out.append(row)
    return out


def parse_csv(path: Path, kind: str) -> list[Row]:
    """Rows of one blocking-fingerprints CSV; FingerprintError at the first problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FingerprintError(f"{path}: not UTF-8: {e}") from e
    except OSError as e:
        raise FingerprintError(f"{path}: {e.strerror or e}") from e
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)

    def rows() -> Iterable[tuple[str, Row]]:
        header = next(reader, None)
        if header != HEADER:
            raise FingerprintError(f"{path}:1: header must be {','.join(HEADER)}")
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if not fields or fields == [""]:
                continue
            if len(fields) != len(HEADER):
                raise FingerprintError(f"{where}: expected {len(HEADER)} fields, "
                                       f"got {len(fields)}")
            try:
                yield where, validate(dict(zip(HEADER, fields, strict=True)), kind)
            except ValueError as e:
                raise FingerprintError(f"{where}: {e}") from e

    try:
        return _unique(rows())
    except csv.Error as e:
        raise FingerprintError(f"{path}:{reader.line_num}: {e}") from e


def parse_json(path: Path, kind: str) -> list[Row]:
    """Rows of a JSON list of records (the fixtures' format); errors name the record."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise FingerprintError(f"{path}: cannot read JSON: {e}") from e
    if not isinstance(data, list):
        raise FingerprintError(f"{path}: expected a JSON list of records")

    def rows() -> Iterable[tuple[str, Row]]:
        for i, rec in enumerate(data, 1):
            where = f"{path}:record {i}"
            if not isinstance(rec, dict):
                raise FingerprintError(f"{where}: not an object")
            unknown = set(rec) - set(HEADER)
            if unknown:
                raise FingerprintError(f"{where}: unknown keys {sorted(unknown)}")
            try:
                yield where, validate(rec, kind)
            except ValueError as e:
                raise FingerprintError(f"{where}: {e}") from e

    return _unique(rows())


@dataclass
class FingerprintSet:
    """Validated rows of both tables, and where they came from."""

    dns: list[Row]
    http: list[Row]
    files: tuple[Path, Path]

    def match_rows(self, kind: str) -> list[Row]:
        """The 8 columns the fastpath selects, as it would read them from the table."""
        return [{c: r[c] for c in MATCH_COLUMNS} for r in getattr(self, kind)]


def read_dir(directory: Path) -> FingerprintSet:
    """Both tables from `directory`: the CSV files if present, else the JSON fixtures."""
    csvs = [directory / f"fingerprints_{k}.csv" for k in KINDS]
    jsons = [directory / f"fingerprints_{k}.json" for k in KINDS]
    if any(p.exists() for p in csvs):
        files, parse = csvs, parse_csv
    elif any(p.exists() for p in jsons):
        files, parse = jsons, parse_json
    else:
        raise FingerprintError(f"{directory}: no fingerprints_dns.csv / fingerprints_http.csv "
                               f"(nor the .json variants)")
    for p in files:
        if not p.is_file():
            raise FingerprintError(f"{p}: missing")
    return FingerprintSet(parse(files[0], "dns"), parse(files[1], "http"),
                          (files[0], files[1]))


# ---------------------------------------------------------------- sources


def is_git_url(source: str) -> bool:
    if source.startswith(("git://", "ssh://", "file://", "git@")):
        return True
    return source.startswith(("http://", "https://")) and source.rstrip("/").endswith(".git")


async def download_dir(url: str, dest: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Fetch the two CSV files of an http(s) directory URL into `dest`."""
    import aiohttp

    base = url if url.endswith("/") else url + "/"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        for kind in KINDS:
            name = f"fingerprints_{kind}.csv"
            try:
                async with session.get(base + name) as resp:
                    if resp.status != 200:
                        raise FingerprintError(f"{base}{name}: HTTP {resp.status} (for a git "
                                               f"repository use its .git URL)")
                    data = await resp.content.read(MAX_DOWNLOAD + 1)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise FingerprintError(f"{base}{name}: {e or type(e).__name__}") from e
            if len(data) > MAX_DOWNLOAD:
                raise FingerprintError(f"{base}{name}: larger than {MAX_DOWNLOAD} bytes")
            (dest / name).write_bytes(data)


@contextlib.asynccontextmanager
async def open_source(source: str, timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[Path]:
    """A local directory with the files: `source` itself, a download or a shallow clone."""
    from oonibackend.citizenlab.source import SourceError, clone

    path = Path(source)
    if path.is_dir():
        yield path
        return
    if not (is_git_url(source) or source.startswith(("http://", "https://"))):
        raise FingerprintError(f"{source}: not a directory, an http(s) URL or a git URL")
    with tempfile.TemporaryDirectory(prefix="fingerprints-") as tmp:
        dest = Path(tmp) / "src"
        if is_git_url(source):
            try:
                await clone(source, dest, timeout)
            except SourceError as e:
                raise FingerprintError(str(e)) from e
        else:
            dest.mkdir()
            await download_dir(source, dest, timeout)
        yield dest


# ---------------------------------------------------------------- database


@dataclass
class ImportStats:
    dns: int
    http: int
    previous_dns: int
    previous_http: int

    def summary(self) -> str:
        return (f"imported {self.dns} DNS and {self.http} HTTP fingerprints; previous tables "
                f"had {self.previous_dns} and {self.previous_http}")


async def _count(db: Any, table: str) -> int:
    row = await db.query_one(f"SELECT count() AS n FROM {table}")
    return int(row["n"]) if row else 0


async def import_fingerprints(db: Any, fps: FingerprintSet, *, force: bool = False,
                              progress: Progress | None = None,
                              batch_size: int = BATCH_SIZE) -> ImportStats:
    """Load both _tmp tables, check them, then swap both in; on any failure the live tables
    are as they were (a failed second swap undoes the first)."""
    say = progress or (lambda _m: None)
    previous = {}
    for kind in KINDS:
        table = f"fingerprints_{kind}"
        rows: list[Row] = getattr(fps, kind)
        previous[kind] = await _count(db, table)
        check_size(table, len(rows), previous[kind], force)
    for kind in KINDS:
        table, rows = f"fingerprints_{kind}", getattr(fps, kind)
        await db.execute(f"TRUNCATE TABLE {table}_tmp")
        for start in range(0, len(rows), batch_size):
            await db.insert(f"{table}_tmp", rows[start:start + batch_size], columns=HEADER)
        loaded = await _count(db, f"{table}_tmp")
        if loaded != len(rows):
            raise ImportRefused(f"{table}_tmp holds {loaded} rows after inserting "
                                f"{len(rows)}; not swapping")
        say(f"loaded {loaded} rows into {table}_tmp")
    await db.execute("EXCHANGE TABLES fingerprints_dns AND fingerprints_dns_tmp")
    try:
        await db.execute("EXCHANGE TABLES fingerprints_http AND fingerprints_http_tmp")
    except BaseException:
        await db.execute("EXCHANGE TABLES fingerprints_dns AND fingerprints_dns_tmp")
        raise
    say("swapped fingerprints_dns and fingerprints_http with their _tmp tables")
    await versions.bump(db, versions.FINGERPRINTS)  # the fastpath reloads them at once
    return ImportStats(len(fps.dns), len(fps.http), previous["dns"], previous["http"])


# ---------------------------------------------------------------- command line


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "update-fingerprints", help="import the blocking fingerprints into the database",
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


def _say(msg: str) -> None:
    print(msg, flush=True)


async def run(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend.cli_db import open_database
    from oonibackend.storage.migrate import migrate

    try:
        async with open_source(args.source, args.timeout) as src:
            _say(f"reading fingerprints from {src}")
            fps = await asyncio.to_thread(read_dir, src)
            _say(f"read {len(fps.dns)} DNS and {len(fps.http)} HTTP fingerprints")
            async with open_database(cfg) as db:
                await migrate(db)  # a fresh data directory has no tables yet
                stats = await import_fingerprints(db, fps, force=args.force, progress=_say)
    except (FingerprintError, ImportRefused) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except DatabaseError as e:
        print(f"{PROG}: database error, nothing changed: {e}", file=sys.stderr)
        return 1
    _say(stats.summary())
    return 0
