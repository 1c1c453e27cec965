"""Identifiers and query values, checked one way for the whole backend (pure).

Routes, queries, models, the CLI and the fastpath's loaders ask here whether a value is a
country code, an AS number, a test name, a category code, a date, ... Each check raises
`InvalidValue` (a ValueError naming the field) or, as `is_*`, answers a bool; the caller decides
what a failure means (routes/params.py: a 400; an importer: a refused row). The regexes are
ASCII-only and anchored with fullmatch (`\\d` takes other scripts' digits, `$` a trailing
newline).

Where callers differ on purpose, the difference is an option here (`case`, `prefixes`,
`any_case`, `max_digits`), so each keeps its documented behaviour. The formats of the ids the
backend makes (report ids, measurement uids, spool hour directories) are in oonibackend/ids.py,
built on these checks.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Literal, TypeGuard

_CC = {"any": re.compile(r"[A-Za-z]{2}", re.ASCII), "upper": re.compile(r"[A-Z]{2}", re.ASCII),
       "lower": re.compile(r"[a-z]{2}", re.ASCII)}
_ASN = re.compile(r"([A-Za-z]*)([0-9]{1,10})", re.ASCII)
_TEST_NAME = re.compile(r"[a-z0-9_]{1,60}", re.ASCII)
_TEST_NAME_ANY_CASE = re.compile(r"[A-Za-z0-9_]{1,60}", re.ASCII)
_CATEGORY = re.compile(r"[A-Z]{1,16}", re.ASCII)
# A report id as the read routes take it: legacy ids of any shape, path- and SQL-safe.
_REPORT_ID = re.compile(r"[A-Za-z0-9_]{15,100}", re.ASCII)
# A measurement uid as the read routes take it (legacy uids had other shapes than ours).
_UID = re.compile(r"[A-Za-z0-9_.\-]{10,100}", re.ASCII)
# The legacy input whitelist (after dropping non-ASCII characters), exactly.
_INPUT = re.compile(r"[A-Za-z0-9 :/.\[\]\-_%+(){}=?#&!,$]*", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", re.ASCII)
# A label of a host name we configure or serve (RFC 1123: no `_`, unlike measured domains).
DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{DNS_LABEL}(?:\.{DNS_LABEL})*", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
# A date with or without zero padding, then the optional rest of an ISO datetime.
_DATE_PREFIX = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?=$|[T ])(.*)",
                          re.ASCII | re.DOTALL)
_HOUR_PREFIX = re.compile(r"([T ])([0-9])(?=:)", re.ASCII)

Case = Literal["any", "upper", "lower"]
# `AS1234`, `as1234` or `1234`: what the read API takes (legacy's).
ASN_PREFIXES = ("AS", "as", "")
MAX_ASN = 2**32 - 1


class InvalidValue(ValueError):
    """A value that is not what its field must hold; `message` is fit for a client."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- country, network, test, category ------------------------------------------------------

def is_country_code(value: object, *, case: Case = "any") -> TypeGuard[str]:
    """Two ASCII letters; `case` "upper" / "lower" for sources that must be written one way
    (data files, list file names)."""
    return isinstance(value, str) and _CC[case].fullmatch(value) is not None


def country_code(value: object, field: str = "probe_cc") -> str:
    """Two ASCII letters of any case, upper-cased."""
    if not is_country_code(value):
        shown = value[:20] if isinstance(value, str) else value
        raise InvalidValue(field, f"Invalid {field}: {shown!r} is not a 2-letter country code")
    return value.upper()


def asn(value: str, field: str = "probe_asn", *, prefixes: tuple[str, ...] = ASN_PREFIXES,
        bounded: bool = True) -> int:
    """An AS number of at most 10 digits after one of `prefixes` ("" for a bare number),
    below 2**32 when `bounded`. The read API takes `AS1234`, `as1234` and `1234`; probes send
    `AS1234`; report ids and data files carry bare numbers."""
    m = _ASN.fullmatch(value) if isinstance(value, str) else None
    if m is None or m.group(1) not in prefixes or (bounded and int(m.group(2)) > MAX_ASN):
        shown = value[:20] if isinstance(value, str) else value
        raise InvalidValue(field, f"Invalid {field}: {shown!r}")
    return int(m.group(2))


def is_nettest_name(value: object, *, any_case: bool = False) -> TypeGuard[str]:
    """A test name as probes send it (`web_connectivity`): 1-60 of `[a-z0-9_]`. `any_case`:
    upper-case letters too (the measurement search, as legacy)."""
    pattern = _TEST_NAME_ANY_CASE if any_case else _TEST_NAME
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def nettest_name(value: object, field: str = "test_name", *, any_case: bool = False) -> str:
    if not is_nettest_name(value, any_case=any_case):
        raise InvalidValue(field, f"Invalid characters in {field}")
    return value


def is_category_code(value: object) -> TypeGuard[str]:
    """A test-list category code: 1-16 upper-case ASCII letters (`NEWS`). Callers that take
    lower case upper-case first."""
    return isinstance(value, str) and _CATEGORY.fullmatch(value) is not None


def category_code(value: object, field: str = "category_code") -> str:
    if not is_category_code(value):
        raise InvalidValue(field, f"Invalid {field}")
    return value


# -- the same fields in probes' JSON bodies ------------------------------------------------

MAX_CATEGORY_CODES = 100


def probe_cc(value: object, field: str = "probe_cc", default: str = "ZZ") -> str:
    """A country code as probes send it: missing or empty is `default`; blanks around it and
    lower case are taken (ASCII only: `"ß".upper() == "SS"`)."""
    if value is None or value == "":
        return default
    if not isinstance(value, str) or not value.isascii() or not is_country_code(value.strip()):
        raise InvalidValue(field, f"Invalid {field}")
    return value.strip().upper()


def probe_asn(value: object, field: str = "probe_asn", *, allow_bare: bool = False) -> int:
    """`AS<number>` in any case (with `allow_bare`, a bare number or a JSON integer too);
    missing or empty is 0 (unknown)."""
    if value is None or value == "":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and allow_bare:
        if not 0 <= value <= MAX_ASN:
            raise InvalidValue(field, f"Invalid {field}")
        return value
    if not isinstance(value, str) or not value.isascii():
        raise InvalidValue(field, f"Invalid {field}")
    try:
        return asn(value.strip().upper(), field, prefixes=("AS", "") if allow_bare else ("AS",))
    except InvalidValue:
        raise InvalidValue(field, f"Invalid {field}") from None


def category_codes(value: object, field: str = "category_codes") -> list[str]:
    """A list or comma-separated string of category codes: upper-cased, deduplicated.

    The legacy check-in answered 500 for non-alphabetic codes and did not upper-case them
    (so `news` matched nothing); here they are upper-cased and bad ones are refused.
    """
    if value is None:
        return []
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list):
        items = value
    else:
        raise InvalidValue(field, f"Invalid {field}")
    if len(items) > MAX_CATEGORY_CODES:
        raise InvalidValue(field, f"Too many {field}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidValue(field, f"Invalid {field}")
        code = item.strip().upper()
        if not code:
            continue
        if not item.isascii() or not is_category_code(code):
            raise InvalidValue(field, f"Invalid category code {item[:20]!r}")
        if code not in out:
            out.append(code)
    return out


# -- ids the read routes look up -----------------------------------------------------------

def report_id(value: str, field: str = "report_id") -> str:
    """A report id to look up: 15-100 of `[A-Za-z0-9_]` (legacy ids had other shapes than
    the ones ids.new_report_id makes)."""
    if not _REPORT_ID.fullmatch(value):
        raise InvalidValue(field, f"Invalid {field} field")
    return value


def is_measurement_uid(value: str) -> bool:
    """A measurement uid to look up: 10-100 of `[A-Za-z0-9_.-]`."""
    return _UID.fullmatch(value) is not None


# -- inputs, hosts, numbers ----------------------------------------------------------------

def measurement_input(value: str, field: str = "input") -> str:
    """A measurement input (URL, host:port, ...), kept raw, but only of the characters
    legacy allowed (non-ASCII ones are ignored by the check)."""
    if not _INPUT.fullmatch(value.encode("ascii", "ignore").decode()):
        raise InvalidValue(field, f"Invalid characters in {field} field")
    return value


def host(value: str, field: str = "domain") -> str:
    """`host`, `host:port`, `a.b.c.d[:port]` or `[v6][:port]`, lower-cased. A host name must
    be IDNA-encodable, with labels of at most 63 letters, digits, `-` or `_`, and a top-level
    label ending in a letter (so `1.2.3` is neither a name nor an address)."""
    v = value.strip()
    name, port = v, None
    if v.startswith("["):
        name, sep, rest = v[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidValue(field, f"Invalid {field}: {value[:40]!r}")
        port = rest[1:] if rest else None
        ok = _is_ip(name, 6)
    else:
        if v.count(":") == 1:
            name, port = v.split(":")
        ok = _is_ip(name, 4) or _is_ip(name, 6) or _is_hostname(name)
    if not ok or (port is not None and not (_PORT.fullmatch(port) and 0 < int(port) < 65536)):
        raise InvalidValue(field, f"Invalid {field}: {value[:40]!r}")
    return v.lower()


def is_dns_name(value: object, *, min_labels: int = 1) -> TypeGuard[str]:
    """A host name of RFC 1123 labels (`DNS_LABEL`), at least `min_labels` of them: the
    test helpers' and the rotation's names, not measured domains (see `host`)."""
    return (isinstance(value, str) and _DNS_NAME.fullmatch(value) is not None
            and value.count(".") + 1 >= min_labels)


def _is_ip(value: str, version: int) -> bool:
    try:
        cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        cls(value)
        return True
    except ValueError:
        return False


def _is_hostname(value: str) -> bool:
    try:
        ascii_host = value.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.split(".")
    return (len(ascii_host) <= 253 and all(_LABEL.fullmatch(x) for x in labels)
            and labels[-1][-1:].isalpha())


def uint64(value: str, field: str, *, max_digits: int | None = 20) -> int:
    """A non-negative integer below 2**64 in ASCII digits (ids such as ooni_run_link_id);
    `max_digits` bounds the length before int() runs (None: only the value is bounded)."""
    if (not value.isascii() or not value.isdigit()
            or (max_digits is not None and len(value) > max_digits) or int(value) >= 2**64):
        raise InvalidValue(field, f"Invalid {field}: {value[:20]!r} is not an integer")
    return int(value)


# -- dates ---------------------------------------------------------------------------------

def date_time(value: str, field: str = "date") -> dt.datetime:
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
        raise InvalidValue(field, f"Invalid {field}: {value[:40]!r} is not a date") from None
    if t.tzinfo is not None:
        try:
            t = t.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is in year 10000 UTC
            raise InvalidValue(field, f"Invalid {field}: out of range") from None
    if not 1970 <= t.year <= 2105:
        raise InvalidValue(field, f"Invalid {field}: out of range")
    return t
