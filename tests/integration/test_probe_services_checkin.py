"""Check-in and URL lists against `oonibackend run`, with the real citizenlab fixture rows and
URL priority rules seeded through the storage layer and picked up by the background snapshot
refresh (1 s in the fixture)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from oonibackend.storage.http import HTTPDatabase
from tests.conftest import FIXTURES, Backend

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
REPORT_ID = re.compile(r"^\d{8}T\d{6}Z_[a-z0-9]+_[A-Z]{2}_\d+_n1_[A-Za-z0-9]{16}$")
V1_TESTS = {
    "bridge_reachability", "dash", "dns_consistency", "dnscheck", "facebook_messenger",
    "http_header_field_manipulation", "http_host", "http_invalid_request_line", "http_requests",
    "meek_fronted_requests_test", "multi_protocol_traceroute", "ndt", "psiphon", "riseupvpn",
    "tcp_connect", "telegram", "tor", "urlgetter", "vanilla_tor", "web_connectivity", "whatsapp",
}
US_IP = {"X-Forwarded-For": "192.33.4.12"}
# A VE list URL used by the rule and counter tests (from citizenlab_rows.sql).
VE = "VE"


def fixture_rows() -> list[dict[str, str]]:
    """citizenlab_rows.sql as dicts (one INSERT per line, four quoted values)."""
    rows = []
    value = re.compile(r"'((?:[^'\\]|\\.)*)'")
    for line in (FIXTURES / "citizenlab_rows.sql").read_text().splitlines():
        if not line.startswith("INSERT"):
            continue
        values = value.findall(line.split("VALUES", 1)[1])
        domain, url, cc, cat = (v.replace("\\'", "'").replace("\\\\", "\\") for v in values)
        rows.append({"domain": domain, "url": url, "cc": cc, "category_code": cat})
    return rows


def db_for(backend: Backend) -> HTTPDatabase:
    return HTTPDatabase(backend.cfg())


@pytest.fixture(scope="module")
def seeded(backend: Backend) -> list[dict[str, str]]:
    """Insert the fixture rows and rules once (idempotent under FINAL / net signs)."""
    rows = fixture_rows()
    rules = json.loads((FIXTURES / "url_priorities_us.json").read_text())

    async def seed() -> None:
        db = db_for(backend)
        try:
            await db.insert("citizenlab", rows, columns=["domain", "url", "cc", "category_code"])
            await db.insert("url_priorities", [dict(r, sign=1) for r in rules],
                            columns=["sign", "category_code", "cc", "domain", "url", "priority"])
        finally:
            await db.close()

    asyncio.run(seed())
    return rows


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=backend.url) as s:
        yield s


async def checkin(client, body=None, headers=None, path="/api/v1/check-in") -> dict:
    async with client.post(path, json=body if body is not None else {},
                           headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"] == "no-cache"  # exactly, as OONI's service
        return await r.json()


async def eventually(fn: Callable, timeout: float = 20.0):
    """Poll an async predicate returning a truthy value (the snapshot refreshes every 1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await fn()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.25)


async def wait_for_seed(client) -> None:
    async def ready():
        data = await checkin(client, {"probe_cc": "US", "probe_asn": "AS2149"})
        return len(data["tests"]["web_connectivity"]["urls"]) >= 100

    assert await eventually(ready), "snapshot never picked up the seeded rows"


async def test_checkin_geolocates_the_caller(client, seeded):
    data = await checkin(client, {}, US_IP)
    assert data["v"] == 1
    assert (data["probe_cc"], data["probe_asn"]) == ("US", "AS2149")
    assert data["probe_network_name"] == "CAIDA / PSGnet"
    t = dt.datetime.strptime(data["utc_time"], RFC3339).replace(tzinfo=dt.UTC)
    assert abs((t - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    # OONI's current flags (docs/current_services.md §7): LTE for every probe, no vanilla_tor.
    features = data["conf"]["features"]
    assert features == {"torsf_enabled": False, "vanilla_tor_enabled": False,
                        "openvpn_enabled": False, "webconnectivity_0.5": True}
    assert set(data["conf"]["test_helpers"]) >= {"web-connectivity", "dns"}
    assert set(data["tests"]) == V1_TESTS
    for name, test in data["tests"].items():
        assert REPORT_ID.match(test["report_id"]), test
        assert "_US_2149_" in test["report_id"]  # probe declared nothing: geolocated values
        assert test["report_id"].split("_")[1] == name.replace("_", "")
    assert isinstance(data["tests"]["web_connectivity"]["urls"], list)


async def test_every_probe_gets_the_same_flags(client, seeded):
    """No canary by address or version: old, new and unknown probes alike (§7)."""
    seen = []
    for body, headers in (({"software_name": "ooniprobe-android", "software_version": "3.7.0"},
                           {"X-Forwarded-For": "5.34.1.1"}),
                          ({"software_name": "ooniprobe-cli", "software_version": "3.24.0"},
                           US_IP), ({}, {"X-Forwarded-For": "8.8.8.8"})):
        for path in ("/api/v1/check-in", "/api/_/check-in"):
            seen.append((await checkin(client, body, headers, path))["conf"]["features"])
    assert all(f == seen[0] for f in seen) and seen[0]["webconnectivity_0.5"] is True


async def test_checkin_declared_location_wins_for_ids(client, seeded):
    data = await checkin(client, {"probe_cc": "it", "probe_asn": "AS12874"}, US_IP)
    # The response reports the looked-up location; ids and URLs use the declared one.
    assert (data["probe_cc"], data["probe_asn"]) == ("US", "AS2149")
    assert "_IT_12874_" in data["tests"]["ndt"]["report_id"]
    # Unknown address: ZZ / AS0 / null.
    data = await checkin(client, {}, {"X-Forwarded-For": "8.8.8.8"})
    assert (data["probe_cc"], data["probe_asn"], data["probe_network_name"]) == (
        "ZZ", "AS0", None)
    assert "_ZZ_0_" in data["tests"]["ndt"]["report_id"]
    # IPv4-mapped IPv6 from the proxy header.
    data = await checkin(client, {}, {"X-Real-IP": "::ffff:5.5.5.5"})
    assert data["probe_cc"] == "IT"


async def test_checkin_url_limits_and_categories(client, seeded):
    await wait_for_seed(client)
    base = {"probe_cc": "US", "probe_asn": "AS2149", "platform": "linux",
            "software_name": "ooniprobe", "software_version": "3.20", "on_wifi": True}
    timed = (await checkin(client, base))["tests"]["web_connectivity"]["urls"]
    assert len(timed) == 100  # charging defaults to true
    assert all(set(u) == {"category_code", "url", "country_code"} for u in timed)
    battery = (await checkin(client, dict(base, charging=False)))["tests"]
    assert len(battery["web_connectivity"]["urls"]) == 20
    battery = (await checkin(client, dict(base, charging=0)))["tests"]  # old probes: 0 / 1
    assert len(battery["web_connectivity"]["urls"]) == 20
    manual = (await checkin(client, dict(base, run_type="manual")))["tests"]
    manual_urls = manual["web_connectivity"]["urls"]
    assert len(manual_urls) > 100
    # The US rule MISC -200 outweighs MISC +20: no MISC URL for US probes.
    assert not [u for u in manual_urls if u["category_code"] == "MISC"]
    assert {u["country_code"] for u in manual_urls} <= {"XX", "US"}
    news = await checkin(client, dict(base, web_connectivity={"category_codes": ["news", "GRP"]}))
    cats = {u["category_code"] for u in news["tests"]["web_connectivity"]["urls"]}
    assert cats and cats <= {"NEWS", "GRP"}  # codes are upper-cased
    # Comma-separated string form.
    news = await checkin(client, dict(base, web_connectivity={"category_codes": "HUMR"}))
    assert {u["category_code"] for u in news["tests"]["web_connectivity"]["urls"]} == {"HUMR"}


async def test_checkin_country_list(client, seeded):
    await wait_for_seed(client)
    ve_urls = {r["url"] for r in seeded if r["cc"] == "ve"}
    data = await checkin(client, {"probe_cc": VE, "probe_asn": "AS8048", "run_type": "manual"})
    urls = data["tests"]["web_connectivity"]["urls"]
    ve = [u for u in urls if u["country_code"] == "VE"]
    assert {u["url"] for u in ve} == ve_urls
    assert "_VE_8048_" in data["tests"]["web_connectivity"]["report_id"]


async def test_rules_are_net_and_case_insensitive(client, seeded, backend):
    """A rule stored with a lowercase cc reaches the probe; a deleted rule stops counting."""
    await wait_for_seed(client)
    data = await checkin(client, {"probe_cc": VE, "probe_asn": "AS8048", "run_type": "manual"})
    urls = data["tests"]["web_connectivity"]["urls"]
    last_ve = [u["url"] for u in urls if u["country_code"] == "VE"][-1]
    assert urls[0]["url"] != last_ve
    target = next(r for r in seeded if r["cc"] == "ve" and r["url"] == last_ve)
    rule = {"category_code": "*", "cc": "ve", "domain": target["domain"], "url": target["url"],
            "priority": 100000}
    db = db_for(backend)

    async def first_is_target() -> bool:
        data = await checkin(client, {"probe_cc": VE, "probe_asn": "AS8048"})
        return data["tests"]["web_connectivity"]["urls"][0]["url"] == target["url"]

    try:
        await db.insert("url_priorities", [dict(rule, sign=1)])
        assert await eventually(first_is_target)
        await db.insert("url_priorities", [dict(rule, sign=-1)])  # delete, not merged yet

        async def gone() -> bool:
            return not await first_is_target()

        assert await eventually(gone)
    finally:
        await db.close()


async def test_counters_order_per_network(client, seeded, backend):
    """Measurement counts of the last two weeks push a URL down, for its network only."""
    await wait_for_seed(client)
    cat = next(r["category_code"] for r in seeded if r["cc"] == "ve")

    async def urls_for(asn: str) -> list[str]:
        data = await checkin(client, {"probe_cc": VE, "probe_asn": asn, "run_type": "manual",
                                      "web_connectivity": {"category_codes": [cat]}})
        return [u["url"] for u in data["tests"]["web_connectivity"]["urls"]]

    before = await urls_for("AS64999")
    assert len(set(before)) >= 2
    busy = before[0]
    db = db_for(backend)
    try:
        await db.insert("counters_asn_test_list", [
            {"week": dt.datetime.now(dt.UTC).replace(tzinfo=None), "probe_cc": VE,
             "probe_asn": 64999, "input": busy, "msmt_cnt": 10**6}])
    finally:
        await db.close()

    async def busy_is_last() -> bool:
        return (await urls_for("AS64999"))[-1] == busy

    assert await eventually(busy_is_last)
    assert (await urls_for("AS64998"))[0] == busy  # other networks are not affected


async def test_test_list_urls(client, seeded):
    await wait_for_seed(client)
    async with client.get("/api/v1/test-list/urls",
                          params={"country_code": "us", "limit": "5",
                                  "category_codes": "news,GRP"}) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "max-age=1"
        data = await r.json()
    assert data["metadata"] == {"count": 5, "current_page": -1, "limit": -1, "next_url": "",
                                "pages": 1}
    assert len(data["results"]) == 5
    assert {u["category_code"] for u in data["results"]} <= {"NEWS", "GRP"}
    async with client.get("/api/v1/test-list/urls", params={"probe_cc": "US",
                                                             "debug": "true"}) as r:
        data = await r.json()
    assert data["metadata"]["count"] == len(data["results"]) > 100
    first = data["results"][0]
    assert {"msmt_cnt", "priority", "weight"} <= set(first)
    weights = [u["weight"] for u in data["results"]]
    assert weights == sorted(weights, reverse=True)
    async with client.get("/api/v1/test-list/urls", params={"limit": "0"}) as r:
        data = await r.json()
    assert r.status == 200 and data["results"] == []  # fixed: legacy returned one item


async def test_debug_prioritization(client, seeded):
    await wait_for_seed(client)
    async with client.get("/api/_/debug_prioritization",
                          params={"probe_cc": "VE", "probe_asn": "AS8048"}) as r:
        assert r.status == 200
        data = await r.json()
    assert set(data) == {"test_items", "entries", "prio_rules"}
    assert len(data["test_items"]) > 1  # fixed: the legacy default limit gave one item
    assert {e["cc"] for e in data["entries"]} >= {"ZZ", "ve"}
    assert all(r["cc"] in ("*", "", "VE", "ve") for r in data["prio_rules"])


async def test_private_checkin(client, seeded):
    await wait_for_seed(client)
    data = await checkin(client, {"probe_cc": "US", "probe_asn": "AS2149", "charging": False},
                         US_IP, path="/api/_/check-in")
    assert data["v"] == 2 and data["probe_cc"] == "US"
    assert data["conf"]["features"]["webconnectivity_0.5"] is True  # no canary any more
    nettests = {n["test_name"]: n for n in data["nettests"]}
    assert len(nettests) == 33 and V1_TESTS <= set(nettests)
    wc = nettests["web_connectivity"]["targets"]
    assert len(wc) == 20
    assert set(wc[0]) == {"attributes", "input", "options"}
    assert set(wc[0]["attributes"]) == {"category_code", "country_code"}
    assert nettests["dnscheck"]["targets"][0]["input"] == "https://dns.google/dns-query"
    assert len(nettests["dnscheck"]["targets"]) == 42
    assert nettests["stunreachability"]["targets"][0]["input"] == (
        "stun://stun.voip.blackberry.com:3478")
    assert len(nettests["stunreachability"]["targets"]) == 10
    assert nettests["ndt"]["targets"] == []
    assert all(REPORT_ID.match(n["report_id"]) for n in data["nettests"])


@pytest.mark.parametrize("body", [
    {"probe_cc": "USA"}, {"probe_cc": 1}, {"probe_cc": "U1"}, {"probe_asn": "2149"},
    {"probe_asn": "ASX"}, {"probe_asn": 2149}, {"probe_asn": "AS99999999999"},
    {"web_connectivity": {"category_codes": ["NE WS"]}},
    {"web_connectivity": {"category_codes": "NEWS,1"}},
    {"web_connectivity": {"category_codes": {"a": 1}}}, {"web_connectivity": "NEWS"},
    {"charging": "yes"}, {"run_type": ["manual"]},
])
@pytest.mark.parametrize("path", ["/api/v1/check-in", "/api/_/check-in"])
async def test_checkin_bad_input_is_400(client, body, path):
    async with client.post(path, json=body) as r:
        assert r.status == 400, (body, await r.text())
        assert isinstance((await r.json())["error"], str)


async def test_checkin_any_content_type(client):
    async with client.post("/api/v1/check-in", data=b'{"probe_cc": "IT"}',
                           headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200
    async with client.post("/api/v1/check-in", data=b"not json") as r:
        assert r.status == 400 and (await r.json()) == {"error": "JSON expected"}


async def test_checkin_without_database(serve_factory, fastpath_port):
    """The database is down (no owner): check-in still answers, with an empty URL list."""
    b = serve_factory(fastpath_port, probe={"jwt_secret": "x" * 32})
    b.start()
    async with aiohttp.ClientSession(base_url=b.url) as c:
        data = await checkin(c, {"probe_cc": "IT", "probe_asn": "AS1"})
        assert data["tests"]["web_connectivity"]["urls"] == []
        assert set(data["tests"]) == V1_TESTS
        async with c.get("/api/v1/test-list/urls") as r:
            assert r.status == 200 and (await r.json())["results"] == []
