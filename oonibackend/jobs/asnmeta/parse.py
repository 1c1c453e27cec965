"""Parsing and validating the AS-to-organisation history, incrementally and without I/O.

The document is one JSON object, ASN (a string of digits) → list of history entries. An entry
is a 5-element list in either of the two orders found in OONI's files,

    [org_name, cc, changed, aut_name, source]     (the asnmeta column order)
    [org_name, cc, aut_name, changed, source]     (the legacy as-org-map order)

told apart by which of the middle fields is a date, or an object with those five keys.
`changed` is `YYYY-MM-DD` or `YYYYMMDD` (CAIDA style); empty or null means unknown and is
stored as 1970-01-01, so it sorts oldest. `cc` is two uppercase letters or empty.

The object is parsed as it arrives (`JSONObjectStream`): memory is bounded by the largest
single ASN history, not by the document. A malformed or truncated document is a
`FormatError`; an entry that breaks a rule is skipped and counted, and `AsnmetaParser.check`
refuses the whole document when more than a small fraction of entries were invalid (a file
like that is far more often a broken export than a few odd records).
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

from oonibackend import validate

MAX_FIELD_CHARS = 512  # org_name, aut_name, source
MAX_HISTORY = 10_000  # entries of one ASN
MAX_VALUE_CHARS = 1 << 20  # the JSON text of one ASN's history
MAX_INVALID_FRACTION = 0.01
MAX_REPORTED_ERRORS = 5
# ClickHouse's Date range.
MIN_DATE, MAX_DATE = dt.date(1970, 1, 1), dt.date(2149, 6, 6)
UNKNOWN_DATE = MIN_DATE
FIELDS = ("org_name", "cc", "changed", "aut_name", "source")
COLUMNS = ("asn", "org_name", "cc", "changed", "aut_name", "source")

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_COMPACT_DATE = re.compile(r"[0-9]{8}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WS = " \t\n\r"


class FormatError(Exception):
    """The document is not a valid AS-to-organisation history; nothing may be imported."""


@dataclass(frozen=True, slots=True)
class AsnEntry:
    """One row of the asnmeta table."""

    asn: int
    org_name: str
    cc: str
    changed: dt.date
    aut_name: str
    source: str

    def as_row(self) -> dict[str, Any]:
        return {"asn": self.asn, "org_name": self.org_name, "cc": self.cc,
                "changed": self.changed, "aut_name": self.aut_name, "source": self.source}


# ---------------------------------------------------------------- one entry


def parse_asn(key: str) -> int:
    """The AS number of an object key; ValueError unless 1 ≤ n < 2**32, digits only."""
    try:
        n = validate.asn(key, prefixes=("",), bounded=False)
    except validate.InvalidValue:
        raise ValueError(f"ASN key {key[:20]!r} is not a number") from None
    if not 0 < n <= validate.MAX_ASN:
        raise ValueError(f"ASN {n} out of range")
    return n


def parse_date(v: Any) -> dt.date:
    """`YYYY-MM-DD` or `YYYYMMDD` within ClickHouse's Date range; ValueError otherwise."""
    if not isinstance(v, str):
        raise ValueError(f"changed must be a date string, got {type(v).__name__}")
    if _ISO_DATE.fullmatch(v):
        d = dt.date.fromisoformat(v)
    elif _COMPACT_DATE.fullmatch(v):
        d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:]))
    else:
        raise ValueError(f"changed {v[:20]!r} is not YYYY-MM-DD")
    if not MIN_DATE <= d <= MAX_DATE:
        raise ValueError(f"changed {v} out of range")
    return d


def _is_date(v: Any) -> bool:
    try:
        parse_date(v)
    except ValueError:
        return False
    return True


def _text(name: str, v: Any, *, nullable: bool = True) -> str:
    if v is None and nullable:
        return ""
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a string, got {type(v).__name__}")
    if len(v) > MAX_FIELD_CHARS:
        raise ValueError(f"{name} longer than {MAX_FIELD_CHARS} characters")
    if _CONTROL.search(v):
        raise ValueError(f"{name} contains control characters")
    return v.strip()


def _fields(entry: Any) -> dict[str, Any]:
    """The five named fields of a list (either order) or object entry."""
    if isinstance(entry, dict):
        unknown = set(entry) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)[:3]}")
        return {k: entry.get(k) for k in FIELDS}
    if not isinstance(entry, list):
        raise ValueError(f"entry must be a list or an object, got {type(entry).__name__}")
    if len(entry) != len(FIELDS):
        raise ValueError(f"entry must have {len(FIELDS)} fields, got {len(entry)}")
    org_name, cc, a, b, source = entry
    if _is_date(a) or (not _is_date(b) and a in ("", None)):
        changed, aut_name = a, b  # [org_name, cc, changed, aut_name, source]
    elif _is_date(b) or b in ("", None):
        changed, aut_name = b, a  # [org_name, cc, aut_name, changed, source]
    else:
        raise ValueError(f"changed: neither {str(a)[:20]!r} nor {str(b)[:20]!r} is a "
                         f"YYYY-MM-DD date")
    return {"org_name": org_name, "cc": cc, "changed": changed, "aut_name": aut_name,
            "source": source}


def parse_entry(asn: int, entry: Any) -> AsnEntry:
    """One validated row; ValueError with the reason."""
    f = _fields(entry)
    cc = f["cc"] if f["cc"] is not None else ""
    if not isinstance(cc, str) or (cc and not validate.is_country_code(cc, case="upper")):
        raise ValueError(f"cc {str(cc)[:10]!r} is not two uppercase letters")
    changed = UNKNOWN_DATE if f["changed"] in ("", None) else parse_date(f["changed"])
    org_name = _text("org_name", f["org_name"], nullable=False)
    aut_name = _text("aut_name", f["aut_name"])
    if not org_name and not aut_name:
        raise ValueError("neither org_name nor aut_name")
    return AsnEntry(asn, org_name, cc, changed, aut_name, _text("source", f["source"]))


# ---------------------------------------------------------------- the JSON object


class JSONObjectStream:
    """Incremental parser of one top-level JSON object: `feed` text as it arrives and get
    the complete (key, value) members back; `close` at the end raises FormatError when the
    document is truncated or malformed. A single member larger than `max_value_chars` is
    refused rather than buffered."""

    def __init__(self, max_value_chars: int = MAX_VALUE_CHARS) -> None:
        self._dec = json.JSONDecoder()
        self._buf = ""
        self._pos = 0  # next unparsed character in _buf
        self._offset = 0  # characters dropped from the front of _buf
        self._state = "start"  # start, first, key, colon, value, comma, done
        self._key = ""
        self._max = max_value_chars

    def _error(self, msg: str) -> FormatError:
        return FormatError(f"invalid JSON at character {self._offset + self._pos}: {msg}")

    def _skip_ws(self) -> bool:
        """Move past whitespace; True when a character is available."""
        buf, pos = self._buf, self._pos
        while pos < len(buf) and buf[pos] in _WS:
            pos += 1
        self._pos = pos
        return pos < len(buf)

    def _decode(self, eof: bool) -> tuple[Any, bool]:
        """(value, complete) of the JSON value at _pos."""
        try:
            value, end = self._dec.raw_decode(self._buf, self._pos)
        except json.JSONDecodeError as e:
            if eof:  # the member never completed: a cut-off or broken document
                raise FormatError(f"truncated or invalid JSON at character "
                                  f"{self._offset + e.pos}: {e.msg}") from None
            if len(self._buf) - self._pos > self._max:
                raise self._error(f"one member is larger than {self._max} characters") from None
            return None, False
        # A number or literal ending with the buffer may continue in the next chunk.
        if end == len(self._buf) and not eof and not isinstance(value, list | dict | str):
            return None, False
        self._pos = end
        return value, True

    def _parse(self, eof: bool) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        while True:
            if not self._skip_ws():
                break
            c = self._buf[self._pos]
            st = self._state
            if st == "start":
                if c != "{":
                    raise self._error("the document must be a JSON object")
                self._pos += 1
                self._state = "first"
            elif st in ("first", "key"):
                if c == "}" and st == "first":
                    self._pos += 1
                    self._state = "done"
                    continue
                if c != '"':
                    raise self._error("expected a member name")
                key, ok = self._decode(eof)
                if not ok:
                    break
                self._key, self._state = key, "colon"
            elif st == "colon":
                if c != ":":
                    raise self._error("expected ':'")
                self._pos += 1
                self._state = "value"
            elif st == "value":
                value, ok = self._decode(eof)
                if not ok:
                    break
                out.append((self._key, value))
                self._state = "comma"
            elif st == "comma":
                self._pos += 1
                if c == ",":
                    self._state = "key"
                elif c == "}":
                    self._state = "done"
                else:
                    self._pos -= 1
                    raise self._error("expected ',' or '}'")
            else:  # done: only whitespace may follow
                raise self._error("data after the end of the object")
        if self._pos > 65536:  # drop what is parsed, keep the buffer small
            self._offset += self._pos
            self._buf, self._pos = self._buf[self._pos:], 0
        return out

    def feed(self, text: str) -> list[tuple[str, Any]]:
        self._buf += text
        return self._parse(eof=False)

    def close(self) -> list[tuple[str, Any]]:
        out = self._parse(eof=True)
        if self._state == "start":
            raise FormatError("empty document (expected a JSON object)")
        if self._state != "done":
            raise FormatError(f"truncated JSON: the document ends at character "
                              f"{self._offset + len(self._buf)} inside the object")
        return out


# ---------------------------------------------------------------- the document


@dataclass
class ParseStats:
    asns: int = 0
    entries: int = 0  # valid rows
    invalid: int = 0  # skipped entries
    duplicates: int = 0  # identical entries of one ASN, dropped
    errors: list[str] = field(default_factory=list)  # the first few reasons

    @property
    def seen(self) -> int:
        return self.entries + self.invalid


class AsnmetaParser:
    """Bytes of the document in, validated rows out (see the module docstring)."""

    def __init__(self, max_value_chars: int = MAX_VALUE_CHARS) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")("strict")
        self._json = JSONObjectStream(max_value_chars)
        self._seen: set[int] = set()
        self.stats = ParseStats()

    def _invalid(self, where: str, reason: str, n: int = 1) -> None:
        self.stats.invalid += n
        if len(self.stats.errors) < MAX_REPORTED_ERRORS:
            self.stats.errors.append(f"{where}: {reason}")

    def _member(self, key: str, history: Any) -> list[AsnEntry]:
        n = len(history) if isinstance(history, list) else 1
        try:
            asn = parse_asn(key)
        except ValueError as e:
            self._invalid(f"ASN {key[:20]!r}", str(e), n)
            return []
        if asn in self._seen:
            self._invalid(f"ASN {asn}", "duplicate key", n)
            return []
        self._seen.add(asn)
        if not isinstance(history, list):
            self._invalid(f"ASN {asn}", "the history must be a list")
            return []
        if len(history) > MAX_HISTORY:
            self._invalid(f"ASN {asn}", f"more than {MAX_HISTORY} entries", n)
            return []
        self.stats.asns += 1
        rows: list[AsnEntry] = []
        unique: set[AsnEntry] = set()
        for i, entry in enumerate(history):
            try:
                row = parse_entry(asn, entry)
            except ValueError as e:
                self._invalid(f"ASN {asn} entry {i}", str(e))
                continue
            if row in unique:
                self.stats.duplicates += 1
                continue
            unique.add(row)
            rows.append(row)
        self.stats.entries += len(rows)
        return rows

    def _members(self, members: list[tuple[str, Any]]) -> list[AsnEntry]:
        out: list[AsnEntry] = []
        for key, history in members:
            out.extend(self._member(key, history))
        return out

    def feed(self, data: bytes) -> list[AsnEntry]:
        try:
            text = self._text.decode(data)
        except UnicodeDecodeError as e:
            raise FormatError(f"not UTF-8: {e.reason}") from e
        return self._members(self._json.feed(text))

    def finish(self) -> list[AsnEntry]:
        """The last rows; FormatError when the document is truncated or malformed."""
        try:
            text = self._text.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise FormatError(f"not UTF-8 (truncated character): {e.reason}") from e
        rows = self._members(self._json.feed(text)) if text else []
        return rows + self._members(self._json.close())

    def check(self, max_invalid: float = MAX_INVALID_FRACTION) -> None:
        """FormatError when more than `max_invalid` of the entries were invalid."""
        s = self.stats
        if s.invalid and s.invalid > max_invalid * s.seen:
            raise FormatError(f"{s.invalid} of {s.seen} entries are invalid (more than "
                              f"{max_invalid:.0%}), e.g. " + "; ".join(s.errors))


def parse_document(data: bytes, max_invalid: float = MAX_INVALID_FRACTION
                   ) -> tuple[list[AsnEntry], ParseStats]:
    """A whole document at once (tests, small files); FormatError as the streaming parser."""
    p = AsnmetaParser()
    rows = p.feed(data) + p.finish()
    p.check(max_invalid)
    return rows, p.stats
