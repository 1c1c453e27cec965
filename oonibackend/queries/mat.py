"""SQL pieces shared by the MAT's observation and analysis queries (docs/current_services.md
§6): the time window, time buckets, failure names and the citizenlab join.

The pipeline-v5 tables keep `measurement_start_time` as `DateTime64(3, 'UTC')`, so bounds are
passed as strings and converted in UTC explicitly: the answer does not depend on the
database server's time zone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

TIME_GRAINS = ("hour", "day", "week", "month", "year", "auto")
DEFAULT_DAYS = 30

# Buckets as DateTime('UTC') for every grain, so each one is rendered the same way
# (`YYYY-MM-DDTHH:MM:SSZ`). Weeks start on Sunday (mode 0), as in Explorer's dayjs and in
# OONI's service.
_BUCKET = {
    "hour": "toStartOfHour({c})",
    "day": "toStartOfDay({c})",
    "week": "toStartOfWeek({c}, 0)",
    "month": "toStartOfMonth({c})",
    "year": "toStartOfYear({c})",
}


def grain(requested: str | None) -> str:
    """The concrete grain: `auto` (and nothing) is `day`, as in OONI's service."""
    return "day" if requested in (None, "auto") else requested


def time_bucket(column: str, time_grain: str) -> str:
    inner = _BUCKET[grain(time_grain)].format(c=f"toDateTime({column}, 'UTC')")
    return f"toDateTime({inner}, 'UTC')"


def default_window(today: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """30 days back from today 00:00 UTC, until today 00:00 UTC (OONI's default)."""
    return today - dt.timedelta(days=DEFAULT_DAYS), today


def window(table: str, since: dt.datetime | None, until: dt.datetime | None,
           params: dict[str, Any]) -> list[str]:
    """WHERE terms for `[since, until)` on the table's measurement_start_time."""
    where = []
    if since is not None:
        where.append(f"{table}.measurement_start_time >= toDateTime64(%(since)s, 3, 'UTC')")
        params["since"] = _text(since)
    if until is not None:
        where.append(f"{table}.measurement_start_time < toDateTime64(%(until)s, 3, 'UTC')")
        params["until"] = _text(until)
    return where


def _text(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def failure_name(column: str) -> str:
    """A failure string with every `unknown_failure: ...` reduced to `unknown_failure`."""
    return (f"if(startsWith(assumeNotNull({column}), 'unknown_failure'), 'unknown_failure', "
            f"assumeNotNull({column}))")


def citizenlab_join(url_column: str, category_codes: tuple[str, ...],
                    probe_ccs: tuple[str, ...], params: dict[str, Any]) -> str:
    """INNER JOIN of the (url, category_code) pairs of the lists that apply: the global list
    plus the requested countries' lists (lower-cased in citizenlab), like /api/v1/aggregation
    (docs/api.md §2.8); each pair once, so a URL in several lists counts once."""
    params["citizenlab_ccs"] = ["ZZ", *(cc.lower() for cc in probe_ccs)]
    cl_where = ["cc IN %(citizenlab_ccs)s"]
    if category_codes:
        cl_where.append("category_code IN %(category_codes)s")
        params["category_codes"] = list(category_codes)
    return ("\nINNER JOIN (SELECT DISTINCT url, category_code FROM citizenlab\n"
            f"    WHERE {' AND '.join(cl_where)}) AS citizenlab\n"
            f"    ON citizenlab.url = {url_column}")
