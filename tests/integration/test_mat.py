"""The MAT over observations and analysis (docs/current_services.md §6) against the real
server, the real embedded ClickHouse and the rows of tests/data/fixtures/mat_rows.sql.

The fixture (2024-11-01 .. 2024-11-09, one set of measurements a day, plus a few extras):
* IT AS30722 www.facebook.com at 10:15, two observations (IPv4, IPv6), all fine;
* IR AS197207 twitter.com at 06:30, the ISP's resolver answers NXDOMAIN (no address);
* RU AS12389 twitter.com at 18:45 on 104.244.42.1: TCP timeout on odd days, TLS reset on
  even days;
* Nov 3 06:40 IR www.instagram.com, Google's resolver (AS15169) fails `unknown_failure: ...`;
* Nov 5 12:05 IT ncac.org: HTTPS reset (with an address) plus an HTTP-only observation;
* Nov 7 21:10 RU urlgetter www.bbc.com (OONI Run link 10015), fine;
* IT facebook exactly at 2024-11-01 00:00 (in the window) and 2024-11-10 00:00 (out);
* RU twitter.com on 2024-10-15 (OLD_UID), for measurement_uid lookups;
* obs_web_ctrl rows of 2024-11-05 for twitter.com, www.facebook.com and ncac.org.
Expected numbers were worked out by hand from that list.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import FIXTURES, Backend
from tests.readdata import CITIZENLAB_SQL, batched, db_exec

MAT_SQL = FIXTURES / "mat_rows.sql"
OLD_UID = "20241015080003.123456_RU_webconnectivity_e5a31751aaa97a66"
OBS = "/api/v1/aggregation/observations?"
CTRL = "/api/v1/aggregation/observations/ctrl?"
ANALYSIS = "/api/v1/aggregation/analysis?"
WINDOW = "since=2024-11-01&until=2024-11-10"
ITEM_KEYS = {"count", "measurement_start_day", "loni", "domain", "probe_cc", "probe_asn",
             "test_name", "input", "measurement_uid"}
LONI_KEYS = {"dns_blocked", "dns_down", "dns_ok", "tcp_blocked", "tcp_down", "tcp_ok",
             "tls_blocked", "tls_down", "tls_ok", "likely_blocked_protocols",
             "blocked_max_outcome", "blocked_max", "dns_blocked_outcome",
             "tcp_blocked_outcome", "tls_blocked_outcome"}


@pytest.fixture(scope="module")
def mat_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    data = tmp_path_factory.mktemp("mat_backend")
    b = Backend(data, {"fastpath": {"enabled": False}, "quotas": {"enabled": False}})
    subprocess.run([sys.executable, "-m", "oonibackend", "db", "migrate", "--config",
                    str(b.config), "--data-dir", str(b.data_dir)],
                   check=True, capture_output=True, timeout=300)
    rows = data / "mat_rows.sql"
    rows.write_text(batched(CITIZENLAB_SQL) + batched(MAT_SQL), encoding="utf-8")
    db_exec(b.config, b.data_dir, rows)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def get(backend: Backend, path: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(backend.url + path, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def results(backend: Backend, path: str) -> list[dict[str, Any]]:
    status, headers, doc = get(backend, path)
    assert status == 200, doc
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"].startswith("max-age=")
    return doc["results"]


def by_failure(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["failure"]] = out.get(r["failure"], 0) + r["observation_count"]
    return out


# ---- /api/v1/aggregation/observations ----

def test_default_grouping_is_the_failure_label(mat_backend):
    rows = results(mat_backend, OBS + WINDOW)
    # Largest first; the HTTP-only observation (no DNS answer, no address) is left out.
    assert rows == [
        {"failure": "none", "observation_count": 20},
        {"failure": "dns_isp.dns_nxdomain_error", "observation_count": 9},
        {"failure": "tcp.generic_timeout_error", "observation_count": 5},
        {"failure": "tls.connection_reset", "observation_count": 4},
        {"failure": "dns_other.unknown_failure", "observation_count": 1},
        {"failure": "https.connection_reset", "observation_count": 1},
    ]


@pytest.mark.parametrize("grain,n", [("hour", 30), ("day", 9), ("week", 2), ("month", 1),
                                     ("year", 1), ("auto", 9)])
def test_observation_time_grains(mat_backend, grain, n):
    rows = results(mat_backend, OBS + f"group_by=timestamp&{WINDOW}&time_grain={grain}")
    assert len(rows) == n
    assert sum(r["observation_count"] for r in rows) == 41


def test_timestamps_are_utc_with_z_and_weeks_start_on_sunday(mat_backend):
    rows = results(mat_backend, OBS + f"group_by=timestamp&{WINDOW}&time_grain=week")
    assert rows == [{"timestamp": "2024-11-03T00:00:00Z", "observation_count": 32},
                    {"timestamp": "2024-10-27T00:00:00Z", "observation_count": 9}]
    hours = results(mat_backend, OBS + "group_by=timestamp&since=2024-11-05&until=2024-11-06"
                                       "&time_grain=hour")
    assert sorted(r["timestamp"] for r in hours) == [
        "2024-11-05T06:00:00Z", "2024-11-05T10:00:00Z", "2024-11-05T12:00:00Z",
        "2024-11-05T18:00:00Z"]


def test_the_window_is_since_inclusive_until_exclusive(mat_backend):
    rows = results(mat_backend, OBS + f"group_by=test_name&{WINDOW}")
    assert rows == [{"test_name": "web_connectivity", "observation_count": 40},
                    {"test_name": "urlgetter", "observation_count": 1}]
    later = results(mat_backend, OBS + "group_by=test_name&since=2024-11-01T00:00:01Z"
                                       "&until=2024-11-10")
    assert later[0] == {"test_name": "web_connectivity", "observation_count": 39}


def test_explorer_mat_request_for_a_domain_grid(mat_backend):
    # What Explorer's MAT sends for data=observations, axis_x=measurement_start_day,
    # axis_y=domain, domain=twitter.com, probe_asn typed as AS12389 (§6.5).
    rows = results(mat_backend, OBS + "group_by=failure&group_by=timestamp&group_by=hostname"
                                      "&hostname=twitter.com&data=observations"
                                      "&test_name=web_connectivity&since=2024-11-01"
                                      "&until=2024-11-10&time_grain=day&probe_cc=RU"
                                      "&probe_asn=AS12389&input=&category_code=")
    assert len(rows) == 9
    for r in rows:
        assert r["observation_count"] == 1
        assert (r["hostname"], r["probe_cc"], r["probe_asn"], r["test_name"]) == (
            "twitter.com", "RU", 12389, "web_connectivity")
        day = int(r["timestamp"][8:10])
        assert r["failure"] == ("tcp.generic_timeout_error" if day % 2
                                else "tls.connection_reset")


def test_explorer_category_code_axis(mat_backend):
    rows = results(mat_backend, OBS + f"group_by=failure&group_by=category_code&{WINDOW}")
    assert rows == [
        {"failure": "none", "category_code": "GRP", "observation_count": 19},
        {"failure": "dns_isp.dns_nxdomain_error", "category_code": "GRP",
         "observation_count": 9},
        {"failure": "tcp.generic_timeout_error", "category_code": "GRP",
         "observation_count": 5},
        {"failure": "tls.connection_reset", "category_code": "GRP", "observation_count": 4},
        {"failure": "dns_other.unknown_failure", "category_code": "MMED",
         "observation_count": 1},
        {"failure": "https.connection_reset", "category_code": "NEWS", "observation_count": 1},
    ]


def test_several_hostnames_are_summed_unless_grouped(mat_backend):
    for q in ("hostname=twitter.com,www.facebook.com",
              "hostname=twitter.com&hostname=www.facebook.com"):
        rows = results(mat_backend, OBS + f"{q}&{WINDOW}")
        assert by_failure(rows) == {"none": 19, "dns_isp.dns_nxdomain_error": 9,
                                    "tcp.generic_timeout_error": 5, "tls.connection_reset": 4}
        assert all("hostname" not in r for r in rows)
    split = results(mat_backend, OBS + f"hostname=twitter.com,www.facebook.com&{WINDOW}"
                                       "&group_by=hostname")
    assert {r["hostname"]: r["observation_count"] for r in split} == {
        "twitter.com": 18, "www.facebook.com": 19}


@pytest.mark.parametrize("query,failures,key", [
    ("probe_cc=IR", {"dns_isp.dns_nxdomain_error": 9, "dns_other.unknown_failure": 1},
     ("probe_cc", "IR")),
    ("probe_cc=ir", {"dns_isp.dns_nxdomain_error": 9, "dns_other.unknown_failure": 1},
     ("probe_cc", "IR")),
    ("probe_asn=12389", {"tcp.generic_timeout_error": 5, "tls.connection_reset": 4,
                         "none": 1}, ("probe_asn", 12389)),
    ("probe_asn=AS12389", {"tcp.generic_timeout_error": 5, "tls.connection_reset": 4,
                           "none": 1}, ("probe_asn", 12389)),
    ("ip=104.244.42.1", {"tcp.generic_timeout_error": 5, "tls.connection_reset": 4},
     ("ip", "104.244.42.1")),
    ("resolver_asn=AS15169", {"dns_other.unknown_failure": 1}, ("resolver_asn", 15169)),
    ("test_name=urlgetter", {"none": 1}, ("test_name", "urlgetter")),
    ("hostname=ncac.org", {"https.connection_reset": 1}, ("hostname", "ncac.org")),
    ("input=https://www.bbc.com/news", {"none": 1}, None),
    ("ooni_run_link_id=10015", {"none": 1}, None),
    ("category_code=NEWS", {"https.connection_reset": 1}, None),
    ("category_code=MMED&probe_cc=IR", {"dns_other.unknown_failure": 1}, ("probe_cc", "IR")),
])
def test_each_observation_filter(mat_backend, query, failures, key):
    rows = results(mat_backend, OBS + f"{query}&{WINDOW}")
    assert by_failure(rows) == failures
    if key is not None:  # a one-valued filter is a key of every row
        assert all(r[key[0]] == key[1] for r in rows)


def test_measurement_uid_skips_the_default_window(mat_backend):
    assert results(mat_backend, OBS + f"measurement_uid={OLD_UID}") == [
        {"failure": "tcp.generic_timeout_error", "measurement_uid": OLD_UID,
         "observation_count": 1}]
    assert results(mat_backend, OBS + f"measurement_uid={OLD_UID}&{WINDOW}") == []


def test_no_parameters_is_the_last_30_days(mat_backend):
    assert results(mat_backend, OBS) == []  # the fixture is from 2024


# ---- /api/v1/aggregation/observations/ctrl ----

def test_ctrl_per_hostname_ip_and_port(mat_backend):
    rows = results(mat_backend, CTRL + "hostname=twitter.com,ncac.org"
                                       "&since=2024-11-05&until=2024-11-06")
    twitter = {"dns_success_count": 3, "dns_nxdomain_count": 1, "dns_other_failure_count": 0,
               "hostname": "twitter.com", "asn": 13414, "as_org_name": "Twitter Inc.",
               "is_cloud_provider": False}
    assert rows == [
        {"hostname": "ncac.org", "ip": "104.21.55.2", "port": 443, "asn": 13335,
         "as_org_name": "Cloudflare, Inc.", "is_cloud_provider": True, "in_dns_answers": True,
         "tls_consistent": True, "tcp_success_count": 2, "tcp_failure_count": 0,
         "tls_success_count": 1, "tls_failure_count": 1, "dns_success_count": 2,
         "dns_nxdomain_count": 0, "dns_other_failure_count": 0},
        {**twitter, "ip": "104.244.42.1", "port": 80, "in_dns_answers": True,
         "tls_consistent": True,  # TLS worked on port 443 of the same address
         "tcp_success_count": 1, "tcp_failure_count": 0, "tls_success_count": 0,
         "tls_failure_count": 0},
        {**twitter, "ip": "104.244.42.1", "port": 443, "in_dns_answers": True,
         "tls_consistent": True, "tcp_success_count": 2, "tcp_failure_count": 0,
         "tls_success_count": 2, "tls_failure_count": 0},
        {**twitter, "ip": "104.244.42.65", "port": 443, "in_dns_answers": False,
         "tls_consistent": False, "tcp_success_count": 0, "tcp_failure_count": 1,
         "tls_success_count": 0, "tls_failure_count": 0},
    ]
    # The window: ncac.org's second row is at 17:00.
    early = results(mat_backend, CTRL + "hostname=ncac.org"
                                        "&since=2024-11-05T13:00:00Z&until=2024-11-05T15:00:00Z")
    assert [(r["tls_success_count"], r["tls_failure_count"]) for r in early] == [(0, 1)]


def test_ctrl_needs_a_hostname_and_defaults_to_the_last_hour(mat_backend):
    status, _, doc = get(mat_backend, CTRL + "since=2024-11-05&until=2024-11-06")
    assert status == 400 and "hostname" in doc["error"]
    status, headers, doc = get(mat_backend, CTRL + "hostname=twitter.com")
    assert (status, doc) == (200, {"results": []})
    assert headers["Cache-Control"] == "max-age=0, no-cache"


# ---- /api/v1/aggregation/analysis ----

def analysis(backend: Backend, query: str) -> dict[str, Any]:
    status, headers, doc = get(backend, ANALYSIS + query)
    assert status == 200, doc
    assert set(doc) == {"db_stats", "dimension_count", "results"}
    assert doc["db_stats"]["bytes"] == -1
    assert doc["db_stats"]["row_count"] == len(doc["results"])
    for item in doc["results"]:
        assert ITEM_KEYS <= set(item) and set(item["loni"]) == LONI_KEYS
    return doc


@pytest.mark.parametrize("grain,n", [("hour", 30), ("day", 9), ("week", 2), ("month", 1),
                                     ("year", 1), ("auto", 9)])
def test_analysis_time_grains(mat_backend, grain, n):
    doc = analysis(mat_backend, f"{WINDOW}&time_grain={grain}")
    assert doc["dimension_count"] == 1 and len(doc["results"]) == n
    assert sum(r["count"] for r in doc["results"]) == 31.0
    assert all(r["measurement_start_day"].endswith("Z") for r in doc["results"])


def test_analysis_by_country_ranks_the_blocked_layers(mat_backend):
    doc = analysis(mat_backend, f"axis_x=probe_cc&{WINDOW}")
    by_cc = {r["probe_cc"]: r for r in doc["results"]}
    assert [r["probe_cc"] for r in doc["results"]] == ["IR", "IT", "RU"]
    assert {cc: r["count"] for cc, r in by_cc.items()} == {"IR": 10.0, "IT": 11.0, "RU": 10.0}
    assert by_cc["IR"]["measurement_start_day"] is None
    ir, it, ru = by_cc["IR"]["loni"], by_cc["IT"]["loni"], by_cc["RU"]["loni"]
    assert ir["likely_blocked_protocols"] == [["dns.nxdomain", 0.8]]
    assert (ir["blocked_max_outcome"], ir["blocked_max"]) == ("dns.nxdomain", 0.8)
    assert ir["dns_blocked_outcome"] == "nxdomain"
    assert it["likely_blocked_protocols"] == []
    assert (it["blocked_max_outcome"], it["blocked_max"]) == ("none", 0.0)
    assert it["dns_blocked_outcome"] == "got_answer" and it["dns_ok"] == 0.99
    assert ru["likely_blocked_protocols"] == [["tls.connection_reset", 0.9],
                                              ["tcp.generic_timeout_error", 0.75]]
    assert (ru["blocked_max_outcome"], ru["blocked_max"]) == ("tls.connection_reset", 0.9)


def test_explorer_analysis_request_per_day_and_domain(mat_backend):
    # Everything Explorer's MAT sends but `data` (§6.5): probe_asn typed as AS12389.
    doc = analysis(mat_backend, "test_name=web_connectivity&axis_x=measurement_start_day"
                                "&axis_y=domain&since=2024-11-01&until=2024-11-10"
                                "&time_grain=day&probe_asn=AS12389")
    assert doc["dimension_count"] == 2
    rows = doc["results"]
    assert len(rows) == 9
    for r in rows:
        assert (r["domain"], r["probe_asn"], r["test_name"], r["count"]) == (
            "twitter.com", 12389, "web_connectivity", 1.0)
        day = int(r["measurement_start_day"][8:10])
        assert r["loni"]["blocked_max_outcome"] == (
            "tcp.generic_timeout_error" if day % 2 else "tls.connection_reset")
    assert rows[0]["measurement_start_day"] == "2024-11-01T00:00:00Z"


def test_analysis_comma_domains_are_one_series(mat_backend):
    doc = analysis(mat_backend, f"domain=twitter.com,www.facebook.com&{WINDOW}")
    counts = [(r["measurement_start_day"][:10], r["count"], r["domain"])
              for r in doc["results"]]
    assert counts[0] == ("2024-11-01", 4.0, None)  # IT, IR, RU and the 00:00 IT one
    assert all(c == 3.0 for _, c, _ in counts[1:]) and len(counts) == 9


@pytest.mark.parametrize("query,count,key", [
    ("probe_cc=RU", 10.0, ("probe_cc", "RU")),
    ("probe_asn=197207", 10.0, ("probe_asn", 197207)),
    ("probe_asn=AS197207", 10.0, ("probe_asn", 197207)),
    ("test_name=urlgetter", 1.0, ("test_name", "urlgetter")),
    ("domain=ncac.org", 1.0, ("domain", "ncac.org")),
    ("input=https://www.instagram.com/", 1.0, ("input", "https://www.instagram.com/")),
    ("ooni_run_link_id=10015", 1.0, None),
    ("category_code=MMED", 1.0, None),
])
def test_each_analysis_filter(mat_backend, query, count, key):
    doc = analysis(mat_backend, f"axis_x=test_name&{query}&{WINDOW}")
    assert sum(r["count"] for r in doc["results"]) == count
    if key is not None:
        assert all(r[key[0]] == key[1] for r in doc["results"])


@pytest.mark.parametrize("axis,values", [
    ("domain", {"ncac.org", "twitter.com", "www.bbc.com", "www.facebook.com",
                "www.instagram.com"}),
    ("probe_asn", {12389, 30722, 197207}),
    ("test_name", {"urlgetter", "web_connectivity"}),
    ("input", {"https://ncac.org/", "https://twitter.com/", "https://www.bbc.com/news",
               "https://www.facebook.com/", "https://www.instagram.com/"}),
    ("category_code", {"GRP", "MMED", "NEWS"}),
])
def test_each_analysis_axis(mat_backend, axis, values):
    doc = analysis(mat_backend, f"axis_x={axis}&{WINDOW}")
    assert {r[axis] for r in doc["results"]} == values
    with_y = analysis(mat_backend, f"axis_x=measurement_start_day&axis_y={axis}&{WINDOW}")
    assert with_y["dimension_count"] == 2
    assert all(r[axis] is not None and r["measurement_start_day"] for r in with_y["results"])


def test_analysis_category_counts(mat_backend):
    doc = analysis(mat_backend, f"axis_x=category_code&{WINDOW}")
    assert [(r["category_code"], r["count"]) for r in doc["results"]] == [
        ("GRP", 28.0), ("MMED", 1.0), ("NEWS", 1.0)]
    assert doc["results"][1]["loni"]["dns_blocked_outcome"] == "unknown_failure"


def test_analysis_by_measurement_uid_alone(mat_backend):
    doc = analysis(mat_backend, f"measurement_uid={OLD_UID}")
    assert [(r["measurement_uid"], r["count"], r["measurement_start_day"])
            for r in doc["results"]] == [(OLD_UID, 1.0, "2024-10-15T00:00:00Z")]
    assert analysis(mat_backend, "")["results"] == []  # the last 30 days: nothing


def test_analysis_ignores_format_and_download(mat_backend):
    doc = analysis(mat_backend, f"axis_x=probe_cc&{WINDOW}&format=CSV&download=true"
                                "&anomaly_sensitivity=0.7")
    assert len(doc["results"]) == 3


# ---- errors: 400 JSON, never a 500 ----

@pytest.mark.parametrize("path", [
    OBS + "group_by=domain", OBS + "group_by=x%27%3BDROP", OBS + "probe_cc=I%27T",
    OBS + "probe_asn=ASX", OBS + "hostname=a%27b.org", OBS + "ip=1.2.3",
    OBS + "measurement_uid=bogus", OBS + "since=yesterday", OBS + "time_grain=minute",
    OBS + "since=2024-11-10&until=2024-11-01", OBS + "resolver_asn=-1",
    OBS + "ooni_run_link_id=abc", OBS + "category_code=N3WS", OBS + "test_name=BOGUS",
    CTRL + "hostname=a%27b.org", CTRL + "hostname=x.org&since=nope",
    ANALYSIS + "axis_x=nope", ANALYSIS + "axis_y=probe_cc&axis_x=probe_cc",
    ANALYSIS + "probe_cc=ITA", ANALYSIS + "probe_asn=AS-1", ANALYSIS + "domain=foo..org",
    ANALYSIS + "input=~!^{}", ANALYSIS + "anomaly_sensitivity=high",
    ANALYSIS + "since=2024-11-10&until=2024-11-01", ANALYSIS + "time_grain=decade",
])
def test_bad_parameters_are_400_json(mat_backend, path):
    status, headers, doc = get(mat_backend, path)
    assert status == 400, doc
    assert headers["Content-Type"] == "application/json" and doc["error"]


# ---- empty tables: empty answers (the read backend has no pipeline-v5 rows) ----

def test_empty_tables_give_empty_results(read_backend):
    assert results(read_backend, OBS + WINDOW) == []
    assert results(read_backend, OBS + f"group_by=timestamp&group_by=category_code&{WINDOW}"
                                       "&time_grain=hour") == []
    assert results(read_backend, CTRL + "hostname=twitter.com&" + WINDOW) == []
    doc = analysis(read_backend, f"axis_x=probe_cc&axis_y=domain&{WINDOW}")
    assert (doc["dimension_count"], doc["results"]) == (2, [])
