"""Explorer's global and list statistics (`/api/_/global_overview`, countries, networks,
domains, ...) over real sockets against `oonibackend run` with the embedded ClickHouse.

Most tests read the shared `read_backend` (the real fixture rows: 77 in 2021-07, 1,000 in
2024-01, 3 in 2025-07, plus a copy of the 999 rows of 2024-01-01 on yesterday, UTC); the
expected numbers were computed once from the fixture with independent SQL and are hard-coded.
Tests that need their own rows (asnmeta names, ZZ rows, rows added to check the cache) use a
small backend of this module (`small`), never `read_backend`; its tests run in file order,
the one that adds rows (the cache test) last.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Backend
from tests.readcalls import bad, ok
from tests.readdata import RECENT_DAY, db_exec

TODAY = RECENT_DAY + dt.timedelta(days=1)
DAY = 86400
TWO_HOURS = 7200

# Per month of the fixture (and of the recent copy): distinct ASNs, distinct countries, rows.
MONTHS = {
    dt.date(2021, 7, 1): (15, 9, 77),
    dt.date(2024, 1, 1): (97, 42, 1000),
    dt.date(2025, 7, 1): (2, 2, 3),
    RECENT_DAY.replace(day=1): (96, 42, 999),
}


def month_window(today: dt.date) -> list[dt.date]:
    """The first days of the 24 months before today's month and of today's, oldest first."""
    out, y, m = [], today.year, today.month
    for _ in range(25):
        out.append(dt.date(y, m, 1))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


def expected_series(column: int) -> list[dict[str, Any]]:
    return [{"date": f"{m.isoformat()}T00:00:00+00:00",
             "value": MONTHS[m][column] if m in MONTHS else 0} for m in month_window(TODAY)]


# -- home page ------------------------------------------------------------------------------

def test_global_overview_counts_everything(read_backend):
    body = ok(read_backend, "/api/_/global_overview", DAY)
    assert body == {"network_count": 111, "country_count": 47, "measurement_count": 2079}
    assert all(type(v) is int for v in body.values())


def test_global_overview_by_month_has_three_monthly_series_ending_with_this_month(read_backend):
    body = ok(read_backend, "/api/_/global_overview_by_month", DAY)
    assert set(body) == {"networks_by_month", "countries_by_month", "measurements_by_month"}
    assert body["networks_by_month"] == expected_series(0)
    assert body["countries_by_month"] == expected_series(1)
    assert body["measurements_by_month"] == expected_series(2)
    for series in body.values():
        assert len(series) == 25
        dates = [item["date"] for item in series]
        assert dates == sorted(dates)  # oldest first
        # The last item is the current month (Explorer drops it as incomplete).
        assert dates[-1] == f"{TODAY.replace(day=1).isoformat()}T00:00:00+00:00"
        assert all(re.fullmatch(r"\d{4}-\d{2}-01T00:00:00\+00:00", d) for d in dates)
        assert all(type(item["value"]) is int for item in series)
    # The recent copy (yesterday) is within the window, and so is 2025-07 while it is less
    # than 24 months old; 2021-07 and 2024-01 are not.
    by_date = {i["date"][:10]: i["value"] for i in body["measurements_by_month"]}
    assert by_date[RECENT_DAY.replace(day=1).isoformat()] == 999
    assert "2024-01-01" not in by_date


def test_asn_and_countries_by_month_are_the_same_series(read_backend):
    assert ok(read_backend, "/api/_/asn_by_month", DAY) == expected_series(0)
    assert ok(read_backend, "/api/_/countries_by_month", DAY) == expected_series(1)


# -- lists ----------------------------------------------------------------------------------

def test_test_names_is_the_static_list_in_order(read_backend):
    body = ok(read_backend, "/api/_/test_names", 3600)
    assert [(t["id"], t["name"]) for t in body["test_names"]] == [
        ("bridge_reachability", "Bridge Reachability"), ("dash", "DASH"),
        ("dns_consistency", "DNS Consistency"), ("dnscheck", "DNS Check"),
        ("facebook_messenger", "Facebook Messenger"),
        ("http_header_field_manipulation", "HTTP Header Field Manipulation"),
        ("http_host", "HTTP Host"), ("http_invalid_request_line", "HTTP Invalid Request Line"),
        ("http_requests", "HTTP Requests"), ("meek_fronted_requests_test", "Meek Fronted Requests"),
        ("multi_protocol_traceroute", "Multi Protocol Traceroute"), ("ndt", "NDT"),
        ("psiphon", "Psiphon"), ("riseupvpn", "RiseupVPN"), ("signal", "Signal"),
        ("stunreachability", "STUN Reachability"), ("tcp_connect", "TCP Connect"),
        ("telegram", "Telegram"), ("tor", "Tor"), ("torsf", "Tor Snowflake"),
        ("urlgetter", "URL Getter"), ("vanilla_tor", "Vanilla Tor"),
        ("web_connectivity", "Web Connectivity"), ("whatsapp", "WhatsApp"),
    ]
    assert all(set(t) == {"id", "name"} for t in body["test_names"])


def test_countries_lists_every_country_with_its_all_time_count(read_backend):
    countries = ok(read_backend, "/api/_/countries", DAY)["countries"]
    assert len(countries) == 47
    codes = [c["alpha_2"] for c in countries]
    assert codes == sorted(codes)
    assert sum(c["count"] for c in countries) == 2079
    by_cc = {c["alpha_2"]: c for c in countries}
    assert by_cc["CA"] == {"alpha_2": "CA", "name": "Canada", "count": 22}
    assert by_cc["IT"] == {"alpha_2": "IT", "name": "Italy", "count": 87}
    assert by_cc["US"] == {"alpha_2": "US", "name": "United States", "count": 456}
    assert by_cc["RU"]["name"] == "Russia"
    for c in countries:
        assert set(c) == {"alpha_2", "name", "count"}
        assert type(c["count"]) is int and isinstance(c["name"], str)


def test_networks_lists_every_asn_with_a_string_org_name(read_backend):
    body = ok(read_backend, "/api/_/networks", TWO_HOURS)
    assert body["v"] == 0
    results = body["results"]
    assert len(results) == 111
    asns = [r["probe_asn"] for r in results]
    assert asns == sorted(asns)
    assert results[0] == {"probe_asn": 701, "cnt": 26, "org_name": ""}
    assert {"probe_asn": 3269, "cnt": 55, "org_name": ""} in results
    assert sum(r["cnt"] for r in results) == 2079
    for r in results:
        assert set(r) == {"probe_asn", "cnt", "org_name"}
        # asnmeta is empty here: '' (Explorer lower-cases it; null would crash the page).
        assert type(r["probe_asn"]) is int and type(r["cnt"]) is int and r["org_name"] == ""


def test_domains_lists_every_test_list_domain_with_its_category(read_backend):
    body = ok(read_backend, "/api/_/domains", TWO_HOURS)
    assert body["v"] == 0
    results = body["results"]
    assert len(results) == 590  # distinct citizenlab domains
    names = [r["domain_name"] for r in results]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert sum(r["measurement_count"] for r in results) == 1456
    by_name = {r["domain_name"]: r for r in results}
    # The global list's category wins over the country lists' (POLR, NEWS) ...
    assert by_name["twitter.com"] == {"domain_name": "twitter.com", "category_code": "GRP",
                                      "measurement_count": 54}
    assert by_name["www.facebook.com"]["category_code"] == "GRP"
    assert by_name["www.facebook.com"]["measurement_count"] == 18
    # ... then the shortest URL's; domains never measured are listed with 0.
    assert by_name["www.haaretz.com"]["category_code"] == "NEWS"
    assert by_name["www.viomundo.com.br"]["category_code"] == "NEWS"
    assert by_name["facebook.com"] == {"domain_name": "facebook.com", "category_code": "GRP",
                                       "measurement_count": 0}
    assert by_name["ncac.org"]["category_code"] == "NEWS"
    for r in results:
        assert set(r) == {"domain_name", "category_code", "measurement_count"}
        assert isinstance(r["category_code"], str) and r["category_code"]
        assert type(r["measurement_count"]) is int


# -- country overview -----------------------------------------------------------------------

def test_country_overview_of_italy(read_backend):
    body = ok(read_backend, "/api/_/country_overview?probe_cc=IT", DAY)
    assert body == {"first_bucket_date": "2021-07-09", "measurement_count": 87,
                    "network_count": 4}
    assert ok(read_backend, "/api/_/country_overview?probe_cc=us", DAY) == {
        "first_bucket_date": "2024-01-01", "measurement_count": 456, "network_count": 16}


def test_country_overview_without_data_still_has_every_field(read_backend):
    # Explorer's calendar crashes without first_bucket_date: today, and zero counts.
    body = ok(read_backend, "/api/_/country_overview?probe_cc=XY", DAY)
    assert body == {"first_bucket_date": TODAY.isoformat(), "measurement_count": 0,
                    "network_count": 0}


@pytest.mark.parametrize("query", ["", "?probe_cc=", "?probe_cc=undefined", "?probe_cc=ITA",
                                   "?probe_cc=1T", "?probe_cc=IT,US"])
def test_country_overview_needs_one_country_code(read_backend, query):
    bad(read_backend, "/api/_/country_overview" + query)


# -- domain and network metadata ------------------------------------------------------------

@pytest.mark.parametrize("domain, category, canonical", [
    ("facebook.com", "GRP", "www.facebook.com"),      # only www. is in the global list
    ("www.facebook.com", "GRP", "www.facebook.com"),
    ("www.twitter.com", "GRP", "twitter.com"),         # only the bare domain is listed
    ("twitter.com", "GRP", "twitter.com"),             # global list first (countries: POLR)
    ("www.haaretz.com", "NEWS", "www.haaretz.com"),    # shortest URL of the global list
    ("viomundo.com.br", "NEWS", "www.viomundo.com.br"),  # country list only, shortest URL
    ("www.cabofrio.rj.gov.br", "CULTR", "www.cabofrio.rj.gov.br"),
    ("Twitter.COM", "GRP", "twitter.com"),             # host names are case-insensitive
    ("www.example-not-listed.org", "MISC", "example-not-listed.org"),
    ("8.8.8.8", "MISC", "8.8.8.8"),
])
def test_domain_metadata(read_backend, domain, category, canonical):
    body = ok(read_backend, f"/api/_/domain_metadata?domain={domain}", TWO_HOURS)
    assert body == {"category_code": category, "canonical_domain": canonical}


@pytest.mark.parametrize("query", ["", "?domain=", "?domain=undefined", "?domain=a%27b.org",
                                   "?domain=twitter.com/path", "?domain=a%20b"])
def test_domain_metadata_needs_a_domain(read_backend, query):
    bad(read_backend, "/api/_/domain_metadata" + query)


def test_asnmeta_of_an_unknown_network_is_unknown(read_backend):
    assert ok(read_backend, "/api/_/asnmeta?asn=0", TWO_HOURS) == {"org_name": "Unknown"}
    assert ok(read_backend, "/api/_/asnmeta?asn=AS3269", TWO_HOURS) == {"org_name": "Unknown"}


@pytest.mark.parametrize("query", ["", "?asn=", "?asn=undefined", "?asn=ASX", "?asn=-1",
                                   "?asn=99999999999"])
def test_asnmeta_needs_an_asn(read_backend, query):
    bad(read_backend, "/api/_/asnmeta" + query)


# -- constants and tolerance ----------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "?report_id=20210709T004340Z_webconnectivity_MY_4818_n1_YCM7J9mGcEHds2K3",
    "?report_id=BOGUS", "", "?report_id=undefined"])
def test_check_report_id_always_finds(read_backend, query):
    assert ok(read_backend, "/api/_/check_report_id" + query, 1) == {"v": 0, "found": True}


def test_unknown_and_empty_params_are_ignored(read_backend):
    assert ok(read_backend, "/api/_/global_overview?data=x&probe_cc=", DAY)[
        "measurement_count"] == 2079
    assert len(ok(read_backend, "/api/_/countries?since=undefined", DAY)["countries"]) == 47
    assert ok(read_backend, "/api/_/country_overview?probe_cc=IT&since=undefined&x=1",
              DAY)["measurement_count"] == 87


def test_routes_are_documented(read_backend):
    with urllib.request.urlopen(read_backend.url + "/apispec_1.json", timeout=30) as r:
        paths = json.loads(r.read())["paths"]
    for name in ("asn_by_month", "countries_by_month", "test_names", "countries",
                 "check_report_id", "country_overview", "global_overview",
                 "global_overview_by_month", "domain_metadata", "asnmeta", "networks",
                 "domains"):
        assert "get" in paths[f"/api/_/{name}"], name
    params = paths["/api/_/country_overview"]["get"]["parameters"]
    assert [(p["name"], p["required"]) for p in params] == [("probe_cc", True)]


# -- a backend of our own: asnmeta names, non-countries, the cache --------------------------

SMALL_ROWS = """
INSERT INTO asnmeta (asn, org_name, cc, changed, aut_name, source) VALUES
    (3269, 'Old Telecom Italia', 'IT', '2018-01-01', 'ASN-IBSNAZ', 'test'),
    (3269, 'Telecom Italia S.p.A.', 'IT', '2023-06-01', 'ASN-IBSNAZ', 'test'),
    (12874, 'Fastweb SpA', 'IT', '2022-01-01', 'FASTWEB', 'test');
INSERT INTO fastpath (measurement_uid, report_id, input, probe_cc, probe_asn, test_name,
    test_start_time, measurement_start_time, anomaly, confirmed, msm_failure, domain) VALUES
    ('20240101000000.000001_IT_webconnectivity_0000000000000001', 'r1', 'https://twitter.com/',
     'IT', 3269, 'web_connectivity', '2024-01-01 00:00:00', '2024-01-01 00:00:01', 'f', 'f',
     'f', 'twitter.com'),
    ('20240101000000.000002_IT_webconnectivity_0000000000000002', 'r2', 'https://twitter.com/',
     'IT', 12874, 'web_connectivity', '2024-01-01 00:00:00', '2024-01-01 00:00:02', 'f', 'f',
     'f', 'twitter.com'),
    ('20240101000000.000003_ZZ_webconnectivity_0000000000000003', 'r3', 'https://twitter.com/',
     'ZZ', 0, 'web_connectivity', '2024-01-01 00:00:00', '2024-01-01 00:00:03', 'f', 'f',
     'f', 'twitter.com'),
    ('20240101000000.000004_XX_webconnectivity_0000000000000004', 'r4', 'https://twitter.com/',
     'XX', 65550, 'web_connectivity', '2024-01-01 00:00:00', '2024-01-01 00:00:04', 'f', 'f',
     'f', 'twitter.com'),
    ('{ymd}000000.000006_ZZ_webconnectivity_0000000000000006', 'r6', 'https://twitter.com/',
     'ZZ', 0, 'web_connectivity', '{day} 00:00:00', '{day} 00:00:05', 'f', 'f',
     'f', 'twitter.com');
""".replace("{day}", RECENT_DAY.isoformat()).replace("{ymd}", RECENT_DAY.strftime("%Y%m%d"))

MORE_ROWS = """
INSERT INTO asnmeta (asn, org_name, cc, changed, aut_name, source) VALUES
    (65550, 'Example IE network', 'IE', '2024-01-01', 'EXAMPLE', 'test');
INSERT INTO fastpath (measurement_uid, report_id, input, probe_cc, probe_asn, test_name,
    test_start_time, measurement_start_time, anomaly, confirmed, msm_failure, domain) VALUES
    ('20240102000000.000005_IT_webconnectivity_0000000000000005', 'r5', 'https://twitter.com/',
     'IT', 3269, 'web_connectivity', '2024-01-02 00:00:00', '2024-01-02 00:00:01', 'f', 'f',
     'f', 'twitter.com');
"""


def run_sql(backend: Backend, sql: str, name: str) -> None:
    f = backend.data_dir / f"{name}.sql"
    f.write_text(sql, encoding="utf-8")
    db_exec(backend.config, backend.data_dir, f)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A backend with SMALL_ROWS, loaded before it starts (chdb opened directly by `db`
    commands while no owner runs), so that its warmer sees them."""
    data = tmp_path_factory.mktemp("explorer_overview")
    b = Backend(data, {"fastpath": {"enabled": False}, "quotas": {"enabled": False}})
    subprocess.run([sys.executable, "-m", "oonibackend", "db", "migrate", "--config",
                    str(b.config), "--data-dir", str(data)],
                   check=True, capture_output=True, timeout=120)
    run_sql(b, SMALL_ROWS, "small_rows")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def metrics(backend: Backend) -> dict[str, float]:
    """`name{labels}` → value, from the backend's /metrics."""
    with urllib.request.urlopen(backend.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def served(stat: str, source: str) -> str:
    return f'oonibackend_explorer_stats_served_total{{source="{source}",stat="{stat}"}}'


def computed(stat: str) -> str:
    return f'oonibackend_explorer_stats_computed_total{{stat="{stat}"}}'


def within_one_period(fn: Callable[[], Any]) -> Any:
    """Run fn inside one cache period (an hour of the clock): statistics are recomputed when a
    new one starts, so a run that straddles the hour is simply run again."""
    for _ in range(3):
        hour = int(time.time() // 3600)
        result = fn()
        if int(time.time() // 3600) == hour:
            return result
    raise AssertionError("could not run within one hour")


def test_home_page_statistics_are_warmed_before_any_visit(small):
    # The warmer computes them at startup: no request has asked for them yet.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = metrics(small)
        if m.get(computed("global"), 0) >= 1 and m.get(computed("monthly"), 0) >= 1:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"not warmed: {metrics(small)}")
    assert served("global", "cache") not in m and served("global", "computed") not in m
    ok(small, "/api/_/global_overview", DAY)
    ok(small, "/api/_/global_overview_by_month", DAY)
    m = metrics(small)
    # Served from the warmed cache: the visitor did not wait for a query.
    assert m[served("global", "cache")] == 1 and served("global", "computed") not in m
    assert m[served("monthly", "cache")] == 1 and served("monthly", "computed") not in m


def test_asnmeta_gives_the_newest_org_name(small):
    assert ok(small, "/api/_/asnmeta?asn=3269", TWO_HOURS) == {
        "org_name": "Telecom Italia S.p.A."}
    assert ok(small, "/api/_/asnmeta?asn=AS12874", TWO_HOURS) == {
        "org_name": "Fastweb SpA"}
    assert ok(small, "/api/_/asnmeta?asn=as1", TWO_HOURS) == {"org_name": "Unknown"}


def test_countries_skips_codes_that_are_not_countries(small):
    def check() -> list[dict[str, Any]]:
        return ok(small, "/api/_/countries", DAY)["countries"]

    countries = within_one_period(check)
    # ZZ (unknown) and XX (not assigned) measurements exist but are not countries.
    assert [c["alpha_2"] for c in countries] == ["IT"]
    assert countries[0]["name"] == "Italy"


def test_networks_org_names_come_from_asnmeta(small):
    assert ok(small, "/api/_/networks", TWO_HOURS)["results"] == [
        {"probe_asn": 0, "cnt": 2, "org_name": ""},
        {"probe_asn": 3269, "cnt": 1, "org_name": "Telecom Italia S.p.A."},  # the newest
        {"probe_asn": 12874, "cnt": 1, "org_name": "Fastweb SpA"},
        {"probe_asn": 65550, "cnt": 1, "org_name": ""},  # not in asnmeta: '', never null
    ]
    assert ok(small, "/api/_/country_overview?probe_cc=IT", DAY) == {
        "first_bucket_date": "2024-01-01", "measurement_count": 2, "network_count": 2}


def test_second_call_is_served_from_the_cache(small):
    """Rows added after a statistic was computed do not show until the next period, while
    the uncached point lookup (asnmeta) sees them at once."""
    def scenario() -> tuple[Any, ...]:
        before = ok(small, "/api/_/networks", TWO_HOURS)
        overview = ok(small, "/api/_/country_overview?probe_cc=IT", DAY)
        m0 = metrics(small)
        run_sql(small, MORE_ROWS, "more_rows")
        after = ok(small, "/api/_/networks", TWO_HOURS)
        overview_after = ok(small, "/api/_/country_overview?probe_cc=IT", DAY)
        return before, after, overview, overview_after, m0, metrics(small)

    before, after, overview, overview_after, m0, m1 = within_one_period(scenario)
    assert after == before
    assert overview_after == overview
    # No query ran for the second calls: both answers came from the cache.
    assert m1[computed("networks")] == m0[computed("networks")]
    assert m1[computed("countries")] == m0[computed("countries")]
    assert m1[served("networks", "cache")] == m0.get(served("networks", "cache"), 0) + 1
    assert m1[served("countries", "cache")] == m0.get(served("countries", "cache"), 0) + 1
    # The rows are there: asnmeta, a point lookup that is not cached, shows the new name.
    assert ok(small, "/api/_/asnmeta?asn=65550", TWO_HOURS) == {
        "org_name": "Example IE network"}
