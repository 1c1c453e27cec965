"""Explorer's per-country statistics (`/api/_/test_coverage`, website_*, im_*, vanilla_tor_stats,
network_stats, circumvention_*) over real sockets against `oonibackend run` with the embedded
ClickHouse holding the real fixture rows (`read_backend`, read-only).

The "recent" copy of the fixture's 999 rows of 2024-01-01 lies on yesterday (UTC), so every
window relative to today sees exactly those rows; the expected numbers below were computed
once from the fixture with independent SQL and are hard-coded so that a regression shows.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.readcalls import bad, get, ok
from tests.readdata import RECENT_DAY

YESTERDAY = RECENT_DAY.isoformat()
TODAY = RECENT_DAY + dt.timedelta(days=1)
GROUPS = ["circumvention", "experimental", "im", "legacy", "middlebox", "performance",
          "websites"]
URL_ITEM_KEYS = {"input", "anomaly_count", "confirmed_count", "failure_count", "total_count"}


def days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


LAST_30 = days(TODAY - dt.timedelta(days=30), TODAY - dt.timedelta(days=1))


# -- test_coverage --------------------------------------------------------------------------

def test_test_coverage_is_a_full_zero_filled_grid(read_backend):
    body = ok(read_backend, "/api/_/test_coverage?probe_cc=BR", 3600)
    assert sorted(body) == ["network_coverage", "test_coverage"]
    tc = body["test_coverage"]
    assert len(tc) == 7 * 30  # every test group × the last 30 days (today excluded)
    assert all(set(e) == {"count", "test_day", "test_group"} for e in tc)
    assert all(isinstance(e["count"], int) for e in tc)
    assert [e["test_group"] for e in tc[::30]] == GROUPS
    assert [e["test_day"] for e in tc[:30]] == LAST_30  # YYYY-MM-DD, oldest first
    nonzero = {(e["test_group"], e["test_day"]): e["count"] for e in tc if e["count"]}
    # BR yesterday: 119 web_connectivity, 1 torsf + 1 vanilla_tor.
    assert nonzero == {("websites", YESTERDAY): 119, ("circumvention", YESTERDAY): 2}


def test_test_coverage_network_coverage_is_gap_filled(read_backend):
    nc = ok(read_backend, "/api/_/test_coverage?probe_cc=BR", 3600)["network_coverage"]
    assert [e["test_day"] for e in nc] == LAST_30
    assert all(set(e) == {"count", "test_day"} for e in nc)
    assert nc[-1] == {"count": 13, "test_day": YESTERDAY}  # 13 BR networks yesterday
    assert all(e["count"] == 0 for e in nc[:-1])


def test_test_coverage_test_groups_restrict_network_coverage(read_backend):
    body = ok(read_backend, "/api/_/test_coverage?probe_cc=BR&test_groups=websites", 3600)
    assert body["network_coverage"][-1] == {"count": 11, "test_day": YESTERDAY}
    assert len(body["test_coverage"]) == 210  # the grid still has every group
    body = ok(read_backend,
              "/api/_/test_coverage?probe_cc=br&test_groups=websites,performance", 3600)
    assert body["network_coverage"][-1]["count"] == 11
    body = ok(read_backend, "/api/_/test_coverage?probe_cc=BR&test_groups=im", 3600)
    assert sum(e["count"] for e in body["network_coverage"]) == 0


def test_test_coverage_of_a_country_without_data_is_all_zeros(read_backend):
    body = ok(read_backend, "/api/_/test_coverage?probe_cc=XY", 3600)
    assert len(body["test_coverage"]) == 210 and len(body["network_coverage"]) == 30
    assert sum(e["count"] for e in body["test_coverage"] + body["network_coverage"]) == 0


@pytest.mark.parametrize("query", ["", "?probe_cc=", "?probe_cc=undefined", "?probe_cc=BRA",
                                   "?probe_cc=B1", "?probe_cc=BR,IT",
                                   "?probe_cc=BR&test_groups=websites,bogus"])
def test_test_coverage_bad_params(read_backend, query):
    bad(read_backend, "/api/_/test_coverage" + query)


# -- websites -------------------------------------------------------------------------------

def test_website_networks(read_backend):
    body = ok(read_backend, "/api/_/website_networks?probe_cc=IR", 0)
    assert body == {"results": [{"count": 26, "probe_asn": 31549},
                                {"count": 5, "probe_asn": 58224},
                                {"count": 2, "probe_asn": 197207}]}
    results = ok(read_backend, "/api/_/website_networks?probe_cc=BR", 0)["results"]
    assert len(results) == 13
    assert results[:3] == [{"count": 21, "probe_asn": 28573}, {"count": 20, "probe_asn": 7738},
                           {"count": 16, "probe_asn": 28669}]
    assert sum(r["count"] for r in results) == 121
    assert ok(read_backend, "/api/_/website_networks?probe_cc=XY", 0) == {"results": []}


def test_website_stats(read_backend):
    want = {"results": [{"test_day": YESTERDAY, "anomaly_count": 2, "confirmed_count": 2,
                         "failure_count": 1, "total_count": 2}]}
    for asn in ("31549", "AS31549"):
        path = (f"/api/_/website_stats?probe_cc=IR&probe_asn={asn}"
                "&input=https://www.coinbase.com/")
        assert ok(read_backend, path, 0) == want
    path = "/api/_/website_stats?probe_cc=IR&probe_asn=31549&input=https://nothing.example/"
    assert ok(read_backend, path, 0) == {"results": []}


@pytest.mark.parametrize("query", [
    "probe_asn=31549&input=https://www.coinbase.com/",
    "probe_cc=IR&input=https://www.coinbase.com/",
    "probe_cc=IR&probe_asn=ASX&input=https://www.coinbase.com/",
    "probe_cc=IR&probe_asn=31549",
    "probe_cc=IR&probe_asn=31549&input=http://x/%3Cscript%3E",
])
def test_website_stats_bad_params(read_backend, query):
    bad(read_backend, "/api/_/website_stats?" + query)


def test_website_urls_first_page(read_backend):
    body = ok(read_backend, "/api/_/website_urls?probe_cc=IR&probe_asn=AS31549", 3600)
    assert body["metadata"] == {
        "offset": 0, "limit": 10, "current_page": 1, "total_count": 24,
        "next_url": "https://api.example.org/api/_/website_urls?limit=10&offset=10"
                    "&probe_asn=31549&probe_cc=IR"}
    results = body["results"]
    assert len(results) == 10 and all(set(r) == URL_ITEM_KEYS for r in results)
    # Most confirmed, then most measured, most anomalous, then by URL.
    assert results[0] == {"input": "https://www.coinbase.com/", "anomaly_count": 2,
                          "confirmed_count": 2, "failure_count": 1, "total_count": 2}
    assert [r["input"] for r in results[1:]] == [
        "http://www.blackhat.be/", "https://twitter.com/", "https://www.bonbast.com/",
        "https://www.coinex.com/", "https://www.darknet.org.uk/",
        "https://www.destructoid.com/", "https://www.instagram.com/",
        "https://www.youtube.com/", "http://watech.ir/"]
    assert [r["confirmed_count"] for r in results] == [2] + [1] * 8 + [0]


def test_website_urls_pages_follow_next_url(read_backend):
    seen: list[str] = []
    path = "/api/_/website_urls?probe_cc=IR&probe_asn=31549&limit=10"
    pages = []
    while path:
        body = ok(read_backend, path, 3600)
        pages.append(body["metadata"]["current_page"])
        seen += [r["input"] for r in body["results"]]
        nxt = body["metadata"]["next_url"]
        path = nxt.removeprefix("https://api.example.org") if nxt else None
    assert pages == [1, 2, 3]
    assert len(seen) == len(set(seen)) == 24
    assert seen[-1] == "https://www.f-list.net/"


def test_website_urls_limit_and_offset(read_backend):
    base = "/api/_/website_urls?probe_cc=IR&probe_asn=31549"
    body = ok(read_backend, base + "&limit=20&offset=20", 3600)
    assert len(body["results"]) == 4 and body["metadata"]["next_url"] is None
    assert body["metadata"]["current_page"] == 2
    # A full last page has no next page (legacy offered an empty one).
    body = ok(read_backend, base + "&limit=12&offset=12", 3600)
    assert len(body["results"]) == 12 and body["metadata"]["next_url"] is None
    assert ok(read_backend, base + "&limit=0", 3600)["metadata"]["limit"] == 10  # legacy
    body = ok(read_backend, base + "&offset=100", 3600)
    assert body["results"] == [] and body["metadata"]["total_count"] == 24
    body = ok(read_backend, "/api/_/website_urls?probe_cc=XY&probe_asn=1", 3600)
    assert body["results"] == [] and body["metadata"]["total_count"] == 0
    assert body["metadata"]["next_url"] is None


@pytest.mark.parametrize("query", ["probe_cc=IR", "probe_asn=31549", "probe_cc=IR&probe_asn=x",
                                   "probe_cc=IR&probe_asn=1&limit=ten",
                                   "probe_cc=IR&probe_asn=1&limit=100000",
                                   "probe_cc=IR&probe_asn=1&offset=-1"])
def test_website_urls_bad_params(read_backend, query):
    bad(read_backend, "/api/_/website_urls?" + query)


# -- vanilla tor ----------------------------------------------------------------------------

def test_vanilla_tor_stats(read_backend):
    body = ok(read_backend, "/api/_/vanilla_tor_stats?probe_cc=BR", 0)
    # The one BR vanilla_tor measurement failed: not a success (legacy counted it as one).
    assert body == {"networks": [{"probe_asn": 266076, "failure_count": 1, "success_count": 0,
                                  "total_count": 1, "last_tested": YESTERDAY,
                                  "test_runtime_avg": None, "test_runtime_max": None,
                                  "test_runtime_min": None}],
                    "notok_networks": 0, "last_tested": YESTERDAY}
    nets = ok(read_backend, "/api/_/vanilla_tor_stats?probe_cc=GB", 0)["networks"]
    assert [(n["probe_asn"], n["success_count"], n["total_count"]) for n in nets] == [
        (206067, 1, 1)]


def test_vanilla_tor_stats_counts_only_vanilla_tor(read_backend):
    # IT has 30 measurements yesterday, none of them vanilla_tor (legacy listed them: docs/api.md
    # §4 bug 13).
    body = ok(read_backend, "/api/_/vanilla_tor_stats?probe_cc=IT", 0)
    assert body == {"networks": [], "notok_networks": 0, "last_tested": None}


def test_vanilla_tor_stats_empty_and_bad(read_backend):
    body = ok(read_backend, "/api/_/vanilla_tor_stats?probe_cc=XY", 0)
    assert body == {"networks": [], "notok_networks": 0, "last_tested": None}
    bad(read_backend, "/api/_/vanilla_tor_stats")
    bad(read_backend, "/api/_/vanilla_tor_stats?probe_cc=XYZ")


# -- instant messaging ----------------------------------------------------------------------

def test_im_networks(read_backend):
    body = ok(read_backend, "/api/_/im_networks?probe_cc=MY", 3600)
    assert sorted(body) == ["facebook_messenger", "signal", "telegram", "whatsapp"]

    def nets(*asns):
        return [{"asn": a, "name": "", "total_count": 1, "last_tested": YESTERDAY} for a in asns]

    assert body["telegram"] == {"anomaly_networks": [], "ok_networks": nets(4788, 9534),
                                "last_tested": YESTERDAY}
    assert body["signal"]["ok_networks"] == nets(4788)
    assert body["facebook_messenger"]["ok_networks"] == nets(4788, 9534)
    # Only the IM tests present in the data are keys.
    assert sorted(ok(read_backend, "/api/_/im_networks?probe_cc=IR", 3600)) == [
        "facebook_messenger", "whatsapp"]
    assert ok(read_backend, "/api/_/im_networks?probe_cc=XY", 3600) == {}
    bad(read_backend, "/api/_/im_networks?probe_cc=")


def test_im_stats_is_32_zero_filled_days(read_backend):
    body = ok(read_backend, "/api/_/im_stats?probe_cc=MY&probe_asn=4788&test_name=telegram",
              3600)
    results = body["results"]
    assert len(results) == 32
    assert all(set(r) == {"anomaly_count", "test_day", "total_count"} for r in results)
    assert all(r["anomaly_count"] is None and len(r["test_day"]) == 25 for r in results)
    first = TODAY - dt.timedelta(days=31)
    assert [r["test_day"] for r in results] == [
        f"{d}T00:00:00+00:00" for d in days(first, TODAY)]
    assert results[-2] == {"anomaly_count": None, "test_day": f"{YESTERDAY}T00:00:00+00:00",
                           "total_count": 1}
    assert sum(r["total_count"] for r in results) == 1
    # AS-prefixed probe_asn; a network without that test is all zeros.
    body = ok(read_backend, "/api/_/im_stats?probe_cc=MY&probe_asn=AS4788&test_name=telegram",
              3600)
    assert body["results"] == results
    body = ok(read_backend, "/api/_/im_stats?probe_cc=IS&probe_asn=12969&test_name=telegram",
              3600)
    assert len(body["results"]) == 32 and sum(r["total_count"] for r in body["results"]) == 0


@pytest.mark.parametrize("query", ["probe_cc=MY&probe_asn=4788",
                                   "probe_cc=MY&probe_asn=4788&test_name=web_connectivity",
                                   "probe_cc=MY&probe_asn=4788&test_name=undefined",
                                   "probe_asn=4788&test_name=telegram",
                                   "probe_cc=MY&test_name=telegram",
                                   "probe_cc=MY&probe_asn=AS&test_name=telegram"])
def test_im_stats_bad_params(read_backend, query):
    bad(read_backend, "/api/_/im_stats?" + query)


def test_network_stats_is_the_legacy_constant(read_backend):
    want = {"metadata": {"current_page": 1, "limit": 10, "next_url": None, "offset": 0,
                         "total_count": 0},
            "results": []}
    assert ok(read_backend, "/api/_/network_stats?probe_cc=GB", 86400) == want
    assert ok(read_backend, "/api/_/network_stats", 86400) == want
    bad(read_backend, "/api/_/network_stats?probe_cc=GBR")


# -- circumvention --------------------------------------------------------------------------

def test_circumvention_stats_by_country(read_backend):
    body = ok(read_backend, "/api/_/circumvention_stats_by_country", 86400)
    # psiphon, riseupvpn, stunreachability, tor, torsf over the last 6 months (today excluded).
    assert body == {"v": 0, "results": [
        {"probe_cc": "BR", "cnt": 1}, {"probe_cc": "CA", "cnt": 1}, {"probe_cc": "GB", "cnt": 2},
        {"probe_cc": "ID", "cnt": 10}, {"probe_cc": "IS", "cnt": 1},
        {"probe_cc": "IT", "cnt": 10}, {"probe_cc": "LS", "cnt": 1},
        {"probe_cc": "MX", "cnt": 1}, {"probe_cc": "MY", "cnt": 1}, {"probe_cc": "PK", "cnt": 3},
        {"probe_cc": "RO", "cnt": 1}, {"probe_cc": "RU", "cnt": 1},
        {"probe_cc": "SG", "cnt": 10}, {"probe_cc": "US", "cnt": 28}]}


def test_circumvention_runtime_stats_grid(read_backend):
    body = ok(read_backend, "/api/_/circumvention_runtime_stats", 86400)
    assert body["v"] == 0
    results = body["results"]
    tests = ["psiphon", "stunreachability", "tor", "torsf"]
    ccs = ["BR", "CA", "GB", "ID", "IS", "IT", "LS", "MX", "MY", "PK", "RO", "RU", "SG", "US"]
    # The full cartesian grid: 4 tests seen × 14 countries × 1 day, sorted.
    assert [(r["test_name"], r["probe_cc"], r["date"]) for r in results] == [
        (t, cc, YESTERDAY) for t in tests for cc in ccs]
    assert all(set(r) == {"test_name", "probe_cc", "date", "v"} for r in results)
    cells = {(r["test_name"], r["probe_cc"]): r["v"] for r in results}
    assert sum(1 for v in cells.values() if v) == 22
    assert cells[("tor", "BR")] == []
    # [median, 90th percentile, count] of scores.extra.test_runtime (exact, interpolated).
    assert cells[("tor", "US")] == pytest.approx([65.1331523135, 66.9841291654, 4])
    assert cells[("psiphon", "US")] == pytest.approx([5.90937656, 7.3084883172, 5])
    assert cells[("tor", "RU")] == pytest.approx([257.218175169, 257.218175169, 1])
    # Without extra.test_runtime in the scores (STUN, torsf timeouts): the test_runtime column.
    assert cells[("stunreachability", "US")][2] == 18
    assert cells[("stunreachability", "IT")] == pytest.approx(
        [0.0660127, 0.2226505, 9], rel=1e-5)
    assert cells[("torsf", "BR")] == pytest.approx([600.1847, 600.1847, 1], rel=1e-6)
    assert cells[("torsf", "GB")] == pytest.approx([42.920207854, 42.920207854, 1])


def test_routes_are_documented(read_backend):
    status, spec, _ = get(read_backend, "/apispec_1.json")
    assert status == 200
    for name in ("test_coverage", "website_networks", "website_stats", "website_urls",
                 "vanilla_tor_stats", "im_networks", "im_stats", "network_stats",
                 "circumvention_stats_by_country", "circumvention_runtime_stats"):
        assert "get" in spec["paths"][f"/api/_/{name}"], name
