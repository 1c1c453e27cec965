"""SQL and result shaping for the MAT's analysis charts: `GET /api/v1/aggregation/analysis`
over `analysis_web_measurement` (docs/current_services.md §6.4).

Pure: a normalised `Analysis` in, `(sql, params)` out, and `result()` turns a row into the
answer's item. Per group: the row count, the 0.95 quantile of each layer's blocked / down /
ok likelihood (the `loni`), and each layer's most likely failure weighted by how blocked its
rows are. The grouping columns are axis_x, then each filter given exactly one value (OONI's
order: probe_asn, probe_cc, test_name, domain, input, measurement_uid), then axis_y; a filter
with several values (Explorer's comma list of domains) is summed over.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from oonibackend.queries import mat

Query = tuple[str, dict[str, Any]]

TIME_AXIS = "measurement_start_day"
AXES = (TIME_AXIS, "domain", "probe_cc", "probe_asn", "test_name", "input", "category_code")
KEYED_FILTERS = ("probe_asn", "probe_cc", "test_name", "domain", "input", "measurement_uid")
# Keys every result item carries (null when not grouped by), as OONI's service answers.
ITEM_KEYS = (TIME_AXIS, "domain", "probe_cc", "probe_asn", "test_name", "input",
             "measurement_uid")
LAYERS = ("dns", "tcp", "tls")
STATES = ("blocked", "down", "ok")
# A layer is "likely blocked" when its 0.95 quantile of `<layer>_blocked` exceeds this.
BLOCKED_THRESHOLD = 0.5

_OUTCOME = {
    # DNS: no failure means an answer came back; both spellings of NXDOMAIN are one outcome.
    "dns": """multiIf(top_dns_failure IS NULL, 'got_answer',
            top_dns_failure IN ('android_dns_cache_no_data', 'dns_nxdomain_error'), 'nxdomain',
            {name})""".format(name=mat.failure_name("top_dns_failure")),
    "tcp": "if(top_tcp_failure IS NULL, '', {name})".format(
        name=mat.failure_name("top_tcp_failure")),
    "tls": "if(top_tls_failure IS NULL, '', {name})".format(
        name=mat.failure_name("top_tls_failure")),
}

_COLUMN = {
    "domain": "analysis_web_measurement.domain",
    "probe_cc": "analysis_web_measurement.probe_cc",
    "probe_asn": "analysis_web_measurement.probe_asn",
    "test_name": "analysis_web_measurement.test_name",
    "input": "analysis_web_measurement.input",
    "measurement_uid": "analysis_web_measurement.measurement_uid",
    "category_code": "citizenlab.category_code",
}


class InvalidAnalysis(ValueError):
    """A parameter combination refused with 400 and this message."""


@dataclass(frozen=True)
class Analysis:
    """One normalised analysis request (sorted tuples; resolved window, None: unbounded)."""

    axis_x: str = TIME_AXIS
    axis_y: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    time_grain: str = "day"
    test_name: tuple[str, ...] = ()
    domain: tuple[str, ...] = ()
    input: tuple[str, ...] = ()
    measurement_uid: tuple[str, ...] = ()
    probe_cc: tuple[str, ...] = ()
    probe_asn: tuple[int, ...] = ()
    category_code: tuple[str, ...] = ()
    ooni_run_link_id: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        out = [self.axis_x]
        for name in KEYED_FILTERS:
            if len(getattr(self, name)) == 1 and name not in out:
                out.append(name)
        if self.axis_y is not None and self.axis_y not in out:
            out.append(self.axis_y)
        return tuple(out)


def validate(a: Analysis) -> None:
    for name, value in (("axis_x", a.axis_x), ("axis_y", a.axis_y)):
        if value is not None and value not in AXES:
            raise InvalidAnalysis(f"Invalid {name}: use one of {', '.join(AXES)}")
    if a.axis_x == a.axis_y:
        raise InvalidAnalysis("Axis X and Y cannot be the same")
    if a.since is not None and a.until is not None and a.until <= a.since:
        raise InvalidAnalysis("Invalid since and until values: until must be after since")


def build(a: Analysis) -> Query:
    validate(a)
    params: dict[str, Any] = {}
    where = mat.window("analysis_web_measurement", a.since, a.until, params)
    for name in ("test_name", "domain", "input", "measurement_uid", "probe_cc", "probe_asn",
                 "ooni_run_link_id"):
        values = getattr(a, name)
        if values:
            where.append(f"analysis_web_measurement.{name} IN %({name})s")
            params[name] = list(values)
    join = ""
    if a.category_code or "category_code" in a.keys:
        join = mat.citizenlab_join("analysis_web_measurement.input", a.category_code,
                                   a.probe_cc, params)
    select = [f"{_key_sql(k, a.time_grain)} AS {k}" for k in a.keys]
    select.append("count() AS count")
    for layer in LAYERS:
        for state in STATES:
            col = f"{layer}_{state}"
            # Float32 likelihoods: rounded so that 0.8 reads 0.8, not 0.800000011920929.
            # (`q_`: an alias named like the column would replace it in the weights below.)
            select.append(f"round(quantile(0.95)(toFloat64({col})), 6) AS q_{col}")
    for layer in LAYERS:
        weight = f"toUInt64(greatest({layer}_blocked, 0) * 100)"
        select.append(f"arrayElement(topKWeighted(1)({_OUTCOME[layer]}, {weight}), 1)"
                      f" AS {layer}_blocked_outcome")
    keys = ", ".join(a.keys)
    sql = (f"SELECT {', '.join(select)}\nFROM analysis_web_measurement{join}"
           + ("\nWHERE " + "\n    AND ".join(where) if where else "")
           + f"\nGROUP BY {keys}\nORDER BY {keys}")
    return sql, params


def _key_sql(key: str, grain: str) -> str:
    if key == TIME_AXIS:
        return mat.time_bucket("analysis_web_measurement.measurement_start_time", grain)
    return _COLUMN[key]


def _number(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def loni(row: dict[str, Any]) -> dict[str, Any]:
    """The `loni` object of one group: likelihoods, outcomes and the likely blocked layers
    (those over BLOCKED_THRESHOLD, most blocked first); `blocked_max*` is the first of them,
    or `"none"` / 0.0."""
    out: dict[str, Any] = {f"{layer}_{state}": _number(row[f"q_{layer}_{state}"])
                           for layer in LAYERS for state in STATES}
    likely = []
    for layer in LAYERS:
        value = out[f"{layer}_blocked"]
        if value is not None and value > BLOCKED_THRESHOLD:
            likely.append([f"{layer}.{row[f'{layer}_blocked_outcome']}", value])
    likely.sort(key=lambda pair: -pair[1])
    out["likely_blocked_protocols"] = likely
    out["blocked_max_outcome"], out["blocked_max"] = likely[0] if likely else ("none", 0.0)
    for layer in LAYERS:
        out[f"{layer}_blocked_outcome"] = row[f"{layer}_blocked_outcome"]
    return out


def result(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """One answer item: every ITEM_KEYS key (null unless grouped by), count as a float, the
    loni, and category_code when it is an axis."""
    item: dict[str, Any] = {k: row.get(k) if k in keys else None for k in ITEM_KEYS}
    if "category_code" in keys:
        item["category_code"] = row["category_code"]
    item["count"] = float(row["count"])
    item["loni"] = loni(row)
    return item
