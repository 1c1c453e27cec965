"""Explorer's global and list statistics (/api/_/global_overview, /countries, /networks, ...):
SQL builders and the pure shaping of their rows into the answers Explorer reads.

The full-table aggregates are few and shared: one query per statistic feeds several routes
(the monthly counts feed asn_by_month, countries_by_month and global_overview_by_month; the
per-country counts feed countries and country_overview), so each is computed once per cache
period. Windows are relative to an explicit `today` (UTC) so that a precomputed answer is
exactly the one for the period it is served in.

With `rollups` (the default, `[aggregation] rollups`) the global, monthly, network and domain
counts read the rollups of migration 0012 (per day, country, network, test and domain), whose
rows hold the same counts as fastpath's rows; the country counts keep reading fastpath (their
clock-error cut is not at midnight).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from oonibackend import countries

Query = tuple[str, dict[str, Any]]
Row = Mapping[str, Any]

# Months before the current one in the monthly series (legacy: "the last 24 months").
MONTHS = 24
# Earlier start times are probe clock errors (legacy's country_overview filter): they would
# make Explorer's calendar start in 1970.
FIRST_VALID = dt.datetime(2012, 12, 1)
DEFAULT_CATEGORY = "MISC"
SERIES = ("networks_by_month", "countries_by_month", "measurements_by_month")


# --- SQL -----------------------------------------------------------------------------------

def global_counts(rollups: bool = True) -> Query:
    """Distinct networks and countries, and measurements, over all of fastpath."""
    if rollups:
        return ("SELECT uniqExact(probe_asn) AS network_count, uniqExact(probe_cc) AS "
                "country_count, sum(n_measurement) AS measurement_count FROM fastpath_daily", {})
    return ("SELECT uniqExact(probe_asn) AS network_count, uniqExact(probe_cc) AS country_count,"
            " count() AS measurement_count FROM fastpath", {})


def monthly_counts(today: dt.date, months: int = MONTHS, rollups: bool = True) -> Query:
    """Per calendar month of the window: distinct networks, distinct countries, measurements."""
    window = month_window(today, months)
    since = dt.datetime.combine(window[0], dt.time())
    until = dt.datetime.combine(add_months(window[-1], 1), dt.time())
    if rollups:  # the window is whole months
        sql = """SELECT toStartOfMonth(day) AS month,
    uniqExact(probe_asn) AS networks, uniqExact(probe_cc) AS countries,
    sum(n_measurement) AS measurements
FROM fastpath_daily
WHERE day >= %(since)s AND day < %(until)s
GROUP BY month
ORDER BY month"""
        return sql, {"since": since.date(), "until": until.date()}
    sql = """SELECT toStartOfMonth(measurement_start_time) AS month,
    uniqExact(probe_asn) AS networks, uniqExact(probe_cc) AS countries, count() AS measurements
FROM fastpath
WHERE measurement_start_time >= %(since)s AND measurement_start_time < %(until)s
GROUP BY month
ORDER BY month"""
    return sql, {"since": since, "until": until}


def country_counts() -> Query:
    """Per probe_cc: all-time measurements (the country list) and, since FIRST_VALID, the
    first day, measurements and distinct networks (the country overview). One scan for both."""
    sql = """SELECT probe_cc,
    count() AS measurement_count,
    countIf(measurement_start_time > %(first_valid)s) AS valid_count,
    toDate(minIf(measurement_start_time, measurement_start_time > %(first_valid)s))
        AS first_day,
    uniqExactIf(probe_asn, measurement_start_time > %(first_valid)s) AS network_count
FROM fastpath
GROUP BY probe_cc
ORDER BY probe_cc"""
    return sql, {"first_valid": FIRST_VALID}


def network_counts(rollups: bool = True) -> Query:
    """All-time measurements per ASN with the newest asnmeta organisation name ('' if none)."""
    counts = ("SELECT probe_asn, sum(n_measurement) AS cnt FROM fastpath_daily GROUP BY probe_asn"
              if rollups else "SELECT probe_asn, count() AS cnt FROM fastpath GROUP BY probe_asn")
    sql = f"""SELECT m.probe_asn AS probe_asn, m.cnt AS cnt, a.org AS org_name
FROM ({counts}) AS m
LEFT JOIN (
    SELECT asn, argMax(org_name, (changed, org_name)) AS org FROM asnmeta GROUP BY asn
) AS a ON m.probe_asn = a.asn
ORDER BY probe_asn"""
    return sql, {}


def domain_counts(rollups: bool = True) -> Query:
    """Every test-list domain with its category (the global list's first, then the shortest
    URL's) and its all-time web_connectivity measurements (0 if none)."""
    table, count = ("fastpath_daily_domain", "sum(n_measurement)") if rollups else (
        "fastpath", "count()")
    sql = f"""SELECT c.domain AS domain_name, c.category AS category_code,
    f.cnt AS measurement_count
FROM (
    SELECT domain, argMin(category_code, (cc != 'ZZ', length(url), url, category_code))
        AS category
    FROM citizenlab GROUP BY domain
) AS c
LEFT JOIN (
    SELECT domain, {count} AS cnt FROM {table}
    WHERE test_name = 'web_connectivity' AND domain IN (SELECT domain FROM citizenlab)
    GROUP BY domain
) AS f ON c.domain = f.domain
ORDER BY domain_name"""
    return sql, {}


def domain_metadata(domain: str) -> Query:
    """The test-list entry for a domain with or without `www.`: the global list (ZZ) first,
    then the shortest URL (ties broken by URL, then category, so the answer is stable)."""
    sql = """SELECT domain, category_code FROM citizenlab
WHERE domain IN (%(domain)s, %(alt)s)
ORDER BY cc != 'ZZ', length(url), url, category_code
LIMIT 1"""
    return sql, {"domain": domain, "alt": www_variant(domain)}


def asn_org_name(asn: int) -> Query:
    """The newest organisation name of an ASN (ties: the greatest name, like network_counts)."""
    sql = """SELECT org_name FROM asnmeta WHERE asn = %(asn)s
ORDER BY changed DESC, org_name DESC
LIMIT 1"""
    return sql, {"asn": asn}


# --- months --------------------------------------------------------------------------------

def add_months(d: dt.date, n: int) -> dt.date:
    """The first day of the month `n` months after (or before, n < 0) the month of `d`."""
    m = d.year * 12 + d.month - 1 + n
    return dt.date(m // 12, m % 12 + 1, 1)


def month_window(today: dt.date, months: int = MONTHS) -> list[dt.date]:
    """First days of the `months` months before today's month and of today's, oldest first."""
    return [add_months(today, -i) for i in range(months, -1, -1)]


def month_key(d: dt.date) -> str:
    """The date key Explorer parses: `YYYY-MM-01T00:00:00+00:00` (legacy format)."""
    return f"{d.isoformat()}T00:00:00+00:00"


def month_series(rows: Iterable[Row], today: dt.date, months: int = MONTHS
                 ) -> dict[str, list[dict[str, Any]]]:
    """The three monthly series, every month of the window present (0 where no data) so that
    the last item is always the current month, which Explorer drops as incomplete."""
    by_month = {r["month"]: r for r in rows}
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in SERIES}
    for m in month_window(today, months):
        r = by_month.get(m)
        key = month_key(m)
        for series, column in zip(SERIES, ("networks", "countries", "measurements"),
                                  strict=True):
            out[series].append({"date": key, "value": int(r[column]) if r else 0})
    return out


# --- countries -----------------------------------------------------------------------------

def countries_list(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """`countries[]` by code: codes that are not countries (ZZ, garbage) are skipped."""
    out = []
    for r in sorted(rows, key=lambda r: r["probe_cc"]):
        name = countries.NAMES.get(r["probe_cc"])
        if name is not None:
            out.append({"alpha_2": r["probe_cc"], "name": name,
                        "count": int(r["measurement_count"])})
    return out


def country_overview(row: Row | None, today: dt.date) -> dict[str, Any]:
    """Explorer crashes without `first_bucket_date`: a country without (valid) measurements
    gets today, so its calendar simply starts this year, and zero counts."""
    if row is None or not row["valid_count"]:
        return {"first_bucket_date": today, "measurement_count": 0, "network_count": 0}
    return {"first_bucket_date": row["first_day"], "measurement_count": int(row["valid_count"]),
            "network_count": int(row["network_count"])}


# --- networks and domains ------------------------------------------------------------------

def networks_list(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Explorer lower-cases `org_name`: never null."""
    return [{"probe_asn": int(r["probe_asn"]), "cnt": int(r["cnt"]),
             "org_name": r["org_name"] or ""} for r in rows]


def domains_list(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Explorer sorts on `category_code`: never null or empty."""
    return [{"domain_name": r["domain_name"],
             "category_code": r["category_code"] or DEFAULT_CATEGORY,
             "measurement_count": int(r["measurement_count"] or 0)} for r in rows]


def www_variant(domain: str) -> str:
    """The same domain with `www.` added or removed."""
    return domain[4:] if domain.startswith("www.") else "www." + domain


def domain_metadata_answer(domain: str, row: Row | None) -> dict[str, str]:
    """The matching entry's domain and category; unknown domains: MISC, without `www.`."""
    if row is None:
        canonical = domain[4:] if domain.startswith("www.") else domain
        return {"category_code": DEFAULT_CATEGORY, "canonical_domain": canonical}
    return {"category_code": row["category_code"] or DEFAULT_CATEGORY,
            "canonical_domain": row["domain"]}
