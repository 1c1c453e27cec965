"""Explorer's overview statistics: SQL builders, month windows and the shaping of rows into
the answers Explorer reads (no database needed; the routes' integration tests run the SQL)."""

from __future__ import annotations

import datetime as dt

import pytest

from oonibackend.errors import APIError
from oonibackend.queries import overview as oq
from oonibackend.routes import explorer_overview as routes
from oonibackend.routes.params import Query
from oonibackend.storage.sql import render

TODAY = dt.date(2026, 11, 22)


# -- months ---------------------------------------------------------------------------------

@pytest.mark.parametrize("day, n, expected", [
    (dt.date(2026, 11, 22), 0, dt.date(2026, 11, 1)),
    (dt.date(2026, 11, 22), 1, dt.date(2026, 12, 1)),
    (dt.date(2026, 12, 31), 1, dt.date(2027, 1, 1)),
    (dt.date(2026, 1, 15), -1, dt.date(2025, 12, 1)),
    (dt.date(2026, 11, 22), -24, dt.date(2024, 11, 1)),
    (dt.date(2024, 3, 31), -1, dt.date(2024, 2, 1)),
])
def test_add_months_lands_on_the_first_of_the_month(day, n, expected):
    assert oq.add_months(day, n) == expected


def test_month_window_is_24_months_and_the_current_one_oldest_first():
    w = oq.month_window(TODAY)
    assert len(w) == 25
    assert w[0] == dt.date(2024, 11, 1) and w[-1] == dt.date(2026, 11, 1)
    assert w == sorted(w) and len(set(w)) == 25
    assert all(d.day == 1 for d in w)


def test_month_window_on_the_first_and_last_day_of_a_year():
    assert oq.month_window(dt.date(2027, 1, 1))[-2:] == [dt.date(2026, 12, 1),
                                                          dt.date(2027, 1, 1)]
    assert oq.month_window(dt.date(2026, 12, 31))[0] == dt.date(2024, 12, 1)


def test_month_key_is_the_legacy_date_format():
    assert oq.month_key(dt.date(2025, 7, 1)) == "2025-07-01T00:00:00+00:00"


def test_month_series_zero_fills_every_month_of_the_window():
    rows = [{"month": dt.date(2025, 7, 1), "networks": 2, "countries": 1, "measurements": 3},
            {"month": dt.date(2026, 11, 1), "networks": 96, "countries": 42,
             "measurements": 999}]
    out = oq.month_series(rows, TODAY)
    assert set(out) == {"networks_by_month", "countries_by_month", "measurements_by_month"}
    m = out["measurements_by_month"]
    assert len(m) == 25
    assert m[0] == {"date": "2024-11-01T00:00:00+00:00", "value": 0}
    assert m[-1] == {"date": "2026-11-01T00:00:00+00:00", "value": 999}
    assert {"date": "2025-07-01T00:00:00+00:00", "value": 3} in m
    assert sum(i["value"] for i in m) == 1002
    assert out["networks_by_month"][-1]["value"] == 96
    assert out["countries_by_month"][-1]["value"] == 42


def test_month_series_ignores_rows_outside_the_window_and_keeps_the_current_month():
    rows = [{"month": dt.date(2021, 7, 1), "networks": 1, "countries": 1, "measurements": 1}]
    out = oq.month_series(rows, TODAY)
    assert all(i["value"] == 0 for s in out.values() for i in s)
    # With no data yet this month, the last item is still the current month.
    assert out["networks_by_month"][-1]["date"].startswith("2026-11-01")


# -- SQL ------------------------------------------------------------------------------------

def test_monthly_counts_covers_the_window_up_to_next_month():
    sql, params = oq.monthly_counts(TODAY, rollups=False)
    assert params == {"since": dt.datetime(2024, 11, 1), "until": dt.datetime(2026, 12, 1)}
    rendered = render(sql, params)
    assert "measurement_start_time >= toDateTime('2024-11-01 00:00:00')" in rendered
    assert "measurement_start_time < toDateTime('2026-12-01 00:00:00')" in rendered
    assert "GROUP BY month" in sql and "uniqExact(probe_asn)" in sql
    sql, params = oq.monthly_counts(TODAY)  # from the rollup: the same whole months
    assert params == {"since": dt.date(2024, 11, 1), "until": dt.date(2026, 12, 1)}
    assert "FROM fastpath_daily" in sql and "day >= %(since)s AND day < %(until)s" in sql


def test_country_counts_filters_clock_errors_for_the_overview_only():
    sql, params = oq.country_counts()
    assert params == {"first_valid": dt.datetime(2012, 12, 1)}
    assert "count() AS measurement_count" in sql  # all-time, for /countries
    assert "countIf(measurement_start_time > %(first_valid)s) AS valid_count" in sql


@pytest.mark.parametrize("build", [oq.global_counts, oq.country_counts, oq.network_counts,
                                   oq.domain_counts])
def test_full_table_statistics_render(build):
    sql, params = build()
    assert "%(" not in render(sql, params)


@pytest.mark.parametrize("build, table", [(oq.global_counts, "fastpath_daily"),
                                          (oq.network_counts, "fastpath_daily"),
                                          (oq.domain_counts, "fastpath_daily_domain")])
def test_full_table_statistics_read_the_rollups(build, table):
    assert f"FROM {table}" in build()[0] and "sum(n_measurement)" in build()[0]
    assert "fastpath_daily" not in build(rollups=False)[0]


def test_domain_metadata_query_looks_up_both_www_variants():
    sql, params = oq.domain_metadata("twitter.com")
    assert params == {"domain": "twitter.com", "alt": "www.twitter.com"}
    assert "ORDER BY cc != 'ZZ', length(url)" in sql
    sql, params = oq.domain_metadata("www.facebook.com")
    assert params == {"domain": "www.facebook.com", "alt": "facebook.com"}


def test_domain_metadata_query_quotes_hostile_input():
    sql, params = oq.domain_metadata("a'); DROP TABLE citizenlab; --")
    assert "'a\\'); DROP TABLE citizenlab; --'" in render(sql, params)


def test_asn_org_name_takes_the_newest():
    sql, params = oq.asn_org_name(3269)
    assert params == {"asn": 3269}
    assert "ORDER BY changed DESC" in sql and "LIMIT 1" in sql


# -- shaping --------------------------------------------------------------------------------

def test_countries_list_skips_non_countries_and_sorts_by_code():
    rows = [{"probe_cc": "US", "measurement_count": 5}, {"probe_cc": "ZZ", "measurement_count": 9},
            {"probe_cc": "CA", "measurement_count": 3}, {"probe_cc": "it", "measurement_count": 1},
            {"probe_cc": "XX", "measurement_count": 2}, {"probe_cc": "", "measurement_count": 1}]
    assert oq.countries_list(rows) == [
        {"alpha_2": "CA", "name": "Canada", "count": 3},
        {"alpha_2": "US", "name": "United States", "count": 5},
    ]


def test_country_overview_of_a_country_with_data():
    row = {"valid_count": 87, "first_day": dt.date(2021, 7, 9), "network_count": 4}
    assert oq.country_overview(row, TODAY) == {"first_bucket_date": dt.date(2021, 7, 9),
                                               "measurement_count": 87, "network_count": 4}


@pytest.mark.parametrize("row", [
    None,
    # Only clock errors (before 2012-12-01): minIf gave ClickHouse's default date.
    {"valid_count": 0, "first_day": dt.date(1970, 1, 1), "network_count": 0},
])
def test_country_overview_without_data_has_today_and_zeros(row):
    assert oq.country_overview(row, TODAY) == {"first_bucket_date": TODAY,
                                               "measurement_count": 0, "network_count": 0}


def test_networks_list_never_has_a_null_org_name():
    rows = [{"probe_asn": 3269, "cnt": 5, "org_name": "Telecom Italia"},
            {"probe_asn": 1, "cnt": 2, "org_name": None}]
    assert oq.networks_list(rows) == [
        {"probe_asn": 3269, "cnt": 5, "org_name": "Telecom Italia"},
        {"probe_asn": 1, "cnt": 2, "org_name": ""},
    ]


def test_domains_list_never_has_a_null_category_or_count():
    rows = [{"domain_name": "a.org", "category_code": "", "measurement_count": None},
            {"domain_name": "b.org", "category_code": "NEWS", "measurement_count": 7}]
    assert oq.domains_list(rows) == [
        {"domain_name": "a.org", "category_code": "MISC", "measurement_count": 0},
        {"domain_name": "b.org", "category_code": "NEWS", "measurement_count": 7},
    ]


@pytest.mark.parametrize("domain, row, expected", [
    ("facebook.com", {"domain": "www.facebook.com", "category_code": "GRP"},
     {"category_code": "GRP", "canonical_domain": "www.facebook.com"}),
    ("www.unknown.org", None, {"category_code": "MISC", "canonical_domain": "unknown.org"}),
    ("unknown.org", None, {"category_code": "MISC", "canonical_domain": "unknown.org"}),
    ("x.org", {"domain": "x.org", "category_code": ""},
     {"category_code": "MISC", "canonical_domain": "x.org"}),
])
def test_domain_metadata_answer(domain, row, expected):
    assert oq.domain_metadata_answer(domain, row) == expected


def test_www_variant():
    assert oq.www_variant("www.a.org") == "a.org"
    assert oq.www_variant("a.org") == "www.a.org"


# -- cache periods --------------------------------------------------------------------------

def test_periods_are_clock_hours_anchored_on_their_utc_day():
    t = dt.datetime(2026, 11, 22, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    p = routes.period_of(t)
    assert routes.period_of(t + 1) == p + 1  # midnight starts a new period ...
    assert routes.period_day(p) == dt.date(2026, 11, 22)
    assert routes.period_day(p + 1) == dt.date(2026, 11, 23)  # ... on the new day


def test_the_cache_period_is_shorter_than_every_max_age():
    assert routes.PERIOD <= min(routes.ONE_DAY, routes.TWO_HOURS, routes.ONE_HOUR)
    assert routes.WARM_LEAD < routes.PERIOD and routes.WARM_CHECK < routes.WARM_LEAD


def test_test_names_are_24_unique_ids():
    ids = [i for i, _ in routes.TEST_NAMES]
    assert len(ids) == 24 and len(set(ids)) == 24
    assert ids == sorted(ids)


# -- the domain parameter (routes.params.Query.domain) --------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("twitter.com", "twitter.com"), ("WWW.Example.ORG", "www.example.org"),
    ("8.8.4.4", "8.8.4.4"), ("8.8.8.8:853", "8.8.8.8:853"),
    ("[2a00:5a60::ad2:0ff]:853", "[2a00:5a60::ad2:0ff]:853"),
    ("stun.voip.blackberry.com:3478", "stun.voip.blackberry.com:3478"),
    ("", None), ("undefined", None),
])
def test_domain_param_accepts_hosts_and_addresses(value, expected):
    assert Query({"domain": value}).domain() == expected


@pytest.mark.parametrize("value", ["a'b.org", "a b.org", "twitter.com/path", "http://x.org",
                                   "x.org;", "1.2.3", "x.org:99999"])
def test_domain_param_rejects_other_characters(value):
    with pytest.raises(APIError) as e:
        Query({"domain": value}).domain()
    assert e.value.status == 400
