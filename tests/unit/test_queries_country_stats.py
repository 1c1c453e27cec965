"""The per-country statistics' pure parts: SQL builders (queries/country_stats.py) and the
zero-filled grids and summaries (queries/country_grids.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from oonibackend.queries import country_grids as grids
from oonibackend.queries import country_stats as cq
from oonibackend.storage import sql

D1 = dt.date(2026, 3, 1)
SINCE = dt.datetime(2026, 2, 1)
UNTIL = dt.datetime(2026, 3, 4)


def rendered(query: tuple[str, dict]) -> str:
    """The SQL as the storage layer sends it (also proves every placeholder has a value)."""
    return sql.render(*query)


# -- SQL builders ---------------------------------------------------------------------------

def test_test_groups_are_the_legacy_map():
    assert sorted(cq.TEST_GROUPS) == ["circumvention", "experimental", "im", "legacy",
                                      "middlebox", "performance", "websites"]
    assert sum(len(t) for t in cq.TEST_GROUPS.values()) == 24
    assert cq.IM_TESTS == ("facebook_messenger", "signal", "telegram", "whatsapp")
    assert cq.group_tests(["performance", "websites"]) == ["dash", "ndt", "web_connectivity"]


def test_window_is_rendered_as_explicit_utc_datetimes():
    s = rendered(cq.website_networks("IT", SINCE, UNTIL))
    assert "measurement_start_time >= toDateTime('2026-02-01 00:00:00')" in s
    assert "measurement_start_time < toDateTime('2026-03-04 00:00:00')" in s
    assert "probe_cc = 'IT'" in s
    assert "today()" not in s


def test_test_coverage_counts_every_grouped_test():
    s, params = cq.test_coverage("BR", SINCE, UNTIL)
    assert params["test_names"] == cq.group_tests(tuple(cq.TEST_GROUPS))
    assert "stunreachability" in params["test_names"]
    assert "GROUP BY test_day, test_name" in s


def test_network_coverage_filters_tests_only_when_asked():
    assert "test_name" not in rendered(cq.network_coverage("BR", SINCE, UNTIL))
    s = rendered(cq.network_coverage("BR", SINCE, UNTIL, ["web_connectivity"]))
    assert "AND test_name IN ['web_connectivity']" in s
    assert "uniqExact(probe_asn) AS count" in s


def test_website_stats_matches_the_exact_input_safely():
    s = rendered(cq.website_stats("IT", 12874, "http://x.org/'; DROP", SINCE, UNTIL))
    assert "input = 'http://x.org/\\'; DROP'" in s
    assert "probe_asn = 12874" in s


def test_website_urls_is_web_connectivity_paginated_in_the_legacy_order():
    s = rendered(cq.website_urls("IT", 12874, SINCE, UNTIL, 10, 20))
    assert "test_name = 'web_connectivity'" in s
    assert ("ORDER BY confirmed_count DESC, total_count DESC, anomaly_count DESC, input ASC"
            in s)
    assert "LIMIT 10 OFFSET 20" in s
    assert "uniqExact(input)" in rendered(cq.website_urls_count("IT", 12874, SINCE, UNTIL))


def test_vanilla_tor_stats_filters_on_vanilla_tor():
    # Legacy bug 13 (docs/api.md §4): no test_name filter.
    s = rendered(cq.vanilla_tor_stats("BR", dt.datetime(2026, 3, 4)))
    assert "test_name = 'vanilla_tor'" in s
    assert "toDateTime('2026-03-04 00:00:00') - INTERVAL 6 MONTH" in s
    assert "countIf(anomaly = 'f' AND msm_failure = 'f') AS success_count" in s


def test_im_queries():
    s = rendered(cq.im_networks("AU", SINCE, UNTIL))
    assert "test_name IN ['facebook_messenger','signal','telegram','whatsapp']" in s
    s = rendered(cq.im_stats("telegram", "AU", 1221, SINCE, UNTIL))
    assert "test_name = 'telegram'" in s and "probe_asn = 1221" in s


def test_circumvention_runtime_falls_back_to_the_test_runtime_column():
    s = rendered(cq.circumvention_runtime_stats(SINCE, UNTIL))
    assert "JSONExtractFloat(scores, 'extra', 'test_runtime')" in s
    assert "toFloat64(test_runtime)" in s
    assert "WHERE runtime > 0" in s
    assert "test_name IN ['psiphon','riseupvpn','stunreachability','tor','torsf']" in s
    assert "GROUP BY probe_cc" in rendered(cq.circumvention_stats_by_country(SINCE, UNTIL))


# -- days and grids -------------------------------------------------------------------------

def test_day_range_is_inclusive():
    days = grids.day_range(dt.date(2026, 2, 27), dt.date(2026, 3, 2))
    assert days == [dt.date(2026, 2, 27), dt.date(2026, 2, 28), dt.date(2026, 3, 1),
                    dt.date(2026, 3, 2)]
    assert grids.day_range(D1, D1) == [D1]
    assert grids.day_range(D1, D1 - dt.timedelta(days=1)) == []


@pytest.mark.parametrize("t, n, expected", [
    (dt.datetime(2026, 11, 22), 6, dt.datetime(2026, 5, 22)),
    (dt.datetime(2026, 3, 4, 12), 6, dt.datetime(2025, 9, 4, 12)),
    (dt.datetime(2026, 8, 31), 6, dt.datetime(2026, 2, 28)),   # clamped to February's end
    (dt.datetime(2024, 8, 31), 6, dt.datetime(2024, 2, 29)),   # leap year
    (dt.datetime(2026, 12, 31), 1, dt.datetime(2026, 11, 30)),
    (dt.datetime(2026, 1, 15), 1, dt.datetime(2025, 12, 15)),  # across the year
])
def test_months_before(t, n, expected):
    assert grids.months_before(t, n) == expected


def test_isomid_is_the_25_character_legacy_form():
    assert grids.isomid(dt.date(2026, 3, 1)) == "2026-03-01T00:00:00+00:00"
    assert len(grids.isomid(dt.date(2026, 3, 1))) == 25


def test_test_coverage_grid_is_every_group_by_every_day_zero_filled():
    days = grids.day_range(D1, D1 + dt.timedelta(days=2))
    rows = [
        {"test_day": D1, "test_name": "web_connectivity", "msmt_cnt": 7},
        {"test_day": D1, "test_name": "signal", "msmt_cnt": 2},
        {"test_day": D1, "test_name": "telegram", "msmt_cnt": 3},  # same group: summed
        {"test_day": dt.datetime(2026, 3, 3), "test_name": "ndt", "msmt_cnt": 1},  # DateTime ok
        {"test_day": D1, "test_name": "not_a_grouped_test", "msmt_cnt": 99},  # dropped
        {"test_day": dt.date(2026, 2, 1), "test_name": "ndt", "msmt_cnt": 5},  # outside: dropped
    ]
    grid = grids.test_coverage_grid(rows, cq.TEST_GROUPS, days)
    assert len(grid) == 7 * 3
    assert [e["test_group"] for e in grid[::3]] == sorted(cq.TEST_GROUPS)  # group-major
    assert [e["test_day"] for e in grid[:3]] == days
    cells = {(e["test_group"], e["test_day"]): e["count"] for e in grid}
    assert cells[("websites", D1)] == 7
    assert cells[("im", D1)] == 5
    assert cells[("performance", dt.date(2026, 3, 3))] == 1
    assert sum(cells.values()) == 13
    assert set(grid[0]) == {"count", "test_day", "test_group"}


def test_fill_days_fills_gaps_with_zero():
    days = grids.day_range(D1, D1 + dt.timedelta(days=3))
    rows = [{"test_day": D1 + dt.timedelta(days=1), "count": 4},
            {"test_day": D1 + dt.timedelta(days=3), "count": 2}]
    assert grids.fill_days(rows, days) == [
        {"count": 0, "test_day": D1}, {"count": 4, "test_day": days[1]},
        {"count": 0, "test_day": days[2]}, {"count": 2, "test_day": days[3]}]
    assert grids.fill_days([], days[:1]) == [{"count": 0, "test_day": D1}]


def test_im_stats_series():
    days = grids.day_range(D1, D1 + dt.timedelta(days=31))
    out = grids.im_stats_series([{"test_day": D1, "total_count": 3}], days)
    assert len(out) == 32
    assert out[0] == {"anomaly_count": None, "test_day": "2026-03-01T00:00:00+00:00",
                      "total_count": 3}
    assert out[-1] == {"anomaly_count": None, "test_day": "2026-04-01T00:00:00+00:00",
                       "total_count": 0}


def test_im_networks_groups_networks_by_test():
    d1, d2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    rows = [{"test_name": "signal", "probe_asn": 1, "total_count": 5, "last_tested": d1},
            {"test_name": "signal", "probe_asn": 2, "total_count": 1, "last_tested": d2},
            {"test_name": "whatsapp", "probe_asn": 1, "total_count": 2, "last_tested": d1}]
    out = grids.im_networks(rows)
    assert sorted(out) == ["signal", "whatsapp"]
    assert out["signal"] == {
        "anomaly_networks": [], "last_tested": d2,
        "ok_networks": [{"asn": 1, "name": "", "total_count": 5, "last_tested": d1},
                        {"asn": 2, "name": "", "total_count": 1, "last_tested": d2}]}
    assert out["whatsapp"]["last_tested"] == d1
    assert grids.im_networks([]) == {}


def test_vanilla_tor_summary_counts_networks_not_ok():
    d1, d2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)

    def net(asn, success, total, last=d1):
        return {"probe_asn": asn, "failure_count": 0, "success_count": success,
                "total_count": total, "last_tested": last}

    rows = [net(1, 3, 6),           # > 5 measurements, 50% success: not OK
            net(2, 4, 6, d2),       # 66%: OK
            net(3, 0, 5),           # only 5 measurements: not judged
            net(4, 5, 9)]           # 55%: not OK
    out = grids.vanilla_tor_summary(rows)
    assert out["notok_networks"] == 2
    assert out["last_tested"] == d2
    assert len(out["networks"]) == 4
    assert out["networks"][0] == {**rows[0], "test_runtime_avg": None,
                                  "test_runtime_max": None, "test_runtime_min": None}
    assert grids.vanilla_tor_summary([]) == {"networks": [], "notok_networks": 0,
                                             "last_tested": None}


def test_runtime_grid_is_the_full_cartesian_product():
    d1, d2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    rows = [{"test_name": "tor", "probe_cc": "IT", "day": d1, "q": [60.0, 90.0], "cnt": 4},
            {"test_name": "psiphon", "probe_cc": "US", "day": d2, "q": [5.5, 7.0], "cnt": 2}]
    grid = grids.runtime_grid(rows)
    assert len(grid) == 2 * 2 * 2
    assert [(e["test_name"], e["probe_cc"], e["date"]) for e in grid[:4]] == [
        ("psiphon", "IT", d1), ("psiphon", "IT", d2), ("psiphon", "US", d1),
        ("psiphon", "US", d2)]
    cells = {(e["test_name"], e["probe_cc"], e["date"]): e["v"] for e in grid}
    assert cells[("tor", "IT", d1)] == [60.0, 90.0, 4]
    assert cells[("psiphon", "US", d2)] == [5.5, 7.0, 2]
    assert sum(1 for v in cells.values() if v == []) == 6
    assert grids.runtime_grid([]) == []


def test_website_urls_metadata_next_url_is_absolute_and_only_when_more_remain():
    m = grids.website_urls_metadata("https://api.example.org/", "IT", 12874, 10, 0, 25, 10)
    assert m == {"offset": 0, "limit": 10, "current_page": 1, "total_count": 25,
                 "next_url": "https://api.example.org/api/_/website_urls?limit=10&offset=10"
                             "&probe_asn=12874&probe_cc=IT"}
    # The base URL may lack the trailing slash or carry a path prefix.
    m = grids.website_urls_metadata("https://h.example/ooni", "IT", 1, 10, 10, 25, 10)
    assert m["next_url"].startswith("https://h.example/ooni/api/_/website_urls?limit=10"
                                    "&offset=20&")
    assert m["current_page"] == 2
    # A full last page: legacy still offered an (empty) next page.
    assert grids.website_urls_metadata("https://a/", "IT", 1, 10, 10, 20, 10)["next_url"] is None
    assert grids.website_urls_metadata("https://a/", "IT", 1, 10, 20, 25, 5)["next_url"] is None
    assert grids.website_urls_metadata("https://a/", "IT", 1, 10, 5, 25, 10)["current_page"] == 2
