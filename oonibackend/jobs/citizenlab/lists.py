"""Reading the CitizenLab test-lists repository: `lists/<cc>.csv` and `lists/global.csv`.

Validation is strict and happens before the database is touched: one bad line aborts the
whole import with a `file:line: message` error, because a half-imported list would silently
change what every probe in a country tests.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HEADER = ["url", "category_code", "category_description", "date_added", "source", "notes"]

# CitizenLab's category codes and descriptions (lists/00-LEGEND-new_category_codes.csv).
CATEGORIES: dict[str, str] = {
    "ALDR": "Alcohol & Drugs",
    "REL": "Religion",
    "PORN": "Pornography",
    "PROV": "Provocative Attire",
    "POLR": "Political Criticism",
    "HUMR": "Human Rights Issues",
    "ENV": "Environment",
    "MILX": "Terrorism and Militants",
    "HATE": "Hate Speech",
    "NEWS": "News Media",
    "XED": "Sex Education",
    "PUBH": "Public Health",
    "GMB": "Gambling",
    "ANON": "Anonymization and circumvention tools",
    "DATE": "Online Dating",
    "GRP": "Social Networking",
    "LGBT": "LGBT",
    "FILE": "File-sharing",
    "HACK": "Hacking Tools",
    "COMT": "Communication Tools",
    "MMED": "Media sharing",
    "HOST": "Hosting and Blogging Platforms",
    "SRCH": "Search Engines",
    "GAME": "Gaming",
    "CULTR": "Culture",
    "ECON": "Economics",
    "GOVT": "Government",
    "COMM": "E-commerce",
    "CTRL": "Control content",
    "IGO": "Intergovernmental Organizations",
    "MISC": "Miscellaneous content",
}
CATEGORY_CODES = frozenset(CATEGORIES)

GLOBAL_FILE = "global.csv"
GLOBAL_CC = "ZZ"  # cc of global rows in the citizenlab table (country lists: lowercase cc)
_COUNTRY_FILE = re.compile(r"^([a-z]{2})\.csv$")
# Files of the repository that are not URL lists: the legends (00-LEGEND-*.csv) and the
# regional CIS list, which has no country code.
_NOT_LISTS = re.compile(r"^(00-.*|cis)\.csv$")
MAX_URL_LENGTH = 2048


class ListError(Exception):
    """A test-list file is invalid; the message starts with `file:line:`."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the citizenlab table."""

    domain: str
    url: str
    cc: str
    category_code: str

    def as_row(self) -> dict[str, str]:
        return {"domain": self.domain, "url": self.url, "cc": self.cc,
                "category_code": self.category_code}


def list_cc(path: Path) -> str | None:
    """The table cc of a list file: lowercase cc, `ZZ` for global, None for non-list files.

    Raises ListError for a .csv whose name is neither (e.g. `ITA.csv`, `It.csv`).
    """
    name = path.name
    if name == GLOBAL_FILE:
        return GLOBAL_CC
    m = _COUNTRY_FILE.match(name)
    if m:
        return m.group(1)
    if _NOT_LISTS.match(name):
        return None
    raise ListError(f"{path}: file name is not a two-letter lowercase country code or "
                    f"{GLOBAL_FILE}")


def validate_url(url: str) -> str:
    """The lowercase host of an http(s) URL; ValueError with the reason otherwise."""
    if not url or url != url.strip() or any(c.isspace() for c in url):
        raise ValueError(f"invalid url {url!r}")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError("url too long")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ValueError(f"invalid url {url!r}: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url must be http or https: {url!r}")
    if not host:
        raise ValueError(f"url without a host: {url!r}")
    return host.lower()


def parse_file(path: Path, cc: str) -> Iterator[Entry]:
    """Entries of one list file; ListError at the first problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ListError(f"{path}: not UTF-8: {e}") from e
    except OSError as e:
        raise ListError(f"{path}: {e.strerror or e}") from e
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header != HEADER:
            raise ListError(f"{path}:1: header must be {','.join(HEADER)}")
        for row in reader:
            line = reader.line_num
            if not row or row == [""]:
                continue
            if len(row) != len(HEADER):
                raise ListError(f"{path}:{line}: expected {len(HEADER)} fields, got {len(row)}")
            url, category = row[0], row[1]
            try:
                domain = validate_url(url)
            except ValueError as e:
                raise ListError(f"{path}:{line}: {e}") from e
            if category not in CATEGORY_CODES:
                raise ListError(f"{path}:{line}: unknown category code {category!r}")
            yield Entry(domain=domain, url=url, cc=cc, category_code=category)
    except csv.Error as e:
        raise ListError(f"{path}:{reader.line_num}: {e}") from e


@dataclass
class ListSet:
    """Every entry of a repository, deduplicated, with what was read."""

    entries: list[Entry]
    files: int
    duplicates: int


def read_lists(repo: Path) -> ListSet:
    """Parse `repo/lists/*.csv`; ListError when anything is wrong."""
    lists_dir = repo / "lists"
    if not lists_dir.is_dir():
        raise ListError(f"{repo}: no lists/ directory (is this a test-lists checkout?)")
    seen: set[Entry] = set()
    entries: list[Entry] = []
    files = duplicates = 0
    have_global = False
    for path in sorted(lists_dir.glob("*.csv")):
        cc = list_cc(path)
        if cc is None:
            continue
        files += 1
        have_global = have_global or cc == GLOBAL_CC
        for e in parse_file(path, cc):
            if e in seen:
                duplicates += 1
                continue
            seen.add(e)
            entries.append(e)
    if not have_global:
        raise ListError(f"{lists_dir}: {GLOBAL_FILE} is missing")
    return ListSet(entries, files, duplicates)
