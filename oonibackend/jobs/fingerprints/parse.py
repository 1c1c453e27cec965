"""Validation of blocking-fingerprint files: the CSV files of ooni/blocking-fingerprints and
the JSON fixtures (lists of records, used by tests and development).

The fastpath confirms blocking from these rows (docs/fastpath.md §3), so a broken file must
never reach the tables: every record is checked, and one bad line aborts the import with
`file:line: message`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oonibackend.validate import is_country_code

HEADER = ["name", "scope", "other_names", "location_found", "pattern_type", "pattern",
          "confidence_no_fp", "expected_countries", "source", "exp_url", "notes"]
# The columns the fastpath reads (§3.1), in its order.
MATCH_COLUMNS = HEADER[:8]
DNS_SCOPES = frozenset({"nat", "isp", "prod", "inst", "vbw", "fp"})
HTTP_SCOPES = DNS_SCOPES | {"injb", "prov"}
PATTERN_TYPES = frozenset({"full", "prefix", "contains", "regexp"})
KINDS = ("dns", "http")
_HEADER_LOCATION = re.compile(r"header\.[a-z0-9][a-z0-9_-]*")

Row = dict[str, Any]


class FingerprintError(Exception):
    """A fingerprint file is invalid or missing; messages start with `file:line:`."""


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
        if cc.strip() and not is_country_code(cc.strip()):
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
