"""Test-list entries, `lists/<cc>.csv` files and the changes log (pure; no I/O).

A list file is kept as its header plus rows that remember their exact source text: rewriting
a file after an edit changes only the edited rows, so a pull request shows the user's change and
nothing else, whatever quoting or line ends the upstream file uses. New rows are written the way
CitizenLab's files are: minimal quoting, `\\n` line ends, the category description derived from
the code.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from oonibackend import validate
from oonibackend.jobs.citizenlab.lists import CATEGORIES, HEADER, MAX_URL_LENGTH

# The fields of an entry as the editor sends and receives them (no category_description).
ENTRY_KEYS = ("category_code", "date_added", "notes", "source", "url")
ACTIONS = ("add", "delete")
GLOBAL = "global"
MAX_TEXT = 1024  # notes, source

# http(s)://(domain | IPv4)(:port)?(path), as the legacy editor checked it.
_URL = re.compile(
    r"https?://"
    r"(?:(?:[A-Z0-9](?:[A-Z0-9-]{0,61}[A-Z0-9])?\.)+(?:[A-Z]{2,6}\.?|[A-Z0-9-]{2,}\.?)"
    r"|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})"
    r"(?::\d+)?"
    r"(?:/?|[/?]\S+)",
    re.IGNORECASE | re.ASCII,
)
_BAD_URL_CHARS = ("\r", "\n", "\t", "\\")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Entry = dict[str, str]
Changes = dict[str, list[dict[str, str]]]


class EntryError(Exception):
    """Refused input, answered 400 `{"error": message, "err_str": code, "err_args"?}`."""

    def __init__(self, message: str, err_str: str, err_args: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.err_str = err_str
        self.err_args = err_args


class ListFileError(Exception):
    """A list file is not in the CitizenLab format (a server-side problem, not the user's)."""


def parse_cc(value: object) -> str:
    """`global` or a lowercase two-letter code (the list's file name without `.csv`)."""
    if isinstance(value, str):
        cc = value.strip().lower()
        if cc == GLOBAL or validate.is_country_code(cc, case="lower"):
            return cc
    raise EntryError("Invalid country code", "err_invalid_country_code")


def check_url(url: str) -> None:
    """The legacy rules, plus a length cap: http(s), a domain or IPv4 host, an optional port,
    a non-empty path (`https://x.org/` is fine, `https://x.org` is not), no surrounding
    whitespace and none of CR, LF, TAB, backslash."""
    bad = EntryError("Invalid URL", "err_bad_url", {"url": url})
    if (len(url) > MAX_URL_LENGTH or url != url.strip()
            or any(c in url for c in _BAD_URL_CHARS) or not _URL.fullmatch(url)):
        raise bad
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise bad from None
    if parts.path == "":
        raise bad


def _shape(value: object, name: str) -> Entry:
    if not isinstance(value, dict) or set(value) != set(ENTRY_KEYS):
        raise EntryError(f"Invalid {name}: the keys must be {', '.join(ENTRY_KEYS)}",
                         "err_request_params")
    for k in ENTRY_KEYS:
        if not isinstance(value[k], str):
            raise EntryError(f"Invalid {name}: {k} must be a string", "err_request_params")
    return {k: value[k] for k in ENTRY_KEYS}


def validate_entry(value: object) -> Entry:
    """A new entry, checked strictly (keys exactly ENTRY_KEYS, the URL rules, a known category,
    date `YYYY-MM-DD`, short single-line notes and source)."""
    entry = _shape(value, "new_entry")
    check_url(entry["url"])
    if entry["category_code"] not in CATEGORIES:
        raise EntryError("Invalid category code", "err_bad_category_code",
                         {"category_code": entry["category_code"]})
    date = entry["date_added"]
    try:
        if not _DATE.fullmatch(date):
            raise ValueError
        dt.date.fromisoformat(date)
    except ValueError:
        raise EntryError("Invalid date_added: expected YYYY-MM-DD", "err_bad_date",
                         {"date_added": date}) from None
    for k in ("notes", "source"):
        if len(entry[k]) > MAX_TEXT or _CONTROL.search(entry[k]):
            raise EntryError(f"Invalid {k}: at most {MAX_TEXT} characters on one line",
                             "err_request_params")
    return entry


def old_entry(value: object) -> Entry:
    """An entry to replace or delete: only its shape is checked, since it must equal a row
    already in the list, and rows older than today's rules must stay editable (legacy validated
    old entries like new ones, so such rows could never be fixed or removed)."""
    return _shape(value, "old_entry")


def optional(value: object) -> object | None:
    """None for an absent entry (`null`, `{}`, `""` or missing), else the value as given."""
    return None if value is None or value == {} or value == "" else value


# ---------------------------------------------------------------------------------------------
# List files

@dataclass(frozen=True)
class Row:
    fields: tuple[str, ...]
    raw: str  # the exact source text, line end included

    def entry(self) -> Entry | None:
        """The entry of a well-formed row (None for blank or malformed lines, kept verbatim)."""
        f = self.fields
        if len(f) != len(HEADER):
            return None
        return {"url": f[0], "category_code": f[1], "date_added": f[3], "source": f[4],
                "notes": f[5]}


@dataclass(frozen=True)
class ListFile:
    header: str
    rows: tuple[Row, ...] = field(default_factory=tuple)

    def entries(self) -> list[Entry]:
        return [e for r in self.rows if (e := r.entry()) is not None]


def _lines(text: str) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end + 1]
        start = end + 1


def parse_list(text: str) -> ListFile:
    """A list file's rows with their source text; ListFileError for a wrong header or broken
    quoting. The reader consumes exactly one record's lines before yielding it, so the lines
    taken since the previous record are that record's text."""
    consumed: list[str] = []

    def feed() -> Iterator[str]:
        for line in _lines(text):
            consumed.append(line)
            yield line

    reader = csv.reader(feed(), strict=True)
    header: str | None = None
    rows: list[Row] = []
    try:
        for fields in reader:
            raw = "".join(consumed)
            consumed.clear()
            if header is None:
                got = [fields[0].lstrip("\ufeff"), *fields[1:]] if fields else []
                if got != HEADER:
                    raise ListFileError(f"the header must be {','.join(HEADER)}")
                header = raw
                continue
            rows.append(Row(tuple(fields), raw))
    except csv.Error as e:
        raise ListFileError(f"line {reader.line_num}: {e}") from e
    if header is None:
        raise ListFileError("empty file")
    if consumed:  # cannot happen with csv.reader, but never drop text
        rows.append(Row((), "".join(consumed)))
    return ListFile(header, tuple(rows))


def render_row(entry: Entry) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerow([
        entry["url"], entry["category_code"], CATEGORIES.get(entry["category_code"], ""),
        entry["date_added"], entry["source"], entry["notes"]])
    return out.getvalue()


def render_list(lf: ListFile) -> str:
    return lf.header + "".join(r.raw for r in lf.rows)


def apply_edit(lf: ListFile, old: Entry | None, new: Entry | None) -> ListFile:
    """Replace the row equal to `old` by `new`, or drop it (`new` None), or append `new` (`old`
    None). Identical copies of `old` are dropped too: they are the same test, and leaving one
    behind would make a deleted URL reappear. EntryError err_cannot_update_list when no row
    equals `old` (somebody changed the list since the editor read it)."""
    rows = list(lf.rows)
    if old is None:
        assert new is not None
        if rows and not rows[-1].raw.endswith("\n"):
            rows[-1] = Row(rows[-1].fields, rows[-1].raw + "\n")
        header = lf.header if rows or lf.header.endswith("\n") else lf.header + "\n"
        rows.append(Row(_fields(new), render_row(new)))
        return ListFile(header, tuple(rows))
    out: list[Row] = []
    found = False
    for r in rows:
        if r.entry() == old:
            if not found and new is not None:
                # keep the line end of the replaced row (last line may have none)
                text = render_row(new)
                if not r.raw.endswith("\n"):
                    text = text[:-1]
                out.append(Row(_fields(new), text))
            found = True
            continue
        out.append(r)
    if not found:
        raise EntryError("The entry to change is not in the list (it may have been changed "
                         "meanwhile: reload the list)", "err_cannot_update_list")
    return ListFile(lf.header, tuple(out))


def _fields(entry: Entry) -> tuple[str, ...]:
    return (entry["url"], entry["category_code"], CATEGORIES.get(entry["category_code"], ""),
            entry["date_added"], entry["source"], entry["notes"])


def edit_list(cc: str, lf: ListFile, global_lf: ListFile | None, old: Entry | None,
              new: Entry | None) -> ListFile:
    """The list after the edit, refusing a new URL already in this list or the global list
    (`err_duplicate_url`). Keeping a row's URL (changing its notes, say) is no duplicate."""
    result = apply_edit(lf, old, new)
    if new is not None and (old is None or new["url"] != old["url"]):
        url = new["url"]
        dup = sum(1 for e in result.entries() if e["url"] == url) > 1
        if not dup and cc != GLOBAL and global_lf is not None:
            dup = any(e["url"] == url for e in global_lf.entries())
        if dup:
            raise EntryError("The URL is already in the test list", "err_duplicate_url",
                             {"url": url})
    return result


# ---------------------------------------------------------------------------------------------
# The changes log: {cc: [entry + {"action": "add" | "delete"}]}, what the user's branch changes.

def merge_changes(changes: Changes, cc: str, old: Entry | None, new: Entry | None) -> Changes:
    """The log after an edit (a change = delete old + add new). An add then a delete of the
    same entry cancel out, and so do a delete then an add; countries left without changes are
    dropped, so `{}` means the branch changes nothing."""
    log = [dict(e) for e in changes.get(cc, [])]
    if old is not None:
        _record(log, old, "delete", "add")
    if new is not None:
        _record(log, new, "add", "delete")
    out = {k: [dict(e) for e in v] for k, v in changes.items() if k != cc}
    if log:
        out[cc] = log
    return out


def _record(log: list[dict[str, str]], entry: Entry, action: str, cancels: str) -> None:
    for i, e in enumerate(log):
        if e["action"] == cancels and {k: e[k] for k in ENTRY_KEYS} == entry:
            del log[i]
            return
    log.append({**entry, "action": action})


def parse_changes(obj: object) -> Changes:
    """A changes log read back from disk; ValueError when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("changes log is not an object")
    out: Changes = {}
    for cc, log in obj.items():
        try:
            ok = parse_cc(cc) == cc
        except EntryError:
            ok = False
        if not ok or not isinstance(log, list):
            raise ValueError(f"bad changes log for {cc!r}")
        items = []
        for e in log:
            if (not isinstance(e, dict) or set(e) != {*ENTRY_KEYS, "action"}
                    or e["action"] not in ACTIONS
                    or not all(isinstance(v, str) for v in e.values())):
                raise ValueError(f"bad change in {cc!r}")
            items.append(dict(e))
        out[cc] = items
    return out
