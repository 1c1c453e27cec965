"""GET /api/v1/aggregation and /api/v1/torsf_stats against the real server, real embedded
ClickHouse and the real fixture rows (tests/readdata.py), with Explorer's own query strings
(docs/clients.md Explorer §1c). Expected numbers were computed once with hand-written SQL on the
fixture, independently of the route's query builder.

Fixture facts used below: 2024-01-01 holds 999 rows all in its first hour, 2024-01-31 one row
(IT), 2021-07-08/09 77 rows over 16 hours; the recent copy repeats 2024-01-01 on RECENT_DAY.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Backend
from tests.readcalls import get_raw as get
from tests.readdata import RECENT_DAY, load_fixture_rows

AGG = "/api/v1/aggregation?"
MEASURES = ["anomaly_count", "confirmed_count", "failure_count", "ok_count", "measurement_count"]


def agg(backend: Backend, query: str) -> dict:
    status, headers, body = get(backend, AGG + query)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["v"] == 0
    assert set(doc["db_stats"]) == {"row_count", "bytes", "total_row_count", "elapsed_seconds"}
    return doc


def counts(row: dict) -> list[int]:
    """anomaly, confirmed, failure, ok, measurement."""
    return [row[m] for m in MEASURES]


def error(backend: Backend, query: str, status: int = 400) -> str:
    got, headers, body = get(backend, AGG + query)
    assert got == status, body
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["v"] == 0
    return doc["error"]


# ---- Explorer's calls (docs/clients.md Explorer §1c) ----

def test_country_calendar_is_one_row_per_day_with_day_keys(read_backend):
    doc = agg(read_backend, "probe_cc=IT&since=2024-01-01&until=2025-01-01"
                            "&axis_x=measurement_start_day")
    assert doc["dimension_count"] == 1
    assert [(r["measurement_start_day"], r["measurement_count"]) for r in doc["result"]] == [
        ("2024-01-01", 30), ("2024-01-31", 1)]
    assert counts(doc["result"][0]) == [1, 0, 14, 15, 30]


def test_country_confirmed_blocked_categories(read_backend):
    doc = agg(read_backend, "probe_cc=IR&since=2024-01-01&until=2024-02-01"
                            "&test_name=web_connectivity&axis_x=category_code")
    rows = doc["result"]
    assert [r["category_code"] for r in rows] == [
        "COMM", "CTRL", "ECON", "GAME", "GRP", "HACK", "HOST", "MISC", "MMED", "REL", "XED"]
    confirmed = {r["category_code"]: r["confirmed_count"] for r in rows if r["confirmed_count"]}
    assert confirmed == {"COMM": 1, "ECON": 2, "GAME": 1, "GRP": 1, "HACK": 2, "HOST": 1,
                         "MMED": 2, "XED": 1}
    # Every IR web_connectivity measurement of the month has a listed URL (ZZ or ir list).
    assert sum(r["measurement_count"] for r in rows) == 30


def test_country_websites_grid(read_backend):
    doc = agg(read_backend, "axis_y=domain&axis_x=measurement_start_day&probe_cc=US"
                            "&since=2023-12-22&until=2024-01-22&test_name=web_connectivity"
                            "&time_grain=day")
    rows = doc["result"]
    assert doc["dimension_count"] == 2
    assert len(rows) == 77
    assert sum(r["measurement_count"] for r in rows) == 86
    assert sum(r["anomaly_count"] for r in rows) == 2
    assert {r["measurement_start_day"] for r in rows} == {"2024-01-01"}
    assert [r["domain"] for r in rows] == sorted(r["domain"] for r in rows)
    twitter = next(r for r in rows if r["domain"] == "twitter.com")
    assert counts(twitter) == [0, 0, 0, 2, 2]
    assert set(twitter) == {"measurement_start_day", "domain", *MEASURES}


def test_country_apps_grids_take_comma_separated_test_names(read_backend):
    window = "probe_cc=US&since=2023-12-22&until=2024-01-22&time_grain=day"
    im = agg(read_backend, "axis_y=test_name&axis_x=measurement_start_day&" + window
                           + "&test_name=signal,telegram,whatsapp,facebook_messenger")
    assert [(r["test_name"], counts(r)) for r in im["result"]] == [
        ("facebook_messenger", [0, 0, 0, 6, 6]), ("signal", [1, 0, 5, 0, 6]),
        ("telegram", [0, 0, 0, 6, 6]), ("whatsapp", [0, 0, 0, 6, 6])]
    circ = agg(read_backend, "axis_y=test_name&axis_x=measurement_start_day&" + window
                             + "&test_name=psiphon,tor,torsf")
    assert [(r["test_name"], counts(r)) for r in circ["result"]] == [
        ("psiphon", [0, 0, 0, 5, 5]), ("tor", [1, 0, 0, 3, 4]), ("torsf", [1, 0, 0, 0, 1])]


def test_asn_page_all_time_split_by_country_needs_no_dates(read_backend):
    doc = agg(read_backend, "probe_asn=AS13335&axis_x=probe_cc")
    assert doc["dimension_count"] == 1
    assert [(r["probe_cc"], counts(r)) for r in doc["result"]] == [
        ("JM", [2, 0, 0, 8, 10]), ("US", [0, 0, 2, 14, 16])]
    # All time: 2021, 2024 and the recent copy.
    it = agg(read_backend, "probe_asn=AS3269&axis_x=probe_cc")["result"]
    assert [(r["probe_cc"], r["measurement_count"]) for r in it] == [("IT", 55)]


def test_asn_twelve_year_calendar(read_backend):
    today = dt.datetime.now(dt.UTC).date()
    since = today - dt.timedelta(days=12 * 365 + 3)  # dayjs().subtract(12, 'year')
    until = today + dt.timedelta(days=1)
    doc = agg(read_backend, f"probe_asn=AS3269&since={since}&until={until}"
                            "&axis_x=measurement_start_day")
    assert [(r["measurement_start_day"], r["measurement_count"]) for r in doc["result"]] == [
        ("2021-07-09", 3), ("2024-01-01", 26), (RECENT_DAY.isoformat(), 26)]


def test_domain_page_by_country_with_an_empty_probe_cc(read_backend):
    doc = agg(read_backend, "axis_x=measurement_start_day&axis_y=probe_cc"
                            "&test_name=web_connectivity&domain=twitter.com&since=2024-01-01"
                            "&until=2024-02-01&probe_cc=&time_grain=day")
    rows = doc["result"]
    assert [(r["probe_cc"], r["measurement_count"]) for r in rows] == [
        ("AE", 5), ("BR", 2), ("CO", 1), ("DE", 1), ("HU", 1), ("ID", 1), ("IR", 1), ("RO", 1),
        ("US", 2)]
    # The blocking-countries list reads these per row.
    ir = rows[6]
    assert (ir["confirmed_count"], ir["anomaly_count"], ir["ok_count"]) == (1, 0, 0)


def test_thematic_page_chart_for_three_countries(read_backend):
    doc = agg(read_backend, "axis_x=measurement_start_day&axis_y=probe_cc&since=2024-01-01"
                            "&until=2024-02-01&test_name=whatsapp&probe_cc=CN,IR,RU"
                            "&time_grain=day")
    assert [(r["measurement_start_day"], r["probe_cc"], counts(r)) for r in doc["result"]] == [
        ("2024-01-01", "IR", [1, 0, 0, 0, 1]), ("2024-01-01", "RU", [0, 0, 0, 2, 2])]
    doc = agg(read_backend, "axis_x=measurement_start_day&axis_y=probe_cc&since=2024-01-01"
                            "&until=2024-02-01&test_name=web_connectivity&domain=twitter.com"
                            "&probe_cc=CN,IR,RU&time_grain=day")
    assert [(r["probe_cc"], counts(r)) for r in doc["result"]] == [("IR", [0, 1, 0, 0, 1])]


def test_mat_form_with_passthrough_data_param_and_bare_asn(read_backend):
    doc = agg(read_backend, "test_name=web_connectivity&axis_x=measurement_start_day"
                            "&axis_y=category_code&since=2023-12-01&until=2024-02-01"
                            "&time_grain=week&probe_cc=IR&probe_asn=31549&data=anomalies")
    rows = doc["result"]
    assert doc["dimension_count"] == 2
    # 2024-01-01 is a Monday: its week starts on Sunday 2023-12-31.
    assert {r["measurement_start_day"] for r in rows} == {"2023-12-31"}
    assert [(r["category_code"], r["confirmed_count"]) for r in rows] == [
        ("COMM", 1), ("CTRL", 0), ("ECON", 2), ("GAME", 1), ("GRP", 1), ("HACK", 2),
        ("MISC", 0), ("MMED", 2)]


def test_mat_country_by_network_with_a_domain_list(read_backend):
    doc = agg(read_backend, "test_name=web_connectivity&axis_x=probe_cc&axis_y=probe_asn"
                            "&since=2023-12-22&until=2024-01-23&time_grain=day"
                            "&domain=twitter.com,www.instagram.com&data=anomalies")
    rows = doc["result"]
    assert len(rows) == 11
    assert rows[0] == {"probe_cc": "AE", "probe_asn": 5384, "anomaly_count": 0,
                       "confirmed_count": 0, "failure_count": 0, "ok_count": 5,
                       "measurement_count": 5}
    assert [(r["probe_cc"], r["probe_asn"]) for r in rows[1:3]] == [("BR", 7738), ("BR", 28573)]
    assert sum(r["measurement_count"] for r in rows) == 25


def test_mat_csv_link(read_backend):
    status, headers, body = get(read_backend, AGG + "axis_y=test_name"
                                "&axis_x=measurement_start_day&probe_cc=US&since=2023-12-22"
                                "&until=2024-01-22&time_grain=day&test_name=psiphon,tor,torsf"
                                "&format=CSV")
    assert status == 200
    assert headers["Content-Type"] == "text/csv"  # exactly, as legacy (§2.8)
    assert "Content-Disposition" not in headers
    assert body.decode().split("\r\n") == [
        "anomaly_count,confirmed_count,failure_count,measurement_count,measurement_start_day,"
        "ok_count,test_name",
        "0,0,0,5,2024-01-01,5,psiphon",
        "1,0,0,4,2024-01-01,3,tor",
        "1,0,0,1,2024-01-01,0,torsf",
        ""]


# ---- shapes, measures and filters ----

def test_no_axis_result_is_one_object(read_backend):
    doc = agg(read_backend, "probe_cc=IT&since=2024-01-01&until=2024-02-01")
    assert doc["dimension_count"] == 0
    assert doc["result"] == {"anomaly_count": 1, "confirmed_count": 0, "failure_count": 14,
                             "ok_count": 16, "measurement_count": 31}
    assert doc["db_stats"]["row_count"] > 0 and doc["db_stats"]["bytes"] > 0


def test_no_matching_rows_give_zeros_or_an_empty_list(read_backend):
    doc = agg(read_backend, "test_name=no_such_test")
    assert doc["result"] == dict.fromkeys(MEASURES, 0)
    assert agg(read_backend, "test_name=no_such_test&axis_x=probe_cc")["result"] == []


def test_since_is_inclusive_and_until_exclusive(read_backend):
    # The IT row of 2024-01-31 is at 23:xx; the window [01-31, 02-01) holds it ...
    assert agg(read_backend, "probe_cc=IT&since=2024-01-31&until=2024-02-01"
               )["result"]["measurement_count"] == 1
    # ... [01-01, 01-31) does not.
    assert agg(read_backend, "probe_cc=IT&since=2024-01-01&until=2024-01-31"
               )["result"]["measurement_count"] == 30


def test_category_code_filter_counts_a_url_on_two_applicable_lists_once(read_backend):
    # http://www.owl.ru/ (HUMR) is on both the ru and ua lists: legacy's raw join counted the
    # RU measurement of it twice (14).
    doc = agg(read_backend, "probe_cc=RU,UA&category_code=HUMR&since=2024-01-01"
                            "&until=2024-01-02")
    assert counts(doc["result"]) == [4, 0, 0, 9, 13]


def test_input_filter(read_backend):
    doc = agg(read_backend, "input=http://www.owl.ru/&since=2024-01-01&until=2024-01-02")
    assert counts(doc["result"]) == [0, 0, 0, 1, 1]


def test_unknown_parameters_undefined_and_empty_values_are_ignored(read_backend):
    doc = agg(read_backend, "probe_cc=IT&since=2024-01-01&until=2024-02-01&data=anomalies"
                            "&webview=1&probe_asn=&domain=&input=undefined&category_code=null")
    assert doc["result"]["measurement_count"] == 31


def test_blocking_type_axis_reads_the_scores(read_backend):
    doc = agg(read_backend, "axis_x=blocking_type&since=2021-07-08&until=2021-07-10")
    assert [(r["blocking_type"], r["measurement_count"]) for r in doc["result"]] == [
        ("", 66), ("dns", 3), ("http-diff", 6), ("http-failure", 1), ("tcp_ip", 1)]


# ---- time grains and date keys (Explorer string-matches them) ----

def test_hour_keys(read_backend):
    doc = agg(read_backend, "since=2021-07-08&until=2021-07-10&axis_x=measurement_start_day"
                            "&time_grain=hour")
    rows = doc["result"]
    assert len(rows) == 16
    assert [r["measurement_start_day"] for r in rows[:3]] == [
        "2021-07-08T06:00:00Z", "2021-07-09T00:00:00Z", "2021-07-09T02:00:00Z"]
    assert counts(rows[1]) == [9, 0, 2, 9, 20]
    assert sum(r["measurement_count"] for r in rows) == 77


def test_day_week_month_and_year_keys(read_backend):
    base = "probe_cc=IT&axis_x=measurement_start_day"

    def keys(q: str) -> list[tuple[str, int]]:
        return [(r["measurement_start_day"], r["measurement_count"])
                for r in agg(read_backend, f"{base}&{q}")["result"]]

    assert keys("since=2024-01-01&until=2024-01-31&time_grain=day") == [("2024-01-01", 30)]
    assert keys("since=2023-12-01&until=2024-02-01&time_grain=week") == [
        ("2023-12-31", 30), ("2024-01-28", 1)]  # Sundays
    assert keys("since=2023-12-01&until=2024-02-01&time_grain=month") == [("2024-01-01", 31)]
    # year: legacy accepted it and failed (docs/api.md §4 bug 3).
    assert keys("since=2021-01-01&until=2025-01-01&time_grain=year") == [
        ("2021-01-01", 26), ("2024-01-01", 31)]


def test_auto_is_day_even_for_a_short_range(read_backend):
    # Explorer's country calendar in the first days of a year: since=Jan 1, no time_grain,
    # day keys expected (legacy's auto gave hour keys there).
    doc = agg(read_backend, "probe_cc=IT&since=2024-01-01&until=2024-01-03"
                            "&axis_x=measurement_start_day")
    assert [(r["measurement_start_day"], r["measurement_count"]) for r in doc["result"]] == \
        [("2024-01-01", 30)]


def test_hour_keys_in_csv_match_json(read_backend):
    status, _, body = get(read_backend, AGG + "since=2021-07-08&until=2021-07-10"
                                              "&axis_x=measurement_start_day&time_grain=hour"
                                              "&format=csv")
    assert status == 200
    lines = body.decode().split("\r\n")
    assert lines[0] == ("anomaly_count,confirmed_count,failure_count,measurement_count,"
                        "measurement_start_day,ok_count")
    assert lines[1] == "0,0,0,7,2021-07-08T06:00:00Z,7"
    assert len(lines) == 18  # header, 16 hours, trailing empty string


# ---- CSV and downloads ----

def test_csv_without_axes(read_backend):
    status, headers, body = get(read_backend, AGG + "probe_cc=IT&since=2024-01-01"
                                                    "&until=2024-02-01&format=CSV")
    assert status == 200
    assert headers["Content-Type"] == "text/csv"  # exactly, as legacy (§2.8)
    assert body == (b"anomaly_count,confirmed_count,failure_count,measurement_count,ok_count\r\n"
                    b"1,0,14,31,16\r\n")


def test_empty_csv_is_the_header(read_backend):
    status, _, body = get(read_backend, AGG + "test_name=no_such_test&axis_x=probe_cc"
                                              "&axis_y=probe_asn&format=CSV")
    assert status == 200
    assert body == (b"anomaly_count,confirmed_count,failure_count,measurement_count,ok_count,"
                    b"probe_asn,probe_cc\r\n")


def test_downloads_have_attachment_filenames(read_backend):
    q = "probe_cc=IT&since=2024-01-01&until=2024-02-01&download=true"
    _, headers, _ = get(read_backend, AGG + q + "&format=CSV")
    assert headers["Content-Disposition"] == "attachment; filename=ooni-aggregate-data.csv"
    _, headers, body = get(read_backend, AGG + q)
    assert headers["Content-Disposition"] == "attachment; filename=ooni-aggregate-data.json"
    assert json.loads(body)["result"]["measurement_count"] == 31


# ---- caching ----

def test_answers_are_cached_briefly_in_the_process_and_by_nginx(read_backend):
    q = "probe_cc=BR&since=2024-01-01&until=2024-02-01&axis_x=test_name"
    s1, h1, b1 = get(read_backend, AGG + q)
    s2, h2, b2 = get(read_backend, AGG + q)
    assert s1 == s2 == 200
    assert h1["Cache-Control"] == h2["Cache-Control"] == "max-age=300"
    # The second answer is the first one, db_stats (elapsed time) included.
    assert b1 == b2


def test_errors_are_not_cacheable(read_backend):
    _, headers, _ = get(read_backend, AGG + "axis_x=nope")
    assert headers["Cache-Control"] == "no-cache"


# ---- validation: 400 JSON {error, v: 0}, never 500 (legacy: some 200, docs/api.md §4 bug 2) ----

def test_axis_x_and_y_must_differ(read_backend):
    assert error(read_backend, "axis_x=probe_cc&axis_y=probe_cc") == (
        "Axis X and Y cannot be the same")


def test_time_grain_must_suit_the_range(read_backend):
    assert error(read_backend, "since=2020-07-09&until=2022-07-11"
                               "&axis_x=measurement_start_day&time_grain=hour") == (
        "Choose time_grain between day, week, month, year, auto for the given time range")
    assert error(read_backend, "since=2022-07-09&until=2022-07-11"
                               "&axis_x=measurement_start_day&time_grain=year") == (
        "Choose time_grain between hour, day, auto for the given time range")


@pytest.mark.parametrize("query", [
    "axis_x=measurement_start_day",                                # no dates
    "axis_x=measurement_start_day&since=2024-01-01",               # no until
    "axis_y=measurement_start_day&axis_x=probe_cc&until=2024-01-01",
])
def test_the_time_axis_needs_since_and_until(read_backend, query):
    assert "since and until" in error(read_backend, query)


@pytest.mark.parametrize("query", [
    "axis_x=nope",
    "axis_x=measurement_start_day&since=2022-07-09&until=2021-07-11",
    "since=2024-01-02&until=2024-01-01",
    "time_grain=minute",
    "format=XML",
    "download=maybe",
    "test_name=BOGUS",
    "probe_cc=ITA",
    "probe_asn=ASX",
    "category_code=N3WS",
    "ooni_run_link_id=abc",
    "domain=foo..org",
    "domain=-bad-.org",
    "domain=1.2.3",
    "domain=x.org:99999",
    "domain=<script>",
    "input=~!^{}",
    "since=yesterday",
])
def test_bad_parameters_are_400_json(read_backend, query):
    assert error(read_backend, query)


# ---- torsf_stats ----

def test_torsf_stats_counts_per_day_and_country(read_backend):
    status, headers, body = get(read_backend, "/api/v1/torsf_stats?since=2023-12-31"
                                              "&until=2024-01-02")
    assert status == 200
    # The window is more than 72 hours old: cacheable for a day.
    assert headers["Cache-Control"] == "max-age=86400"
    doc = json.loads(body)
    assert doc["v"] == 0
    assert doc["result"] == [
        {"measurement_start_day": "2024-01-01", "probe_cc": cc, "anomaly_count": a,
         "confirmed_count": 0, "failure_count": 0, "measurement_count": 1,
         "anomaly_rate": float(a)}
        for cc, a in (("BR", 1), ("GB", 0), ("MX", 1), ("US", 1))]


def test_torsf_stats_since_is_exclusive_until_inclusive(read_backend):
    # US at 00:00:01, BR at 00:00:05, GB at 00:00:13 on 2024-01-01.
    _, _, body = get(read_backend, "/api/v1/torsf_stats?since=2024-01-01T00:00:01Z"
                                   "&until=2024-01-01T00:00:13Z")
    assert [r["probe_cc"] for r in json.loads(body)["result"]] == ["BR", "GB"]


def test_torsf_stats_recent_window_is_not_cached_and_filters_country(read_backend):
    until = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    status, headers, body = get(read_backend, f"/api/v1/torsf_stats?probe_cc=MX&until={until}")
    assert status == 200
    assert "max-age=86400" not in headers.get("Cache-Control", "")
    assert [(r["measurement_start_day"], r["measurement_count"], r["anomaly_rate"])
            for r in json.loads(body)["result"]] == [("2024-01-01", 1, 1.0),
                                                      (RECENT_DAY.isoformat(), 1, 1.0)]


def test_torsf_stats_bad_country_is_400(read_backend):
    status, _, body = get(read_backend, "/api/v1/torsf_stats?probe_cc=ITA")
    assert status == 400
    assert json.loads(body)["error"]


# ---- the cost cap, on a second backend with a tiny rows limit ----

@pytest.fixture(scope="module")
def capped_backend(tmp_path_factory, geoip_files) -> Iterator[Backend]:
    cc, asn = geoip_files
    b = Backend(tmp_path_factory.mktemp("aggregation_capped"), {
        "geoip": {"cc_db": str(cc), "asn_db": str(asn)},
        "fastpath": {"enabled": False},
        "quotas": {"enabled": False},
        "aggregation": {"max_rows_to_read": 10, "cache_seconds": 0},
    })
    # Like read_backend: rows first (chdb opened directly), then the API.
    subprocess.run([sys.executable, "-m", "oonibackend", "db", "migrate", "--config",
                    str(b.config), "--data-dir", str(b.data_dir)],
                   check=True, capture_output=True, timeout=300)
    load_fixture_rows(b.config, b.data_dir, recent=False)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_a_query_over_the_rows_cap_is_504_json(capped_backend):
    message = error(capped_backend, "probe_asn=AS3269&axis_x=probe_cc", status=504)
    assert message.startswith("Query too expensive")
    assert "10 rows" in message


def test_torsf_stats_has_the_same_cap(capped_backend):
    status, _, body = get(capped_backend, "/api/v1/torsf_stats")
    assert status == 504
    assert json.loads(body)["error"].startswith("Query too expensive")


def test_a_window_the_index_excludes_reads_nothing_and_passes_the_cap(capped_backend):
    # The window is the sort key: no granule of 2030 exists, so no row is read.
    status, headers, body = get(capped_backend, AGG + "since=2030-01-01&until=2030-01-02")
    assert status == 200
    assert json.loads(body)["result"] == dict.fromkeys(MEASURES, 0)
    # cache_seconds = 0: neither the process nor Nginx keeps answers.
    assert headers["Cache-Control"] == "max-age=0, no-cache"
