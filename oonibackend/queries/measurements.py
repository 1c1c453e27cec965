"""SQL of the measurement routes: the search listing, one measurement's metadata, feedback.

Pure functions: SQL builders returning `(sql, params)` from a `ListQuery` (which
routes/measurements.py parses from the query string), and the shaping of rows and paging
metadata (docs/api.md §2.7).

Listing design (the query Explorer's /search page and the "recent measurements" boxes send:
the newest N in a window, optional filters, ORDER BY measurement_start_time DESC LIMIT N):

* The time window is a PREWHERE on measurement_start_time, the first column of fastpath's
  sorting key, so only the granules of the window are read; ordering by the whole sorting key
  (measurement_start_time, report_id, input, measurement_uid), all in the requested direction,
  lets ClickHouse read in key order and stop after offset + limit matching rows instead of
  sorting the window. The full key also makes paging deterministic (legacy ordered by the time
  alone, so rows with equal times could move between pages).
* No join unless category_code is given, and then a semi-join (`input IN (SELECT url FROM
  citizenlab ...)`) rather than legacy's INNER JOIN, which listed a measurement once per
  matching test-list entry (a URL on two country lists appeared twice).
* Duplicates: fastpath is a ReplacingMergeTree (version: update_time), so a re-delivered or
  re-scored measurement exists twice until a background merge; a stale version can also match
  a flag filter (anomaly/confirmed/failure) its current version no longer matches. FINAL on
  the whole window is exact but merges every overlapping part over the window; LIMIT 1 BY
  measurement_uid defeats the early stop. So the query has two phases (`list_sql`):
  1. candidates: the keys of the first offset + limit + slack matching rows, without FINAL
     (read in key order, early stop: the cheap part);
  2. the page: FROM fastpath FINAL restricted by `(sorting key) IN (candidates)`, so ClickHouse
     merges only the granules holding them, with the filters applied again to the current
     versions. Exact as long as the candidates hold at most `slack` extra rows (duplicates or
     stale versions), which merges keep far below.
  Measured on 3 M generated rows in 5 overlapping unmerged parts (bench/gen_fastpath.py, 18
  days, chdb, loaded 2-core machine), median of Explorer's search/box queries: without FINAL
  14-24 ms, FINAL over the window 75-120 ms (300 k rows read, and it grows with the number of
  overlapping parts: 200-800 ms with 9 parts), two phases 42-65 ms (85 k rows read). On a
  fully merged table FINAL costs nothing and the two phases ~2x a plain read.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_LIMIT = 100
MAX_LIMIT = 100
DEFAULT_WINDOW = dt.timedelta(days=30)
ORDER_BY = ("measurement_start_time", "test_start_time", "input", "probe_cc", "probe_asn",
            "test_name")
SORT_KEY = ("measurement_start_time", "report_id", "input", "measurement_uid")
LIST_COLUMNS = ("measurement_uid", "report_id", "probe_cc", "probe_asn", "test_name",
                "measurement_start_time", "input", "anomaly", "confirmed", "msm_failure",
                "scores", "is_verified")
META_COLUMNS = ("measurement_uid", "report_id", "input", "probe_cc", "probe_asn", "test_name",
                "test_start_time", "measurement_start_time", "anomaly", "confirmed",
                "msm_failure", "scores", "is_verified")
# Extra candidates fetched in phase 1 to make up for duplicates and stale versions.
MIN_SLACK = 20
# Lookups of one measurement first look near the time its id implies (uid: receipt time;
# report id: report opening time) and only then scan the whole table.
UID_HINT = (dt.timedelta(days=1), dt.timedelta(hours=1))
REPORT_HINT = (dt.timedelta(days=1), dt.timedelta(days=2))

_UID_TIME = re.compile(r"([0-9]{14})\.[0-9]{6}_", re.ASCII)
_RID_TIME = re.compile(r"([0-9]{8}T[0-9]{6})Z_", re.ASCII)
_VERIFICATION = {"t": "verified", "f": "failed"}


@dataclass(frozen=True)
class ListQuery:
    report_id: str | None = None
    input: str | None = None
    domains: tuple[str, ...] = ()
    category_codes: tuple[str, ...] = ()
    probe_ccs: tuple[str, ...] = ()
    probe_asns: tuple[int, ...] = ()
    test_names: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    anomaly: bool | None = None
    confirmed: bool | None = None
    failure: bool | None = None
    software_versions: tuple[str, ...] = ()
    test_versions: tuple[str, ...] = ()
    engine_versions: tuple[str, ...] = ()
    ooni_run_link_ids: tuple[int, ...] = ()
    order_by: str = "measurement_start_time"
    order: str = "desc"
    offset: int = 0
    limit: int = DEFAULT_LIMIT


def _in_or_eq(column: str, name: str, values: tuple[Any, ...], params: dict[str, Any]) -> str:
    if len(values) == 1:
        params[name] = values[0]
        return f"{column} = %({name})s"
    params[name] = list(values)
    return f"{column} IN %({name})s"


def list_sql(lq: ListQuery) -> tuple[str, dict[str, Any]]:
    """The listing query: columns LIST_COLUMNS, at most `limit` rows after `offset`."""
    params: dict[str, Any] = {"limit": lq.limit, "offset": lq.offset}
    prewhere = []
    if lq.since is not None:
        prewhere.append("measurement_start_time > %(since)s")
        params["since"] = lq.since
    if lq.until is not None:
        prewhere.append("measurement_start_time <= %(until)s")
        params["until"] = lq.until
    where = []
    if lq.report_id is not None:
        where.append("report_id = %(report_id)s")
        params["report_id"] = lq.report_id
    if lq.input is not None:
        where.append("input = %(input)s")
        params["input"] = lq.input
    if lq.domains:
        where.append(_in_or_eq("domain", "domain", lq.domains, params))
    if lq.category_codes:
        where.append("input IN (SELECT url FROM citizenlab WHERE "
                     + _in_or_eq("category_code", "category_code", lq.category_codes, params)
                     + ")")
    if lq.probe_ccs:
        where.append(_in_or_eq("probe_cc", "probe_cc", lq.probe_ccs, params))
    else:
        where.append("probe_cc != 'ZZ'")
    if lq.probe_asns:
        where.append(_in_or_eq("probe_asn", "probe_asn", lq.probe_asns, params))
    else:
        where.append("probe_asn != 0")
    if lq.test_names:
        where.append(_in_or_eq("test_name", "test_name", lq.test_names, params))
    for column, value in (("anomaly", lq.anomaly), ("confirmed", lq.confirmed),
                          ("msm_failure", lq.failure)):
        if value is not None:
            where.append(f"{column} = '{'t' if value else 'f'}'")
    for column, values in (("software_version", lq.software_versions),
                           ("test_version", lq.test_versions),
                           ("engine_version", lq.engine_versions)):
        if values:
            where.append(_in_or_eq(column, column, values, params))
    if lq.ooni_run_link_ids:
        where.append(_in_or_eq("ooni_run_link_id", "ooni_run_link_id", lq.ooni_run_link_ids,
                               params))

    direction = "DESC" if lq.order == "desc" else "ASC"
    if lq.order_by in ("measurement_start_time", "test_start_time"):
        # measurement_start_time: the sorting key itself (read in order, stop early).
        keys = SORT_KEY if lq.order_by == "measurement_start_time" else \
            (lq.order_by, *SORT_KEY)
    else:
        keys = (lq.order_by, "measurement_start_time", "measurement_uid")
    order = ", ".join(f"{k} {direction}" for k in keys)
    pre = f"PREWHERE {' AND '.join(prewhere)}\n" if prewhere else ""
    cond = " AND ".join(where)
    key = ", ".join(SORT_KEY)
    params["candidates"] = lq.offset + lq.limit + max(lq.limit, MIN_SLACK)
    candidates = (f"SELECT {key}\nFROM fastpath\n{pre}WHERE {cond}\nORDER BY {order}\n"
                  "LIMIT %(candidates)s")
    sql = (f"SELECT {', '.join(LIST_COLUMNS)}\nFROM fastpath FINAL\n{pre}"
           f"WHERE ({key}) IN (\n{candidates}\n)\nAND {cond}\n"
           f"ORDER BY {order}\nLIMIT %(limit)s OFFSET %(offset)s")
    return sql, params


def scores_object(scores: str) -> Any:
    """The scores column as an object (the listing's shape); {} when not valid JSON."""
    try:
        return orjson.loads(scores)
    except orjson.JSONDecodeError:
        return {}


def list_item(row: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """One result of the listing: the legacy fields (Explorer reads `probe_asn` as `AS<n>`
    and `scores` as an object) plus the current services' `verification_status`
    (docs/current_services.md §1)."""
    uid = row["measurement_uid"]
    return {
        "measurement_uid": uid,
        "measurement_url": f"{base_url}api/v1/raw_measurement?measurement_uid="
                           + urllib.parse.quote(uid, safe=""),
        "report_id": row["report_id"],
        "probe_cc": row["probe_cc"],
        "probe_asn": f"AS{row['probe_asn']}",
        "test_name": row["test_name"],
        "measurement_start_time": row["measurement_start_time"],
        "input": row["input"] or None,
        "anomaly": row["anomaly"] == "t",
        "confirmed": row["confirmed"] == "t",
        "failure": row["msm_failure"] == "t",
        "scores": scores_object(row["scores"]),
        "verification_status": _VERIFICATION.get(row.get("is_verified") or "", "unverified"),
    }


def next_url(base_url: str, args: Iterable[tuple[str, str]], offset: int, limit: int) -> str:
    """Absolute URL of the next page: every original argument, offset advanced, limit set
    (existing offset/limit keep their position, as legacy's dict update did)."""
    out: list[tuple[str, str]] = []
    seen = set()
    for k, v in args:
        if k in ("offset", "limit"):
            if k in seen:
                continue
            seen.add(k)
            v = str(offset + limit) if k == "offset" else str(limit)
        out.append((k, v))
    for k, v in (("offset", str(offset + limit)), ("limit", str(limit))):
        if k not in seen:
            out.append((k, v))
    return f"{base_url}api/v1/measurements?{urllib.parse.urlencode(out)}"


def page_metadata(offset: int, limit: int, rows: int, query_time: float,
                  next_page: str | None) -> dict[str, Any]:
    """The `metadata` block: a short page ends the listing (count and pages known); a full
    page means more may follow (count and pages -1, next_url set)."""
    meta: dict[str, Any] = {"offset": offset, "limit": limit,
                            "current_page": math.ceil(offset / limit) + 1,
                            "query_time": round(query_time, 6)}
    if rows < limit:
        count = offset + rows
        meta.update(count=count, pages=math.ceil(count / limit), next_url=None)
    else:
        meta.update(count=-1, pages=-1, next_url=next_page)
    return meta


# ---- one measurement --------------------------------------------------------------------------


def uid_time(uid: str) -> dt.datetime | None:
    m = _UID_TIME.match(uid)
    if m is None:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%d%H%M%S")
    except ValueError:
        return None


def report_id_time(report_id: str) -> dt.datetime | None:
    m = _RID_TIME.match(report_id)
    if m is None:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S")
    except ValueError:
        return None


def _hint(t: dt.datetime | None, before: dt.timedelta, after: dt.timedelta
          ) -> tuple[dt.datetime, dt.datetime] | None:
    if t is None:
        return None
    return t - before, t + after


def meta_sql(where: str, params: dict[str, Any],
             window: tuple[dt.datetime, dt.datetime] | None) -> tuple[str, dict[str, Any]]:
    """One fastpath row (its newest version; the earliest uid when several match)."""
    p = dict(params)
    prewhere = ""
    if window is not None:
        prewhere = "PREWHERE measurement_start_time >= %(lo)s AND measurement_start_time < %(hi)s\n"
        p["lo"], p["hi"] = window
    sql = (f"SELECT {', '.join(META_COLUMNS)}\nFROM fastpath\n{prewhere}WHERE {where}\n"
           "ORDER BY measurement_uid, update_time DESC\nLIMIT 1")
    return sql, p


def meta_by_uid(uid: str) -> list[tuple[str, dict[str, Any]]]:
    """The lookups to try in order: near the uid's time, then everywhere."""
    where, params = "measurement_uid = %(uid)s", {"uid": uid}
    hint = _hint(uid_time(uid), *UID_HINT)
    return ([meta_sql(where, params, hint)] if hint else []) + [meta_sql(where, params, None)]


def meta_by_report(report_id: str, inp: str | None) -> list[tuple[str, dict[str, Any]]]:
    """By report id and input ('' when absent: measurements without input)."""
    where = "report_id = %(report_id)s AND input = %(input)s"
    params = {"report_id": report_id, "input": inp or ""}
    hint = _hint(report_id_time(report_id), *REPORT_HINT)
    return ([meta_sql(where, params, hint)] if hint else []) + [meta_sql(where, params, None)]


def category_sql(url: str, probe_cc: str) -> tuple[str, dict[str, Any]]:
    """The category of a URL in the test lists: the probe country's list first, then the
    global one (legacy's LEFT JOIN took whichever row came first)."""
    return ("SELECT category_code FROM citizenlab WHERE url = %(url)s\n"
            "ORDER BY upper(toStringCutToZero(cc)) = %(cc)s DESC, "
            "toStringCutToZero(cc) = 'ZZ' DESC, category_code\nLIMIT 1",
            {"url": url, "cc": probe_cc.upper()})


def meta_object(row: Mapping[str, Any], category_code: str | None) -> dict[str, Any]:
    """measurement_meta's answer: `scores` stays a JSON string (Explorer parses it),
    probe_asn an integer."""
    return {
        "anomaly": row["anomaly"] == "t",
        "confirmed": row["confirmed"] == "t",
        "failure": row["msm_failure"] == "t",
        "input": row["input"],
        "measurement_start_time": row["measurement_start_time"],
        "measurement_uid": row["measurement_uid"],
        "probe_asn": row["probe_asn"],
        "probe_cc": row["probe_cc"],
        "report_id": row["report_id"],
        "scores": row["scores"],
        "test_name": row["test_name"],
        "test_start_time": row["test_start_time"],
        "category_code": category_code,
        "verification_status": _VERIFICATION.get(row.get("is_verified") or "", "unverified"),
    }


# ---- feedback ---------------------------------------------------------------------------------


def feedback_sql(uid: str, account_id: str | None) -> tuple[str, dict[str, Any]]:
    """Per status: how many accounts chose it, and whether `account_id` is one of them."""
    return ("SELECT status, count() AS n, countIf(account_id = %(account)s) AS mine\n"
            "FROM msmt_feedback FINAL\nWHERE measurement_uid = %(uid)s\n"
            "GROUP BY status ORDER BY status",
            {"uid": uid, "account": account_id or ""})
