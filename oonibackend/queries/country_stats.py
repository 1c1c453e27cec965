"""SQL for Explorer's per-country statistics (/api/_/test_coverage, website_*, im_*, ...).

Every builder returns `(sql, params)`. Windows are passed in as explicit UTC datetimes computed
by the caller from "today", rather than ClickHouse's `today()`: the zero-filled day grids are
built in Python from the same dates, so the two can never disagree (and a server in another
time zone cannot shift the window).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Query = tuple[str, dict[str, Any]]

# Explorer's test groups (the legacy API's Python map). The `test_groups` table of the
# schema has the same 23 tests minus stunreachability, which the map files under experimental.
TEST_GROUPS: dict[str, tuple[str, ...]] = {
    "websites": ("web_connectivity",),
    "im": ("facebook_messenger", "signal", "telegram", "whatsapp"),
    "middlebox": ("http_invalid_request_line", "http_header_field_manipulation"),
    "performance": ("ndt", "dash"),
    "circumvention": ("bridge_reachability", "meek_fronted_requests_test", "vanilla_tor",
                      "tcp_connect", "psiphon", "tor", "torsf", "riseupvpn"),
    "legacy": ("http_requests", "dns_consistency", "http_host", "multi_protocol_traceroute"),
    "experimental": ("urlgetter", "dnscheck", "stunreachability"),
}
IM_TESTS: tuple[str, ...] = tuple(sorted(TEST_GROUPS["im"]))
# The tests of the circumvention statistics (not the whole circumvention group: legacy choice).
CIRCUMVENTION_TESTS: tuple[str, ...] = ("psiphon", "riseupvpn", "stunreachability", "tor",
                                        "torsf")

_WINDOW = "measurement_start_time >= %(since)s AND measurement_start_time < %(until)s"
_COUNTS = """countIf(anomaly = 't') AS anomaly_count,
    countIf(confirmed = 't') AS confirmed_count,
    countIf(msm_failure = 't') AS failure_count,
    count() AS total_count"""


def group_tests(groups: list[str] | tuple[str, ...]) -> list[str]:
    """The sorted test names of the given groups (names must be keys of TEST_GROUPS)."""
    return sorted({t for g in groups for t in TEST_GROUPS[g]})


def _window(since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    return {"since": since, "until": until}


def test_coverage(probe_cc: str, since: dt.datetime, until: dt.datetime) -> Query:
    """Measurements per (day, test_name) of the grouped tests; the grouping into test groups
    and the zero-filled grid are done in Python (country_grids.test_coverage_grid)."""
    sql = f"""SELECT toDate(measurement_start_time) AS test_day, test_name, count() AS msmt_cnt
FROM fastpath
WHERE {_WINDOW}
    AND probe_cc = %(probe_cc)s
    AND test_name IN %(test_names)s
GROUP BY test_day, test_name
ORDER BY test_day, test_name"""
    return sql, {**_window(since, until), "probe_cc": probe_cc,
                 "test_names": group_tests(tuple(TEST_GROUPS))}


def network_coverage(probe_cc: str, since: dt.datetime, until: dt.datetime,
                     test_names: list[str] | None = None) -> Query:
    """Distinct networks (ASNs) per day, optionally only counting the given tests."""
    params: dict[str, Any] = {**_window(since, until), "probe_cc": probe_cc}
    tests = ""
    if test_names:
        tests = "\n    AND test_name IN %(test_names)s"
        params["test_names"] = list(test_names)
    sql = f"""SELECT toDate(measurement_start_time) AS test_day, uniqExact(probe_asn) AS count
FROM fastpath
WHERE {_WINDOW}
    AND probe_cc = %(probe_cc)s{tests}
GROUP BY test_day
ORDER BY test_day"""
    return sql, params


def website_networks(probe_cc: str, since: dt.datetime, until: dt.datetime) -> Query:
    """Measurements per network, busiest first (all tests, as the legacy route)."""
    sql = f"""SELECT probe_asn, count() AS count
FROM fastpath
WHERE {_WINDOW}
    AND probe_cc = %(probe_cc)s
GROUP BY probe_asn
ORDER BY count DESC, probe_asn ASC"""
    return sql, {**_window(since, until), "probe_cc": probe_cc}


def website_stats(probe_cc: str, probe_asn: int, input_: str, since: dt.datetime,
                  until: dt.datetime) -> Query:
    """Daily anomaly/confirmed/failure/total counts of one URL on one network."""
    sql = f"""SELECT toDate(measurement_start_time) AS test_day,
    {_COUNTS}
FROM fastpath
WHERE {_WINDOW}
    AND probe_cc = %(probe_cc)s
    AND probe_asn = %(probe_asn)s
    AND input = %(input)s
GROUP BY test_day
ORDER BY test_day"""
    return sql, {**_window(since, until), "probe_cc": probe_cc, "probe_asn": probe_asn,
                 "input": input_}


def website_urls_count(probe_cc: str, probe_asn: int, since: dt.datetime,
                       until: dt.datetime) -> Query:
    """How many distinct URLs web_connectivity tested on the network (the pagination total)."""
    sql = f"""SELECT uniqExact(input) AS input_count
FROM fastpath
WHERE {_WINDOW}
    AND test_name = 'web_connectivity'
    AND probe_cc = %(probe_cc)s
    AND probe_asn = %(probe_asn)s"""
    return sql, {**_window(since, until), "probe_cc": probe_cc, "probe_asn": probe_asn}


def website_urls(probe_cc: str, probe_asn: int, since: dt.datetime, until: dt.datetime,
                 limit: int, offset: int) -> Query:
    """One page of per-URL counts, most confirmed first, then busiest, most anomalous, URL."""
    sql = f"""SELECT input,
    {_COUNTS}
FROM fastpath
WHERE {_WINDOW}
    AND test_name = 'web_connectivity'
    AND probe_cc = %(probe_cc)s
    AND probe_asn = %(probe_asn)s
GROUP BY input
ORDER BY confirmed_count DESC, total_count DESC, anomaly_count DESC, input ASC
LIMIT %(limit)s OFFSET %(offset)s"""
    return sql, {**_window(since, until), "probe_cc": probe_cc, "probe_asn": probe_asn,
                 "limit": limit, "offset": offset}


def vanilla_tor_stats(probe_cc: str, today: dt.datetime) -> Query:
    """Per-network vanilla_tor results over the last 6 months (up to now).

    Fixes two legacy bugs: the legacy query had no test_name filter (docs/api.md §4 bug 13: every
    test of the country was counted as a Tor measurement), and it counted failed measurements
    (msm_failure) as successes (success = total - anomalies); here a success is a measurement
    that is neither anomalous nor failed.
    """
    sql = """SELECT probe_asn,
    countIf(msm_failure = 't') AS failure_count,
    countIf(anomaly = 'f' AND msm_failure = 'f') AS success_count,
    count() AS total_count,
    toDate(max(measurement_start_time)) AS last_tested
FROM fastpath
WHERE measurement_start_time >= %(today)s - INTERVAL 6 MONTH
    AND test_name = 'vanilla_tor'
    AND probe_cc = %(probe_cc)s
GROUP BY probe_asn
ORDER BY probe_asn"""
    return sql, {"today": today, "probe_cc": probe_cc}


def im_networks(probe_cc: str, since: dt.datetime, until: dt.datetime) -> Query:
    """Per (IM test, network) measurement counts and last test day."""
    sql = f"""SELECT test_name, probe_asn, count() AS total_count,
    toDate(max(measurement_start_time)) AS last_tested
FROM fastpath
WHERE {_WINDOW}
    AND probe_cc = %(probe_cc)s
    AND test_name IN %(test_names)s
GROUP BY test_name, probe_asn
ORDER BY test_name ASC, total_count DESC, probe_asn ASC"""
    return sql, {**_window(since, until), "probe_cc": probe_cc, "test_names": list(IM_TESTS)}


def im_stats(test_name: str, probe_cc: str, probe_asn: int, since: dt.datetime,
             until: dt.datetime) -> Query:
    """Daily measurement counts of one IM test on one network."""
    sql = f"""SELECT toDate(measurement_start_time) AS test_day, count() AS total_count
FROM fastpath
WHERE {_WINDOW}
    AND probe_cc = %(probe_cc)s
    AND probe_asn = %(probe_asn)s
    AND test_name = %(test_name)s
GROUP BY test_day
ORDER BY test_day"""
    return sql, {**_window(since, until), "probe_cc": probe_cc, "probe_asn": probe_asn,
                 "test_name": test_name}


def circumvention_stats_by_country(since: dt.datetime, until: dt.datetime) -> Query:
    """Circumvention-tool measurements per country."""
    sql = f"""SELECT probe_cc, count() AS cnt
FROM fastpath
WHERE {_WINDOW}
    AND test_name IN %(test_names)s
GROUP BY probe_cc
ORDER BY probe_cc"""
    return sql, {**_window(since, until), "test_names": list(CIRCUMVENTION_TESTS)}


# The runtime of a circumvention measurement: the fastpath's `scores.extra.test_runtime` when
# the scorer put it there (tor, psiphon, successful torsf), else the measurement's own
# `test_runtime` column (the same number: stunreachability, torsf timeouts, riseupvpn carry no
# `extra.test_runtime`). Legacy dropped those rows, so a tool that never records it (STUN) or
# its timeouts never showed up. A runtime of 0 means unknown and is left out.
_RUNTIME = ("if(JSONHas(scores, 'extra', 'test_runtime'), "
            "JSONExtractFloat(scores, 'extra', 'test_runtime'), toFloat64(test_runtime))")


def circumvention_runtime_stats(since: dt.datetime, until: dt.datetime) -> Query:
    """Median and 90th percentile runtime and count per (test, country, day)."""
    sql = f"""SELECT test_name, probe_cc, day,
    quantilesExactInclusive(0.5, 0.9)(runtime) AS q, count() AS cnt
FROM (
    SELECT test_name, probe_cc, toDate(measurement_start_time) AS day, {_RUNTIME} AS runtime
    FROM fastpath
    WHERE {_WINDOW}
        AND test_name IN %(test_names)s
)
WHERE runtime > 0
GROUP BY test_name, probe_cc, day
ORDER BY test_name, probe_cc, day"""
    return sql, {**_window(since, until), "test_names": list(CIRCUMVENTION_TESTS)}
