"""Query-string parsing for the read routes, tolerant the way Explorer needs it.

Explorer builds query strings with `URLSearchParams(object)` and axios, so:
* an empty value (`probe_cc=`) or the literal `undefined`/`null` means "absent";
* multi-values arrive comma-joined (`probe_cc=CN,IR,RU`), sometimes repeated;
* unknown parameters (`data=anomalies`, `webview=1`) are ignored;
* `probe_asn` comes as `AS3269` or `3269`;
* dates come as `2021-07-09`, `2021-7-9` (legacy's dateutil took both) or ISO datetimes.
Anything present but malformed raises `APIError` (400, `{"error": ...}`), never a 500.
The one exception: routes that legacy answered 200 `{"error"}` for `since=undefined` (the
aggregation charts, docs/api.md §2.8) ask `date(..., legacy_undefined=True)`.

Usage: `q = Query(request.query)`, then `q.cc_list("probe_cc")`, `q.date("since")`, ...
All values returned are safe to pass as `%(name)s` parameters of the storage layer.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping

from oonibackend.errors import APIError

_ABSENT = frozenset(("", "undefined", "null"))
_TRUE = frozenset(("true", "1", "yes"))
_FALSE = frozenset(("false", "0", "no"))
_CC = re.compile(r"[A-Za-z]{2}", re.ASCII)
_ASN = re.compile(r"(?:AS|as)?([0-9]{1,10})", re.ASCII)
_REPORT_ID = re.compile(r"[A-Za-z0-9_]{15,100}", re.ASCII)
_TEST_NAME = re.compile(r"[a-z0-9_]{1,60}", re.ASCII)
_CATEGORY = re.compile(r"[A-Z]{1,16}", re.ASCII)
# The legacy input whitelist (after dropping non-ASCII characters), exactly.
_INPUT = re.compile(r"[A-Za-z0-9 :/.\[\]\-_%+(){}=?#&!,$]*", re.ASCII)
# A date with or without zero padding, then the optional rest of an ISO datetime.
_DATE_PREFIX = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?=$|[T ])(.*)",
                          re.ASCII | re.DOTALL)
_HOUR_PREFIX = re.compile(r"([T ])([0-9])(?=:)", re.ASCII)
# Status of the answer to a date that is the literal `undefined` where legacy parsed it
# (dateutil failed, the route answered 200 {"error", "v": 0}; docs/api.md §2.8).
UNDEFINED_STATUS = 200
MAX_VALUE = 2048
MAX_ITEMS = 200
# Paging offsets beyond this are refused: ClickHouse's LIMIT/OFFSET are UInt64 (a larger
# offset is a database error, i.e. a 500), and no client pages that far (2**53 - 1 is the
# largest integer JavaScript holds exactly).
MAX_OFFSET = 2**53 - 1


class Query:
    """A read-only, tolerant view of `request.query` (a MultiDict or a plain mapping)."""

    def __init__(self, query: Mapping[str, str]) -> None:
        self._q = query

    def _all(self, name: str) -> list[str]:
        getall = getattr(self._q, "getall", None)
        return list(getall(name, [])) if getall is not None else (
            [self._q[name]] if name in self._q else [])

    def _raw(self, name: str) -> list[str]:
        out = []
        for v in self._all(name):
            v = v.strip()
            if v in _ABSENT:
                continue
            if len(v) > MAX_VALUE:
                raise APIError(f"Parameter {name} is too long", 400)
            out.append(v)
        return out

    def str(self, name: str, default: str | None = None) -> str | None:
        """The last non-empty value, or `default`."""
        values = self._raw(name)
        return values[-1] if values else default

    def list(self, name: str) -> list[str]:
        """Comma-joined and/or repeated values, stripped, empties dropped, order kept, deduped."""
        out: list[str] = []
        for v in self._raw(name):
            for item in v.split(","):
                item = item.strip()
                if item and item not in _ABSENT and item not in out:
                    out.append(item)
        if len(out) > MAX_ITEMS:
            raise APIError(f"Too many values for {name}", 400)
        return out

    def has(self, name: str) -> bool:
        return bool(self._raw(name))

    def int(self, name: str, default: int | None = None, *, min: int | None = None,
            max: int | None = None) -> int | None:
        v = self.str(name)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise APIError(f"Invalid {name}: not an integer", 400) from None
        if min is not None and n < min:
            raise APIError(f"Invalid {name}: must be at least {min}", 400)
        if max is not None and n > max:
            raise APIError(f"Invalid {name}: must be at most {max}", 400)
        return n

    def bool(self, name: str, default: bool | None = None) -> bool | None:
        v = self.str(name)
        if v is None:
            return default
        low = v.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise APIError(f"Invalid {name}: use true or false", 400)

    def choice(self, name: str, allowed: Iterable[str], default: str | None = None, *,
               lower: bool = False) -> str | None:
        v = self.str(name)
        if v is None:
            return default
        if lower:
            v = v.lower()
        allowed = tuple(allowed)
        if v not in allowed:
            raise APIError(f"Invalid {name}: use one of {', '.join(allowed)}", 400)
        return v

    def date(self, name: str, *, legacy_undefined: bool = False) -> dt.datetime | None:
        """A date or datetime (see `parse_datetime`). With `legacy_undefined`, the literal
        `undefined` (Explorer's charts before the page sets its dates) is not "absent" but
        the cheap answer legacy gave: `APIError` with status 200, so no query runs over the
        whole table."""
        if legacy_undefined and any(v.strip() == "undefined" for v in self._all(name)):
            raise APIError(f"Invalid {name}: 'undefined' is not a date", UNDEFINED_STATUS)
        v = self.str(name)
        return None if v is None else parse_datetime(v, name)

    def cc_list(self, name: str = "probe_cc") -> list[str]:
        out = []
        for v in self.list(name):
            if not _CC.fullmatch(v):
                raise APIError(f"Invalid {name}: {v[:20]!r} is not a 2-letter country code", 400)
            out.append(v.upper())
        return out

    def cc(self, name: str = "probe_cc") -> str | None:
        ccs = self.cc_list(name)
        if len(ccs) > 1:
            raise APIError(f"Invalid {name}: one country code expected", 400)
        return ccs[0] if ccs else None

    def asn_list(self, name: str = "probe_asn") -> list[int]:
        return [parse_asn(v, name) for v in self.list(name)]

    def asn(self, name: str = "probe_asn") -> int | None:
        v = self.str(name)
        return None if v is None else parse_asn(v, name)

    def test_names(self, name: str = "test_name") -> list[str]:
        out = []
        for v in self.list(name):
            if not _TEST_NAME.fullmatch(v):
                raise APIError(f"Invalid characters in {name}", 400)
            out.append(v)
        return out

    def category_codes(self, name: str = "category_code") -> list[str]:
        out = []
        for v in self.list(name):
            if not _CATEGORY.fullmatch(v.upper()):
                raise APIError(f"Invalid {name}", 400)
            out.append(v.upper())
        return out

    def report_id(self, name: str = "report_id") -> str | None:
        v = self.str(name)
        if v is None:
            return None
        if not _REPORT_ID.fullmatch(v):
            raise APIError("Invalid report_id field", 400)
        return v

    def domain(self, name: str = "domain") -> str | None:
        """One domain (see `parse_host`), lower-cased."""
        v = self.str(name)
        return None if v is None else parse_host(v, name)

    def domain_list(self, name: str = "domain") -> list[str]:
        """Comma-joined host names, IP addresses or [IPv6] addresses, each with an optional
        port (legacy's aggregation check, see `parse_host`), lower-cased."""
        return [parse_host(v, name) for v in self.list(name)]

    def int_list(self, name: str) -> list[int]:
        """Comma-joined non-negative integers (e.g. ooni_run_link_id)."""
        out = []
        for v in self.list(name):
            if not v.isascii() or not v.isdigit() or len(v) > 20 or int(v) >= 2**64:
                raise APIError(f"Invalid {name}: {v[:20]!r} is not an integer", 400)
            out.append(int(v))
        return out

    def input(self, name: str = "input") -> str | None:
        """A measurement input (URL, host:port, ...); raw, but only whitelisted characters."""
        v = self.str(name)
        if v is None:
            return None
        if not _INPUT.fullmatch(v.encode("ascii", "ignore").decode()):
            raise APIError(f"Invalid characters in {name} field", 400)
        return v


def parse_asn(value: str, name: str = "probe_asn") -> int:
    m = _ASN.fullmatch(value.strip())
    if m is None or int(m.group(1)) >= 2**32:
        raise APIError(f"Invalid {name}: {value[:20]!r}", 400)
    return int(m.group(1))


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)


def parse_host(value: str, name: str = "domain") -> str:
    """`host`, `host:port`, `a.b.c.d[:port]` or `[v6][:port]`, lower-cased. A host name must
    be IDNA-encodable, with labels of at most 63 letters, digits, `-` or `_`, and a top-level
    label ending in a letter (so `1.2.3` is neither a name nor an address)."""
    v = value.strip()
    host, port = v, None
    if v.startswith("["):
        host, sep, rest = v[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise APIError(f"Invalid {name}: {value[:40]!r}", 400)
        port = rest[1:] if rest else None
        ok = _is_ip(host, 6)
    else:
        if v.count(":") == 1:
            host, port = v.split(":")
        ok = _is_ip(host, 4) or _is_ip(host, 6) or _is_hostname(host)
    if not ok or (port is not None and not (_PORT.fullmatch(port) and 0 < int(port) < 65536)):
        raise APIError(f"Invalid {name}: {value[:40]!r}", 400)
    return v.lower()


def _is_ip(host: str, version: int) -> bool:
    try:
        cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        cls(host)
        return True
    except ValueError:
        return False


def _is_hostname(host: str) -> bool:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.split(".")
    return (len(ascii_host) <= 253 and all(_LABEL.fullmatch(x) for x in labels)
            and labels[-1][-1:].isalpha())


def parse_datetime(value: str, name: str = "date") -> dt.datetime:
    """`YYYY-MM-DD` or an ISO-8601 datetime (`T` or space, optional fraction, `Z` or offset)
    as a naive UTC datetime; the range ClickHouse's DateTime holds. Month, day and hour may
    lack their zero padding (`2021-7-9`, `2021-7-9T5:00:00`), as legacy's dateutil allowed."""
    v = value.strip()
    m = _DATE_PREFIX.fullmatch(v)
    try:
        if m is None:  # e.g. ISO's basic format, 20240101T050000Z
            t = dt.datetime.fromisoformat(v.replace(" ", "T", 1))
        else:
            year, month, day, rest = m.groups()
            t = dt.datetime(int(year), int(month), int(day))
            if rest:  # the time, its hour padded too
                rest = _HOUR_PREFIX.sub(r"\g<1>0\g<2>", rest, count=1)
                t = dt.datetime.fromisoformat(t.strftime("%Y-%m-%d")
                                              + rest.replace(" ", "T", 1))
    except ValueError:
        raise APIError(f"Invalid {name}: {value[:40]!r} is not a date", 400) from None
    if t.tzinfo is not None:
        try:
            t = t.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is in year 10000 UTC
            raise APIError(f"Invalid {name}: out of range", 400) from None
    if not 1970 <= t.year <= 2105:
        raise APIError(f"Invalid {name}: out of range", 400)
    return t


def today() -> dt.datetime:
    """Today 00:00 UTC (naive), the anchor of the read routes' default windows."""
    now = dt.datetime.now(dt.UTC)
    return dt.datetime(now.year, now.month, now.day)
