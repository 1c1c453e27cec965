"""SQL for `GET /api/v1/aggregation` (the MAT and every Explorer chart) and `/api/v1/torsf_stats`.

Pure: a validated, normalised `Aggregation` in, `(sql, params)` out. The route parses the query
string into an `Aggregation`; everything that depends only on the values (axes, time grain,
the date range the grain needs, the citizenlab join) is decided here and unit-tested.

Query design:
* The time window is a plain half-open range on `measurement_start_time`, the first column of
  the fastpath sort key, so ClickHouse reads only the granules of the window (countries,
  networks and tests are not in the key: they filter the window's rows).
* No `FINAL`: fastpath is a ReplacingMergeTree whose duplicates only exist between a
  re-processing of old measurements and the next background merge; FINAL makes every chart
  read and merge-sort the whole sort key (report_id, input, measurement_uid: long strings)
  for a transient, rare over-count. Legacy did not use FINAL either. Measured on 10 M
  generated rows over 60 days (embedded chdb, 2 shared cores): per-day by country over 30
  days (5 M rows read) 0.4-1.3 s without FINAL, 5.6 s with; a country's 30-day calendar
  0.15 s / 4.5 s; an ASN's all-time split by country (10 M rows) 0.2 s / 3.1 s.
* Rollups (migration 0012_rollups.sql): per day × probe_cc × probe_asn × test_name
  (`fastpath_daily`) and the same × domain (`fastpath_daily_domain`), the five measures
  summed. `plan` picks the smallest rollup holding every axis and filter of the request
  (not input, category_code, blocking_type, ooni_run_link_id, nor the hour grain); the
  window's whole days are read from it and its partial first and last days from fastpath,
  summed together, so the answer is the raw table's to the row. Explorer's windows are whole
  days; a window shifted by minutes reads at most one day of fastpath.
* citizenlab (joined for category_code) is reduced first to the distinct (url, category_code)
  pairs of the lists that apply (global `ZZ` plus the lower-cased country lists), so a URL in
  several of those lists counts once per category. Legacy joined the raw table and counted a
  measurement once per matching list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from oonibackend.storage.rollups import COUNT_COLUMNS, COUNTS_SQL, ROLLUPS

Query = tuple[str, dict[str, Any]]

AXES = ("blocking_type", "category_code", "domain", "input", "measurement_start_day",
        "probe_asn", "probe_cc", "test_name")
TIME_GRAINS = ("hour", "day", "week", "month", "year", "auto")
MEASURES = ("anomaly_count", "confirmed_count", "failure_count", "measurement_count",
            "ok_count")
TIME_AXIS = "measurement_start_day"

# The five measures, exactly as the legacy API defined them.
_MEASURES_SQL = """countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS anomaly_count,
    countIf(confirmed = 't' AND msm_failure = 'f') AS confirmed_count,
    countIf(msm_failure = 't') AS failure_count,
    countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS ok_count,
    count() AS measurement_count"""

# The same measures as sums of a rollup's counts (storage/rollups.py).
_SUMS_SQL = """sum(n_anomaly) AS anomaly_count,
    sum(n_confirmed) AS confirmed_count,
    sum(n_failure) AS failure_count,
    sum(n_ok) AS ok_count,
    sum(n_measurement) AS measurement_count"""

# Buckets of the time axis. Weeks start on Sunday (mode 0), like dayjs which Explorer uses to
# fill the gaps between keys; all but `hour` are Dates (`YYYY-MM-DD` in JSON), `hour` is a
# DateTime (`YYYY-MM-DDTHH:00:00Z`).
_GRAIN_SQL = {
    "hour": "toStartOfHour(measurement_start_time)",
    "day": "toDate(measurement_start_time)",
    "week": "toStartOfWeek(measurement_start_time, 0)",
    "month": "toStartOfMonth(measurement_start_time)",
    "year": "toStartOfYear(measurement_start_time)",
}

# The time axis on a rollup's `day` (the same Date values as _GRAIN_SQL's).
_ROLLUP_GRAIN_SQL = {
    "day": "day",
    "week": "toStartOfWeek(day, 0)",
    "month": "toStartOfMonth(day)",
    "year": "toStartOfYear(day)",
}

_AXIS_SQL = {
    # The legacy definition: the scores' analysis, not the (newer, partly empty) column.
    "blocking_type": "JSONExtractString(scores, 'analysis', 'blocking_type')",
    "category_code": "citizenlab.category_code",
    "domain": "fastpath.domain",
    "input": "fastpath.input",
    "probe_asn": "fastpath.probe_asn",
    "probe_cc": "fastpath.probe_cc",
    "test_name": "fastpath.test_name",
}


Window = tuple[dt.datetime | None, dt.datetime | None]


@dataclass(frozen=True)
class Plan:
    """Where an aggregation reads: `rollup` for the whole days `days` ([first, end), None:
    unbounded), fastpath for each of `raw` ([since, until)). Without a rollup, `raw` is the
    request's window."""

    rollup: str | None
    days: tuple[dt.date | None, dt.date | None] = (None, None)
    raw: tuple[Window, ...] = ()


class InvalidAggregation(ValueError):
    """A parameter combination the API refuses (answered 400 with the message)."""


@dataclass(frozen=True)
class Aggregation:
    """One normalised request: lists are sorted tuples, so equal requests are equal keys."""

    axis_x: str | None = None
    axis_y: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    time_grain: str = "auto"
    category_codes: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    input: str | None = None
    probe_ccs: tuple[str, ...] = ()
    probe_asns: tuple[int, ...] = ()
    test_names: tuple[str, ...] = ()
    ooni_run_link_ids: tuple[int, ...] = ()

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(a for a in (self.axis_x, self.axis_y) if a)

    @property
    def needs_citizenlab(self) -> bool:
        return bool(self.category_codes) or "category_code" in self.axes


def make(**kw: Any) -> Aggregation:
    """An `Aggregation` from parsed values (lists in any order), validated."""
    for name in ("category_codes", "domains", "probe_ccs", "probe_asns", "test_names",
                 "ooni_run_link_ids"):
        if name in kw:
            kw[name] = tuple(sorted(set(kw[name] or ())))
    if kw.get("time_grain") is None:
        kw.pop("time_grain", None)
    a = Aggregation(**kw)
    validate(a)
    return a


def validate_axis(name: str, value: str | None) -> None:
    if value is not None and value not in AXES:
        raise InvalidAggregation(f"Invalid axis name for {name}: use one of {', '.join(AXES)}")


def validate(a: Aggregation) -> None:
    """Axes known and distinct, time grain known; the time axis needs a valid grain/range."""
    validate_axis("axis_x", a.axis_x)
    validate_axis("axis_y", a.axis_y)
    if a.axis_x is not None and a.axis_x == a.axis_y:
        raise InvalidAggregation("Axis X and Y cannot be the same")
    if a.time_grain not in TIME_GRAINS:
        raise InvalidAggregation(f"Invalid time_grain: use one of {', '.join(TIME_GRAINS)}")
    if a.since is not None and a.until is not None and a.until <= a.since:
        raise InvalidAggregation("Invalid since and until values: until must be after since")
    if TIME_AXIS in a.axes:
        resolve_time_grain(a.since, a.until, a.time_grain)


def allowed_time_grains(since: dt.datetime, until: dt.datetime) -> tuple[tuple[str, ...], str]:
    """The grains allowed for a range, and what `auto` means for it: legacy's table, with
    `year` implemented and `auto` always `day`. Legacy's `auto` was `hour` up to 7 days, which
    broke Explorer's country calendar (since=Jan 1, no time_grain, day keys expected) in the
    first week of every year; the MAT always sends its grain explicitly."""
    span = until - since
    if span <= dt.timedelta(days=7):
        return ("hour", "day"), "day"
    if span <= dt.timedelta(days=30):
        return ("day", "week"), "day"
    if span <= dt.timedelta(days=365):
        return ("day", "week", "month"), "day"
    return ("day", "week", "month", "year"), "day"


def resolve_time_grain(since: dt.datetime | None, until: dt.datetime | None,
                       requested: str) -> str:
    """The concrete grain of the time axis, or InvalidAggregation."""
    if since is None or until is None or until <= since:
        raise InvalidAggregation(
            "Invalid since and until values: the measurement_start_day axis needs both, "
            "with until after since")
    allowed, auto = allowed_time_grains(since, until)
    if requested == "auto":
        return auto
    if requested not in allowed:
        choices = ", ".join((*allowed, "auto"))
        raise InvalidAggregation(f"Choose time_grain between {choices} for the given time range")
    return requested


def axis_sql(axis: str, grain: str | None) -> str:
    if axis == TIME_AXIS:
        assert grain is not None
        return _GRAIN_SQL[grain]
    return _AXIS_SQL[axis]


def _midnight(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day)


def dimensions(a: Aggregation) -> frozenset[str] | None:
    """The dimensions a rollup must hold to answer `a`; None when no rollup can (an input,
    category, blocking type or OONI Run filter or axis, or hourly buckets)."""
    if a.input is not None or a.ooni_run_link_ids or a.needs_citizenlab:
        return None
    if TIME_AXIS in a.axes and time_grain_of(a) not in _ROLLUP_GRAIN_SQL:
        return None
    dims = {ax for ax in a.axes if ax != TIME_AXIS}
    for name, values in (("probe_cc", a.probe_ccs), ("probe_asn", a.probe_asns),
                         ("test_name", a.test_names), ("domain", a.domains)):
        if values:
            dims.add(name)
    return frozenset(dims)


def plan(a: Aggregation, rollups: bool = True) -> Plan:
    """Rollup or fastpath for `a` (pure). The rollup reads the window's whole days; the
    partial days at its ends, if any, come from fastpath. A window without a whole day
    reads fastpath only."""
    raw = Plan(None, raw=((a.since, a.until),))
    dims = dimensions(a) if rollups else None
    rollup = next((r for r in ROLLUPS if dims is not None and dims <= r.dims), None)
    if rollup is None:
        return raw
    first = None if a.since is None else (
        a.since.date() if a.since == _midnight(a.since.date())
        else a.since.date() + dt.timedelta(days=1))
    end = None if a.until is None else a.until.date()
    if first is not None and end is not None and first >= end:
        return raw
    edges: list[Window] = []
    if a.since is not None and first is not None and a.since < _midnight(first):
        edges.append((a.since, _midnight(first)))
    if a.until is not None and end is not None and _midnight(end) < a.until:
        edges.append((_midnight(end), a.until))
    return Plan(rollup.table, (first, end), tuple(edges))


def _filters(a: Aggregation, params: dict[str, Any], table: str = "fastpath") -> list[str]:
    """The column filters (not the window), their values put into `params`."""
    where = []
    for column, values in (("probe_cc", a.probe_ccs), ("probe_asn", a.probe_asns),
                           ("test_name", a.test_names), ("domain", a.domains),
                           ("ooni_run_link_id", a.ooni_run_link_ids)):
        if values:
            where.append(f"{table}.{column} IN %({column})s")
            params[column] = list(values)
    if a.input is not None:
        where.append(f"{table}.input = %(input)s")
        params["input"] = a.input
    return where


def _raw_window(since: dt.datetime | None, until: dt.datetime | None, params: dict[str, Any],
                suffix: str = "") -> list[str]:
    # The sort key's first column, as a plain range: index pruning to the window.
    where = []
    if since is not None:
        where.append(f"fastpath.measurement_start_time >= %(since{suffix})s")
        params["since" + suffix] = since
    if until is not None:
        where.append(f"fastpath.measurement_start_time < %(until{suffix})s")
        params["until" + suffix] = until
    return where


def _select(axes: list[str], measures: str, table: str, where: list[str],
            group: bool) -> str:
    sql = f"SELECT {', '.join([*axes, measures])}\nFROM {table}"
    if where:
        sql += "\nWHERE " + "\n    AND ".join(where)
    if group and axes:
        sql += "\nGROUP BY " + ", ".join(a.rsplit(" AS ", 1)[1] for a in axes)
    return sql


def build(a: Aggregation, rollups: bool = True) -> Query:
    """The aggregation SELECT: one row per (axis_x[, axis_y]) value, or a single row; from
    the rollup and fastpath that `plan` chooses, the same rows either way."""
    validate(a)
    grain = time_grain_of(a)
    p = plan(a, rollups)
    if p.rollup is None:
        return _build_raw(a, grain)
    params: dict[str, Any] = {}
    where = _filters(a, params, p.rollup)
    first, end = p.days
    if first is not None:
        where.insert(0, "day >= %(first_day)s")
        params["first_day"] = first
    if end is not None:
        where.insert(1 if first is not None else 0, "day < %(end_day)s")
        params["end_day"] = end
    axes = [f"{_ROLLUP_GRAIN_SQL[grain] if ax == TIME_AXIS else ax} AS {ax}" for ax in a.axes]
    keys = ", ".join(a.axes)
    if not p.raw:
        sql = _select(axes, _SUMS_SQL, p.rollup, where, group=True)
    else:
        branches = [_select(axes, COUNT_COLUMNS, p.rollup, where, group=False)]
        raw_axes = [f"{axis_sql(ax, grain)} AS {ax}" for ax in a.axes]
        for i, (since, until) in enumerate(p.raw):
            raw_where = [*_raw_window(since, until, params, f"_{i}"), *_filters(a, params)]
            branches.append(_select(raw_axes, COUNTS_SQL, "fastpath", raw_where, group=True))
        union = "\n    UNION ALL\n    ".join(b.replace("\n", "\n    ") for b in branches)
        sql = f"SELECT {', '.join([*a.axes, _SUMS_SQL])}\nFROM (\n    {union}\n)"
        if a.axes:
            sql += f"\nGROUP BY {keys}"
    if a.axes:
        sql += f"\nORDER BY {keys}"
    return sql, params


def _build_raw(a: Aggregation, grain: str | None) -> Query:
    """The aggregation on fastpath alone."""
    params: dict[str, Any] = {}
    where = [*_raw_window(a.since, a.until, params), *_filters(a, params)]

    join = ""
    if a.needs_citizenlab:
        # The global list, plus the country lists of the requested countries (citizenlab
        # stores those lower-cased: 'it'); legacy's rule.
        lists = ["ZZ", *(cc.lower() for cc in a.probe_ccs)]
        cl_where = ["cc IN %(citizenlab_ccs)s"]
        params["citizenlab_ccs"] = lists
        if a.category_codes:
            cl_where.append("category_code IN %(category_codes)s")
            params["category_codes"] = list(a.category_codes)
        join = ("\nINNER JOIN (SELECT DISTINCT url, category_code FROM citizenlab\n"
                f"    WHERE {' AND '.join(cl_where)}) AS citizenlab\n"
                "    ON citizenlab.url = fastpath.input")

    select = [f"{axis_sql(ax, grain)} AS {ax}" for ax in a.axes]
    select.append(_MEASURES_SQL)
    sql = f"SELECT {', '.join(select)}\nFROM fastpath{join}"
    if where:
        sql += "\nWHERE " + "\n    AND ".join(where)
    if a.axes:
        keys = ", ".join(a.axes)
        sql += f"\nGROUP BY {keys}\nORDER BY {keys}"
    return sql, params


def columns(a: Aggregation) -> list[str]:
    """The columns of each result row, in SELECT order."""
    return [*a.axes, "anomaly_count", "confirmed_count", "failure_count", "ok_count",
            "measurement_count"]


def time_grain_of(a: Aggregation) -> str | None:
    """The concrete grain of the time axis (None without one)."""
    if TIME_AXIS not in a.axes:
        return None
    return resolve_time_grain(a.since, a.until, a.time_grain)


def torsf_stats(probe_cc: str | None, since: dt.datetime | None,
                until: dt.datetime | None) -> Query:
    """Daily torsf (Tor Snowflake) counts per country. Legacy's window: `since` exclusive,
    `until` inclusive. Legacy never selected measurement_count (its route crashed on any
    non-empty answer); here it is the row count the anomaly rate divides by."""
    where = ["test_name = 'torsf'"]
    params: dict[str, Any] = {}
    if since is not None:
        where.append("measurement_start_time > %(since)s")
        params["since"] = since
    if until is not None:
        where.append("measurement_start_time <= %(until)s")
        params["until"] = until
    if probe_cc is not None:
        where.append("probe_cc = %(probe_cc)s")
        params["probe_cc"] = probe_cc
    sql = f"""SELECT toDate(measurement_start_time) AS measurement_start_day, probe_cc,
    countIf(anomaly = 't') AS anomaly_count,
    countIf(confirmed = 't') AS confirmed_count,
    countIf(msm_failure = 't') AS failure_count,
    count() AS measurement_count
FROM fastpath
WHERE {' AND '.join(where)}
GROUP BY measurement_start_day, probe_cc
ORDER BY measurement_start_day, probe_cc"""
    return sql, params
