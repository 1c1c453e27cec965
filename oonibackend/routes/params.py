"""Query-string parsing for the read routes, tolerant the way Explorer needs it.

Explorer builds query strings with `URLSearchParams(object)` and axios, so:
* an empty value (`probe_cc=`) or the literal `undefined`/`null` means "absent";
* multi-values arrive comma-joined (`probe_cc=CN,IR,RU`), sometimes repeated;
* unknown parameters (`data=anomalies`, `webview=1`) are ignored;
* `probe_asn` comes as `AS3269` or `3269`;
* dates come as `2021-07-09`, `2021-7-9` (legacy's dateutil took both) or ISO datetimes.
Anything present but malformed raises `APIError` (400, `{"error": ...}`), never a 500. The
checks themselves are oonibackend/validate.py's; this module only reads the query string and
turns their `InvalidValue` into the 400.
The one exception: routes that legacy answered 200 `{"error"}` for `since=undefined` (the
aggregation charts, docs/api.md §2.8) ask `date(..., legacy_undefined=True)`.

Usage: `q = Query(request.query)`, then `q.cc_list("probe_cc")`, `q.date("since")`, ...
All values returned are safe to pass as `%(name)s` parameters of the storage layer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from oonibackend import validate
from oonibackend.errors import APIError
from oonibackend.validate import InvalidValue

T = TypeVar("T")
_ABSENT = frozenset(("", "undefined", "null"))
_TRUE = frozenset(("true", "1", "yes"))
_FALSE = frozenset(("false", "0", "no"))
# Status of the answer to a date that is the literal `undefined` where legacy parsed it
# (dateutil failed, the route answered 200 {"error", "v": 0}; docs/api.md §2.8).
UNDEFINED_STATUS = 200
MAX_VALUE = 2048
MAX_ITEMS = 200
# Paging offsets beyond this are refused: ClickHouse's LIMIT/OFFSET are UInt64 (a larger
# offset is a database error, i.e. a 500), and no client pages that far (2**53 - 1 is the
# largest integer JavaScript holds exactly).
MAX_OFFSET = 2**53 - 1


def checked(check: Callable[..., T], value: Any, *args: Any, **kwargs: Any) -> T:
    """`check(value, ...)` from oonibackend.validate, its InvalidValue answered 400."""
    try:
        return check(value, *args, **kwargs)
    except InvalidValue as e:
        raise APIError(e.message, 400) from None


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
        """A date or datetime (see `validate.date_time`). With `legacy_undefined`, the literal
        `undefined` (Explorer's charts before the page sets its dates) is not "absent" but
        the cheap answer legacy gave: `APIError` with status 200, so no query runs over the
        whole table."""
        if legacy_undefined and any(v.strip() == "undefined" for v in self._all(name)):
            raise APIError(f"Invalid {name}: 'undefined' is not a date", UNDEFINED_STATUS)
        v = self.str(name)
        return None if v is None else checked(validate.date_time, v, name)

    def cc_list(self, name: str = "probe_cc") -> list[str]:
        return [checked(validate.country_code, v, name) for v in self.list(name)]

    def cc(self, name: str = "probe_cc") -> str | None:
        ccs = self.cc_list(name)
        if len(ccs) > 1:
            raise APIError(f"Invalid {name}: one country code expected", 400)
        return ccs[0] if ccs else None

    def asn_list(self, name: str = "probe_asn") -> list[int]:
        """`AS1234`, `as1234` or `1234`, comma-joined."""
        return [checked(validate.asn, v, name) for v in self.list(name)]

    def asn(self, name: str = "probe_asn") -> int | None:
        v = self.str(name)
        return None if v is None else checked(validate.asn, v, name)

    def test_names(self, name: str = "test_name", *, any_case: bool = False) -> list[str]:
        return [checked(validate.nettest_name, v, name, any_case=any_case)
                for v in self.list(name)]

    def category_codes(self, name: str = "category_code") -> list[str]:
        """Upper-cased first, so `news` is `NEWS`."""
        return [checked(validate.category_code, v.upper(), name) for v in self.list(name)]

    def report_id(self, name: str = "report_id") -> str | None:
        v = self.str(name)
        return None if v is None else checked(validate.report_id, v, name)

    def domain(self, name: str = "domain") -> str | None:
        """One domain (see `validate.host`), lower-cased."""
        v = self.str(name)
        return None if v is None else checked(validate.host, v, name)

    def domain_list(self, name: str = "domain") -> list[str]:
        """Comma-joined host names, IP addresses or [IPv6] addresses, each with an optional
        port (legacy's aggregation check, see `validate.host`), lower-cased."""
        return [checked(validate.host, v, name) for v in self.list(name)]

    def int_list(self, name: str) -> list[int]:
        """Comma-joined non-negative integers (e.g. ooni_run_link_id)."""
        return [checked(validate.uint64, v, name) for v in self.list(name)]

    def input(self, name: str = "input") -> str | None:
        """A measurement input (URL, host:port, ...); raw, but only whitelisted characters."""
        v = self.str(name)
        return None if v is None else checked(validate.measurement_input, v, name)


def today() -> dt.datetime:
    """Today 00:00 UTC (naive), the anchor of the read routes' default windows."""
    now = dt.datetime.now(dt.UTC)
    return dt.datetime(now.year, now.month, now.day)
