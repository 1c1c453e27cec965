"""Pure reshaping of the per-country statistics rows into the routes' answers.

The database returns only the (day, group, ...) cells that have data; Explorer's charts want
every cell of the grid, zeros included. Kept apart from the handlers so it is unit-tested.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

Row = Mapping[str, Any]


def day_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from `first` to `last`, both included (empty when last < first)."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def months_before(t: dt.datetime, months: int) -> dt.datetime:
    """The same day and time `months` calendar months earlier, clamped to the end of a
    shorter month (like ClickHouse's `- INTERVAL n MONTH`)."""
    y, m = divmod(t.year * 12 + (t.month - 1) - months, 12)
    m += 1
    last = (dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)).day
    return t.replace(year=y, month=m, day=min(t.day, last))


def as_date(v: Any) -> dt.date:
    """A date from a Date (date) or DateTime (datetime) value."""
    return v.date() if isinstance(v, dt.datetime) else v


def isomid(d: dt.date) -> str:
    """Midnight UTC in the legacy im_stats form, `YYYY-MM-DDT00:00:00+00:00` (25 characters)."""
    return d.strftime("%Y-%m-%dT00:00:00+00:00")


def test_coverage_grid(rows: Iterable[Row], groups: Mapping[str, Sequence[str]],
                       days: Sequence[dt.date]) -> list[dict[str, Any]]:
    """`[{count, test_day, test_group}]` for every group (sorted) × every day, zero-filled.

    `rows` are `{test_day, test_name, msmt_cnt}`; tests outside `groups` and days outside
    `days` are ignored (legacy added a stray `test_group: ""` cell for each unmapped test).
    """
    group_of = {t: g for g, tests in groups.items() for t in tests}
    names = sorted(groups)
    cells = {(g, d): 0 for g in names for d in days}
    for r in rows:
        key = (group_of.get(r["test_name"]), as_date(r["test_day"]))
        if key in cells:
            cells[key] += int(r["msmt_cnt"])
    return [{"count": n, "test_day": d, "test_group": g} for (g, d), n in cells.items()]


def fill_days(rows: Iterable[Row], days: Sequence[dt.date], value: str = "count",
              ) -> list[dict[str, Any]]:
    """`[{<value>, test_day}]` for every day in `days`, 0 where `rows` has no such day."""
    got = {as_date(r["test_day"]): r[value] for r in rows}
    return [{value: got.get(d, 0), "test_day": d} for d in days]


def im_stats_series(rows: Iterable[Row], days: Sequence[dt.date]) -> list[dict[str, Any]]:
    """The im_stats results: one entry per day, zero-filled; `anomaly_count` is always null
    (the legacy route never computed it; Explorer's old chart did not read it)."""
    return [{"anomaly_count": None, "test_day": isomid(e["test_day"]),
             "total_count": e["total_count"]}
            for e in fill_days(rows, days, "total_count")]


def im_networks(rows: Iterable[Row]) -> dict[str, dict[str, Any]]:
    """`{test_name: {anomaly_networks: [], ok_networks: [...], last_tested}}` for the IM tests
    present in `rows` (`{test_name, probe_asn, total_count, last_tested}`, in display order).

    Every network lands in ok_networks and the network name is empty, as in the legacy route.
    """
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        e = out.setdefault(r["test_name"], {"anomaly_networks": [], "ok_networks": [],
                                            "last_tested": r["last_tested"]})
        e["ok_networks"].append({"asn": r["probe_asn"], "name": "",
                                 "total_count": r["total_count"],
                                 "last_tested": r["last_tested"]})
        e["last_tested"] = max(e["last_tested"], r["last_tested"])
    return out


NOTOK_MIN_MEASUREMENTS = 5
NOTOK_SUCCESS_RATIO = 0.6


def vanilla_tor_summary(rows: Iterable[Row]) -> dict[str, Any]:
    """`{networks, notok_networks, last_tested}`: a network is "not OK" when it has more than
    5 measurements and under 60% of them succeeded. The runtime fields are always null (legacy
    shape)."""
    nets = [{**r, "test_runtime_avg": None, "test_runtime_max": None, "test_runtime_min": None}
            for r in rows]
    notok = sum(1 for n in nets if n["total_count"] > NOTOK_MIN_MEASUREMENTS
                and n["success_count"] / n["total_count"] < NOTOK_SUCCESS_RATIO)
    last = max((n["last_tested"] for n in nets), default=None)
    return {"networks": nets, "notok_networks": notok, "last_tested": last}


def runtime_grid(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """The full cartesian grid of seen test names × countries × days (each sorted):
    `{test_name, probe_cc, date, v}` with `v = [p50, p90, count]`, or `[]` for an empty cell.

    `rows` are `{test_name, probe_cc, day, q: [p50, p90], cnt}`.
    """
    cells: dict[tuple[str, str, dt.date], list[Any]] = {}
    for r in rows:
        p50, p90 = r["q"]
        cells[(r["test_name"], r["probe_cc"], as_date(r["day"]))] = [p50, p90, r["cnt"]]
    tests = sorted({k[0] for k in cells})
    ccs = sorted({k[1] for k in cells})
    days = sorted({k[2] for k in cells})
    return [{"test_name": t, "probe_cc": cc, "date": d, "v": cells.get((t, cc, d), [])}
            for t in tests for cc in ccs for d in days]


def website_urls_metadata(base_url: str, probe_cc: str, probe_asn: int, limit: int,
                          offset: int, total_count: int, returned: int) -> dict[str, Any]:
    """Pagination metadata; `next_url` is absolute, and null on the last page.

    Legacy offered a next_url whenever a full page came back, even when it was the last one
    (its next page was empty); here there is a next page only if offset + limit < total_count.
    """
    next_url = None
    if returned >= limit and offset + limit < total_count:
        args = urlencode({"limit": limit, "offset": offset + limit, "probe_asn": probe_asn,
                          "probe_cc": probe_cc})
        next_url = f"{base_url.rstrip('/')}/api/_/website_urls?{args}"
    return {"offset": offset, "limit": limit, "current_page": math.ceil(offset / limit) + 1,
            "total_count": total_count, "next_url": next_url}
