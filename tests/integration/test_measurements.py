"""GET /api/v1/measurements against the real server and the real fixture rows (`read_backend`),
with Explorer's own query strings (docs/clients.md Explorer §1b) and legacy's behaviours
(docs/api.md §2.7).

Expected numbers were computed once with independent SQL on the fixture (tests/readdata.py):
the 999 rows of 2024-01-01 (808 not failed) are also the "recent copy" on RECENT_DAY, so the
same counts hold for Explorer's default 30-day window. Uids of the recent copy are the
fixture's with the date prefix rewritten: RECENT_DAY's `YYYYMMDD` + the fixture uid's tail.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from oonibackend import config
from oonibackend.storage.http import HTTPDatabase
from tests.conftest import Backend
from tests.readdata import RECENT_DAY

BASE = "https://api.example.org/"
TODAY = RECENT_DAY + dt.timedelta(days=1)
EXPLORER_SINCE = (TODAY - dt.timedelta(days=30)).isoformat()
EXPLORER_UNTIL = (TODAY + dt.timedelta(days=1)).isoformat()
RECENT = RECENT_DAY.strftime("%Y%m%d")
FIXTURE_DAY = "since=2023-12-31&until=2024-01-02"   # the 999 rows of 2024-01-01
ITEM_KEYS = {"measurement_uid", "measurement_url", "report_id", "probe_cc", "probe_asn",
             "test_name", "measurement_start_time", "input", "anomaly", "confirmed",
             "failure", "scores", "verification_status"}
META_KEYS = {"offset", "limit", "count", "pages", "current_page", "next_url", "query_time"}


def fetch(backend: Backend, path: str, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(backend.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"].startswith("application/json"), e.headers
        return e.code, dict(e.headers), json.loads(e.read())


def listing(backend: Backend, query: str, headers: dict[str, str] | None = None
            ) -> dict[str, Any]:
    status, h, body = fetch(backend, "/api/v1/measurements?" + query, headers)
    assert status == 200, body
    assert h["Cache-Control"] == "max-age=60"
    assert set(body) == {"metadata", "results"} and set(body["metadata"]) == META_KEYS
    return body


def count(backend: Backend, query: str) -> int:
    """Number of matching rows, from a single page of up to 100 (count is known then)."""
    meta = listing(backend, "limit=100&" + query)["metadata"]
    assert meta["next_url"] is None, "more than 100 rows: choose a narrower query"
    return meta["count"]


def follow(backend: Backend, first: str) -> Iterator[dict[str, Any]]:
    """Every page of a listing, following the absolute next_url like Explorer's Load more."""
    body = listing(backend, first)
    while True:
        yield body
        nxt = body["metadata"]["next_url"]
        if nxt is None:
            return
        assert nxt.startswith(BASE + "api/v1/measurements?")
        body = listing(backend, nxt[len(BASE + "api/v1/measurements?"):])


def descending(results: list[dict[str, Any]]) -> bool:
    times = [r["measurement_start_time"] for r in results]
    return times == sorted(times, reverse=True)


# ---- Explorer's calls ---------------------------------------------------------------------------


def test_search_page_defaults_page_through_next_url(read_backend):
    """/search: limit=50, failure=false, order=desc and the 30-day window, then Load more
    until next_url is null: every non-failed recent measurement exactly once, newest first."""
    q = f"limit=50&failure=false&order=desc&since={EXPLORER_SINCE}&until={EXPLORER_UNTIL}"
    pages = list(follow(read_backend, q))
    assert len(pages) == 17
    first = pages[0]["metadata"]
    assert first == {"offset": 0, "limit": 50, "count": -1, "pages": -1, "current_page": 1,
                     "query_time": first["query_time"],
                     "next_url": f"{BASE}api/v1/measurements?limit=50&failure=false&order=desc"
                                 f"&since={EXPLORER_SINCE}&until={EXPLORER_UNTIL}&offset=50"}
    assert isinstance(first["query_time"], float)
    last = pages[-1]["metadata"]
    assert (last["offset"], last["count"], last["pages"], last["current_page"],
            last["next_url"]) == (800, 808, 17, 17, None)
    results = [r for p in pages for r in p["results"]]
    assert len(results) == 808 and len({r["measurement_uid"] for r in results}) == 808
    assert descending(results)
    assert all(r["failure"] is False and r["measurement_uid"].startswith(RECENT)
               for r in results)


def test_search_without_dates_defaults_to_the_last_30_days(read_backend):
    explicit = listing(read_backend, f"limit=50&failure=false&order=desc&since={EXPLORER_SINCE}"
                                     f"&until={EXPLORER_UNTIL}")["results"]
    default = listing(read_backend, "limit=50&failure=false&order=desc")["results"]
    assert default == explicit


def test_search_result_items_have_explorer_types(read_backend):
    body = listing(read_backend, "limit=50&order=desc&test_name=dnscheck,tor,whatsapp")
    for r in body["results"]:
        assert set(r) == ITEM_KEYS
        assert r["probe_asn"].startswith("AS") and r["probe_asn"][2:].isdigit()
        assert isinstance(r["scores"], dict) and "blocking_general" in r["scores"]
        assert all(isinstance(r[k], bool) for k in ("anomaly", "confirmed", "failure"))
        assert r["measurement_start_time"].endswith("Z") and "T" in r["measurement_start_time"]
        assert r["measurement_url"] == (f"{BASE}api/v1/raw_measurement?measurement_uid="
                                        f"{r['measurement_uid']}")
    # tor measurements have no input: null, not ""
    tor = listing(read_backend, "test_name=tor")["results"]
    assert [r["input"] for r in tor] == [None] * 10


def test_one_measurement_by_report_id_and_input(read_backend):
    """Legacy test_list_measurements_one: with a report id the window is unbounded."""
    body = listing(read_backend, "report_id=20210709T004340Z_webconnectivity_MY_4818_n1_"
                                 "YCM7J9mGcEHds2K3&input=https://www.backtrack-linux.org/")
    assert body["metadata"]["count"] == 1
    assert body["results"] == [{
        "measurement_uid": "20210709005529.664022_MY_webconnectivity_68e5bea1060d1874",
        "measurement_url": f"{BASE}api/v1/raw_measurement?measurement_uid="
                           "20210709005529.664022_MY_webconnectivity_68e5bea1060d1874",
        "report_id": "20210709T004340Z_webconnectivity_MY_4818_n1_YCM7J9mGcEHds2K3",
        "probe_cc": "MY",
        "probe_asn": "AS4818",
        "test_name": "web_connectivity",
        "measurement_start_time": "2025-07-09T00:55:13Z",
        "input": "https://www.backtrack-linux.org/",
        "anomaly": True,
        "confirmed": False,
        "failure": False,
        "scores": {"blocking_general": 1.0, "blocking_global": 0.0, "blocking_country": 0.0,
                   "blocking_isp": 0.0, "blocking_local": 0.0,
                   "analysis": {"blocking_type": "http-failure"}},
        "verification_status": "unverified",
    }]


def test_country_page_recent_box(read_backend):
    body = listing(read_backend, "limit=5&failure=false&order=desc&probe_cc=US")
    assert [r["measurement_uid"] for r in body["results"]] == [RECENT + tail for tail in (
        "000103.593432_US_webconnectivity_7086f7c35b387896",
        "000207.587218_US_tor_d5b33b34d51a98c1",
        "000101.926840_US_httpheaderfieldmanipulation_2097f1508df206e8",
        "000102.634963_US_webconnectivity_85a6b6fd25909c2e",
        "000101.185547_US_webconnectivity_81385e5dda9294a3")]
    assert body["metadata"]["count"] == -1 and body["metadata"]["next_url"]


def test_network_page_recent_box_with_as_prefix(read_backend):
    body = listing(read_backend, "limit=5&failure=false&order=desc&probe_asn=AS13030")
    assert [r["measurement_uid"] for r in body["results"]] == [RECENT + tail for tail in (
        "000102.129768_CH_webconnectivity_e8a721de4a45aa4d",
        "000100.863750_CH_webconnectivity_61087b1053dc9e8d",
        "000059.281320_CH_webconnectivity_97b1a2733886e91b",
        "000058.538072_CH_webconnectivity_a91e8c2ae599055e",
        "000057.129011_CH_webconnectivity_5ac4ee2785192218")]
    assert {r["probe_asn"] for r in body["results"]} == {"AS13030"}
    # the bare number means the same network
    same = listing(read_backend, "limit=5&failure=false&order=desc&probe_asn=13030")
    assert same["results"] == body["results"]


def test_domain_page_boxes(read_backend):
    eager = listing(read_backend, "limit=5&failure=false&order=desc&domain=twitter.com")
    assert len(eager["results"]) == 5
    assert {r["input"] for r in eager["results"]} <= {"https://twitter.com/",
                                                      "http://twitter.com/"}
    lazy = listing(read_backend, f"limit=5&failure=false&order=desc&domain=twitter.com"
                                 f"&since={EXPLORER_SINCE}&until={EXPLORER_UNTIL}&probe_cc=AE")
    assert len(lazy["results"]) == 5 and {r["probe_cc"] for r in lazy["results"]} == {"AE"}
    assert descending(lazy["results"])
    # a full page may be followed by more: here the next one is empty and settles the count
    nxt = lazy["metadata"]["next_url"]
    end = listing(read_backend, nxt.split("?", 1)[1])
    assert end["results"] == [] and end["metadata"]["count"] == 5


def test_explorer_empty_and_undefined_values_are_absent(read_backend):
    a = listing(read_backend, "limit=5&failure=false&order=desc&probe_cc=&probe_asn=&domain="
                              "&since=undefined&until=undefined&test_name=&only=anomalies")
    b = listing(read_backend, "limit=5&failure=false&order=desc")
    assert a["results"] == b["results"]


# ---- every filter -------------------------------------------------------------------------------


@pytest.mark.parametrize("query,expected", [
    ("probe_cc=IT", 30),
    ("probe_cc=IT,CH", 64),
    ("probe_cc=it", 30),
    ("probe_asn=AS13030", 34),
    ("probe_asn=AS13030,AS21928", 63),
    ("test_name=signal,telegram", 25),
    ("test_name=signal", 12),
    ("domain=twitter.com", 15),
    ("input=https://twitter.com/", 10),
    # 93 measurements; legacy's INNER JOIN listed 101 rows (URLs on several test lists)
    ("category_code=NEWS", 93),
    ("anomaly=true&confirmed=true", 18),
    ("anomaly=true&confirmed=false&failure=false", 61),
    ("confirmed=true&failure=true", 1),
    ("software_version=3.19.2", 46),
    ("software_version=3.19.2,3.7.0", 69),
    ("software_version=9.9.9", 0),
    ("test_version=0.4.1", 26),
    ("engine_version=3.18.1,3.15.2", 60),
    ("ooni_run_link_id=1234", 0),
    ("test_name=BOGUS1234", 0),
])
def test_filter(read_backend, query, expected):
    assert count(read_backend, f"{FIXTURE_DAY}&{query}") == expected


def test_filters_also_hold_on_the_recent_copy(read_backend):
    assert count(read_backend, "probe_cc=IT,CH&category_code=NEWS") == \
        count(read_backend, f"{FIXTURE_DAY}&probe_cc=IT,CH&category_code=NEWS") == 6


def test_category_code_lists_each_measurement_once(read_backend):
    body = listing(read_backend, f"{FIXTURE_DAY}&category_code=NEWS&limit=100")
    uids = [r["measurement_uid"] for r in body["results"]]
    assert len(uids) == len(set(uids)) == 93


def test_failure_true_fills_pages(read_backend):
    body = listing(read_backend, f"{FIXTURE_DAY}&failure=true&limit=100")
    assert len(body["results"]) == 100 and body["metadata"]["count"] == -1
    assert all(r["failure"] for r in body["results"])
    rest = listing(read_backend, f"{FIXTURE_DAY}&failure=true&limit=100&offset=100")
    assert rest["metadata"]["count"] == 191 and rest["metadata"]["pages"] == 2
    assert rest["metadata"]["current_page"] == 2 and rest["metadata"]["next_url"] is None


def test_report_id_without_dates_is_unbounded(read_backend):
    rid = "20231231T233652Z_webconnectivity_CH_13030_n1_DMCuSzN5jdVxe1kB"
    assert count(read_backend, f"report_id={rid}") == 34
    assert count(read_backend, f"report_id={rid}&since=2024-01-01T00:00:30Z") == 22
    assert count(read_backend, f"report_id={rid}&until=2023-12-31") == 0


def test_since_is_exclusive_and_until_inclusive(read_backend):
    assert count(read_backend, "since=2024-01-01T00:01:01Z&until=2024-01-01T00:01:02Z") == 15
    assert count(read_backend, "since=2024-01-01T00:01:00Z&until=2024-01-01T00:01:01Z") == 24
    assert count(read_backend, "since=2024-01-01%2000:01:01&until=2024-01-01T01:01:02%2B01:00") == 15


def test_order_and_order_by(read_backend):
    asc = listing(read_backend, f"{FIXTURE_DAY}&order=ASC&limit=10")["results"]
    times = [r["measurement_start_time"] for r in asc]
    assert times == sorted(times) and times[0] == "2024-01-01T00:00:01Z"
    by_cc = listing(read_backend, f"{FIXTURE_DAY}&order_by=probe_cc&order=asc&limit=100"
                                  f"&probe_cc=CH,IT")["results"]
    assert [r["probe_cc"] for r in by_cc] == ["CH"] * 34 + ["IT"] * 30
    within = [r["measurement_start_time"] for r in by_cc[:34]]
    assert within == sorted(within)  # the time breaks ties, in the same direction
    desc = listing(read_backend, f"{FIXTURE_DAY}&order_by=probe_asn&limit=3")["results"]
    assert [int(r["probe_asn"][2:]) for r in desc] == sorted(
        (int(r["probe_asn"][2:]) for r in desc), reverse=True)


def test_offset_pages_do_not_overlap(read_backend):
    q = f"{FIXTURE_DAY}&probe_cc=US&limit=7"
    pages = [listing(read_backend, f"{q}&offset={o}")["results"] for o in (0, 7, 14)]
    uids = [r["measurement_uid"] for p in pages for r in p]
    assert len(uids) == 21 and len(set(uids)) == 21
    whole = listing(read_backend, f"{FIXTURE_DAY}&probe_cc=US&limit=21")["results"]
    assert [r["measurement_uid"] for r in whole] == uids


def test_page_metadata_rules(read_backend):
    q = f"{FIXTURE_DAY}&probe_cc=IT"
    assert listing(read_backend, f"{q}&limit=10&offset=25")["metadata"] == {
        "offset": 25, "limit": 10, "count": 30, "pages": 3, "current_page": 4,
        "next_url": None, "query_time": pytest.approx(0, abs=30)}
    empty = listing(read_backend, "test_name=BOGUS1234")
    assert empty["results"] == [] and {k: v for k, v in empty["metadata"].items()
                                       if k != "query_time"} == {
        "offset": 0, "limit": 100, "count": 0, "pages": 0, "current_page": 1,
        "next_url": None}
    # offset and limit keep their position in next_url; unknown arguments are carried along
    full = listing(read_backend, f"offset=0&{q}&limit=10&data=x")["metadata"]
    assert full["next_url"] == (f"{BASE}api/v1/measurements?offset=10&since=2023-12-31&"
                                f"until=2024-01-02&probe_cc=IT&limit=10&data=x")


# ---- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "limit=101", "limit=0", "limit=-1", "limit=ten", "offset=-1", "offset=x",
    "order=sideways", "order_by=scores", "since=yesterday", "until=2024-13-01",
    "probe_cc=ITA", "probe_asn=ASX", "test_name=web%20connectivity", "report_id=bad!",
    "anomaly=maybe", "ooni_run_link_id=x", "category_code=news1",
])
def test_bad_parameters_are_400_json(read_backend, query):
    status, headers, body = fetch(read_backend, "/api/v1/measurements?" + query)
    assert status == 400 and set(body) == {"error"} and body["error"]
    assert headers["Cache-Control"] == "no-cache"


def test_limit_message_is_legacys(read_backend):
    assert fetch(read_backend, "/api/v1/measurements?limit=101")[2] == {
        "error": "`limit` is only allowed up to 100"}


@pytest.mark.parametrize("query", ["probe_cc=ZZ", "probe_asn=AS0", "probe_asn=0",
                                   "probe_cc=IT,ZZ", "probe_asn=AS3269,AS0"])
def test_unknown_country_or_network_is_403(read_backend, query):
    status, _, body = fetch(read_backend, "/api/v1/measurements?" + query)
    assert status == 403 and "error" in body


def test_okhttp_probes_get_the_legacy_placeholder(read_backend):
    status, headers, body = fetch(read_backend, "/api/v1/measurements?probe_cc=IT",
                                  {"User-Agent": "okhttp/3.12.1"})
    assert status == 200 and headers["Cache-Control"] == "max-age=0, no-cache"
    assert body == {"metadata": {"count": 1, "current_page": 1, "limit": 100,
                                 "next_url": None, "offset": 0, "pages": 1,
                                 "query_time": 0.001},
                    "results": [{"measurement_url": ""}]}
    # parameters are validated first
    assert fetch(read_backend, "/api/v1/measurements?limit=500",
                 {"User-Agent": "okhttp/3.12.1"})[0] == 400


def test_search_urls_with_unsafe_characters_are_just_strings(read_backend):
    for v in ("'", "\\", "x' OR '1'='1", "%00", "é"):
        q = urllib.parse.urlencode({"input": v, "domain": v, "software_version": v})
        assert listing(read_backend, q)["results"] == []


# ---- duplicates of the ReplacingMergeTree --------------------------------------------------------


@pytest.fixture(scope="module")
def writable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A backend of this module's own, for tests that write rows."""
    b = Backend(tmp_path_factory.mktemp("measurements-rw"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "server": {"base_url": BASE}}).start()
    yield b
    b.stop()


def fastpath_row(uid: str, t: str, anomaly: str, **extra: Any) -> dict[str, Any]:
    when = dt.datetime.fromisoformat(t)
    return {"measurement_uid": uid, "report_id": f"{uid[:8]}T000000Z_webconnectivity_IT_3269_n1_"
                                                  "abcdefghijklmnop",
            "input": "https://example.org/", "probe_cc": "IT", "probe_asn": 3269,
            "test_name": "web_connectivity", "test_start_time": when,
            "measurement_start_time": when, "anomaly": anomaly, "confirmed": "f",
            "msm_failure": "f", "scores": '{"blocking_general":%s}' % (
                1.0 if anomaly == "t" else 0.0), "domain": "example.org", **extra}


async def test_listing_shows_only_the_current_version(writable):
    """A re-scored measurement exists twice until merged: listed once, with its current
    flags, and a flag filter sees only the current version; a re-delivered one (identical
    copy) is listed once too. Merges are stopped so the copies really are there."""
    db = HTTPDatabase(config.load(str(writable.config), data_dir=str(writable.data_dir)))
    try:
        await db.execute("SYSTEM STOP MERGES fastpath")
        rescored = "20240301120000.000001_IT_webconnectivity_00000000000000aa"
        resent = "20240301120001.000001_IT_webconnectivity_00000000000000bb"
        other = "20240301120002.000001_IT_webconnectivity_00000000000000cc"
        await db.insert("fastpath", [fastpath_row(rescored, "2024-03-01T11:59:00", "t"),
                                     fastpath_row(resent, "2024-03-01T11:59:30", "t"),
                                     fastpath_row(other, "2024-03-01T11:59:50", "f")])
        await db.insert("fastpath", [fastpath_row(rescored, "2024-03-01T11:59:00", "f")])
        await db.insert("fastpath", [fastpath_row(resent, "2024-03-01T11:59:30", "t")])
        raw = await db.query("SELECT measurement_uid FROM fastpath")
        assert len(raw) == 5  # the copies are physically there
    finally:
        await db.close()
    window = "since=2024-03-01&until=2024-03-02"
    body = listing(writable, window)
    assert [(r["measurement_uid"], r["anomaly"]) for r in body["results"]] == [
        (other, False), (resent, True), (rescored, False)]
    assert body["metadata"]["count"] == 3
    assert [r["measurement_uid"] for r in listing(writable, window + "&anomaly=true")[
        "results"]] == [resent]
    assert [r["measurement_uid"] for r in listing(writable, window + "&anomaly=false")[
        "results"]] == [other, rescored]
    # paging over the duplicates neither repeats nor skips
    pages = list(follow(writable, window + "&limit=1"))
    assert [r["measurement_uid"] for p in pages for r in p["results"]] == [
        other, resent, rescored]


# ---- links without server.base_url ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hostless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A backend without server.base_url (the default): links follow the request's host."""
    b = Backend(tmp_path_factory.mktemp("measurements-hostless"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False}}).start()
    yield b
    b.stop()


async def test_links_follow_the_request_host_without_base_url(hostless):
    """Two rows of yesterday (in the default 30-day window): limit=1 gives a next_url and a
    measurement_url, both on the host the client asked, or the trusted proxy forwarded."""
    day = RECENT_DAY.strftime("%Y%m%d")
    rows = [fastpath_row(f"{day}120000.000001_IT_webconnectivity_00000000000000d{i}",
                         f"{RECENT_DAY.isoformat()}T11:59:0{i}", "f",
                         input=f"https://example{i}.org/", domain=f"example{i}.org")
            for i in (1, 2)]
    db = HTTPDatabase(config.load(str(hostless.config), data_dir=str(hostless.data_dir)))
    try:
        await db.insert("fastpath", rows)
    finally:
        await db.close()

    def links(headers: dict[str, str]) -> list[str]:
        body = listing(hostless, "limit=1", headers)
        return [body["metadata"]["next_url"], body["results"][0]["measurement_url"]]

    nxt, msm = links({"Host": "probe.example.net:8080"})
    assert nxt.startswith("http://probe.example.net:8080/api/v1/measurements?")
    assert msm.startswith("http://probe.example.net:8080/api/v1/raw_measurement?")
    # the test client is on loopback, a trusted proxy by default
    for url in links({"Host": "127.0.0.1", "X-Forwarded-Host": "api.example.net",
                      "X-Forwarded-Proto": "https"}):
        assert url.startswith("https://api.example.net/"), url
    # a Host that is not a plain host[:port] gives the listen address, never a 500
    for url in links({"Host": "evil.example/x?"}):
        assert url.startswith(f"http://127.0.0.1:{urllib.parse.urlsplit(hostless.url).port}/")

    # the other absolute links: website_urls' next_url and the detector feed's self link
    status, _, body = fetch(hostless, "/api/_/website_urls?probe_cc=IT&probe_asn=AS3269"
                                      "&limit=1", {"Host": "probe.example.net:8080"})
    assert status == 200, body
    assert body["metadata"]["next_url"].startswith(
        "http://probe.example.net:8080/api/_/website_urls?")
    req = urllib.request.Request(hostless.url + "/api/v1/detector/events?format=atom",
                                 headers={"Host": "probe.example.net:8080"})
    with urllib.request.urlopen(req, timeout=30) as r:
        atom = r.read().decode()
    assert 'href="http://probe.example.net:8080/api/v1/detector/events?format=atom"' in atom
