"""Probe services over real sockets against `oonibackend run`: discovery, auth, config files,
geolookup, and bad input everywhere (always a 4xx JSON error, never a 500)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.conftest import FIXTURES, Backend

SECRET = "x" * 32
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=backend.url) as s:
        yield s


async def call(client: aiohttp.ClientSession, method: str, path: str, **kw
               ) -> tuple[int, object, aiohttp.ClientResponse]:
    async with client.request(method, path, **kw) as r:
        body = await r.read()
        data = json.loads(body) if body else None
        return r.status, data, r


async def assert_error(client, method, path, status, message=None, **kw):
    code, data, r = await call(client, method, path, **kw)
    assert code == status, (path, kw, code, data)
    assert r.content_type == "application/json"
    assert isinstance(data, dict) and isinstance(data.get("error"), str), data
    if message is not None:
        assert data["error"] == message
    return data


async def probe_token(client) -> str:
    _, reg, _ = await call(client, "POST", "/api/v1/register", json={"password": "p" * 64})
    _, login, _ = await call(client, "POST", "/api/v1/login",
                             json={"username": reg["client_id"], "password": "p" * 64})
    return login["token"]


# -- discovery ------------------------------------------------------------------------------

async def test_test_helpers(client):
    orders = set()
    for _ in range(30):
        status, data, r = await call(client, "GET", "/api/v1/test-helpers")
        assert status == 200
        assert r.headers["Cache-Control"] == "max-age=0"
        assert set(data) == {"dns", "http-return-json-headers", "ssl", "tcp-echo", "traceroute",
                             "web-connectivity"}
        assert data["dns"] == [{"address": "37.218.241.93:57004", "type": "legacy"}] * 2
        wc = data["web-connectivity"]
        assert len(wc) == 3
        assert wc[2] == {"address": "https://d33d1gs9kpq1c5.cloudfront.net",
                         "front": "d33d1gs9kpq1c5.cloudfront.net", "type": "cloudfront"}
        assert {w["address"] for w in wc[:2]} == {"https://6.th.ooni.org", "https://5.th.ooni.org"}
        orders.add(wc[0]["address"])
    assert len(orders) == 2  # random order per request


async def test_collectors(client):
    status, data, r = await call(client, "GET", "/api/v1/collectors")
    assert status == 200
    assert r.headers["Cache-Control"] == "max-age=3600"
    assert len(data) == 6 and data[:3] == data[3:]
    assert {c["type"] for c in data} == {"onion", "https", "cloudfront"}


async def test_bouncer(client):
    body = {"net-tests": [{"name": "web_connectivity", "version": "0.0.1", "input-hashes": []}]}
    status, data, _ = await call(client, "POST", "/bouncer/net-tests", json=body)
    assert status == 200
    nt = data["net-tests"][0]
    assert nt["name"] == "web_connectivity" and nt["version"] == "0.0.1"
    assert nt["collector"] == "httpo://guegdifjy7bjpequ.onion"
    assert nt["input-hashes"] is None
    assert nt["test-helpers"]["web-connectivity"] == "httpo://y3zq5fwelrzkkv3s.onion"
    for bad in (b"", b"nope", b"[]", b"{}", b'{"net-tests": []}', b'{"net-tests": {}}',
                b'{"net-tests": [{"name": "x"}]}', b'{"net-tests": [{"name": 1, "version": 2}]}',
                b'{"net-tests": "abc"}'):
        await assert_error(client, "POST", "/bouncer/net-tests", 400, "Malformed request",
                           data=bad)


# -- register / login --------------------------------------------------------------------------

async def test_register_and_login(client):
    status, reg, _ = await call(client, "POST", "/api/v1/register", json={
        "password": "p" * 64, "platform": "linux", "probe_asn": "AS2149", "probe_cc": "US",
        "software_name": "ooniprobe", "software_version": "3.20", "supported_tests": ["ndt"]})
    assert status == 200 and set(reg) == {"client_id"}
    claims = jwt.decode(reg["client_id"], SECRET, algorithms=["HS256"], audience="probe_login")
    assert abs(claims["iat"] - time.time()) < 60

    status, login, r = await call(client, "POST", "/api/v1/login",
                                  json={"username": reg["client_id"], "password": "p" * 64})
    assert status == 200 and set(login) == {"token", "expire"}
    assert "no-cache" in r.headers["Cache-Control"]
    expire = dt.datetime.strptime(login["expire"], RFC3339).replace(tzinfo=dt.UTC)
    assert abs((expire - dt.datetime.now(dt.UTC)).total_seconds() - 7 * 86400) < 60
    tok = jwt.decode(login["token"], SECRET, algorithms=["HS256"], audience="probe_token")
    assert tok["registration_time"] == claims["iat"]
    assert tok["exp"] == int(expire.timestamp())  # fixed: the legacy token never expired


async def test_register_requires_json(client):
    for kw in ({"data": b"{}", "headers": {"Content-Type": "text/plain"}},
               {"data": b"not json", "headers": {"Content-Type": "application/json"}},
               {"data": b"", "headers": {"Content-Type": "application/json"}}):
        await assert_error(client, "POST", "/api/v1/register", 400, "error: JSON expected!", **kw)


async def test_login_errors(client):
    forged = jwt.encode({"iat": 1, "aud": "probe_login"}, "y" * 32, algorithm="HS256")
    await assert_error(client, "POST", "/api/v1/login", 401, "Invalid credentials",
                       json={"username": forged, "password": "x"})
    # A probe token is not a client_id (the legacy API crashed with a 500).
    token = await probe_token(client)
    await assert_error(client, "POST", "/api/v1/login", 401, "Invalid credentials",
                       json={"username": token, "password": "x"})
    for bad in (b"", b"nope", b"[1]", b"null"):
        await assert_error(client, "POST", "/api/v1/login", 400, data=bad)


async def test_legacy_login(client):
    """Non-JWT usernames log in with registration_time null, as with the legacy API."""
    for body in ({"username": "old-style-id", "password": "x"}, {"password": "x"},
                 {"username": 12345}):
        status, login, _ = await call(client, "POST", "/api/v1/login", json=body)
        assert status == 200
        claims = jwt.decode(login["token"], SECRET, algorithms=["HS256"], audience="probe_token")
        assert claims["registration_time"] is None


# -- token-protected config files -------------------------------------------------------------

async def test_tor_targets_and_psiphon(client):
    token = await probe_token(client)
    auth = {"Authorization": f"Bearer {token}"}
    status, data, r = await call(client, "GET", "/api/v1/test-list/tor-targets?country_code=IT",
                                 headers=auth)
    assert status == 200
    assert data == json.loads((FIXTURES / "tor_targets.json").read_text())
    assert "no-cache" in r.headers["Cache-Control"]
    status, data, _ = await call(client, "GET", "/api/v1/test-list/psiphon-config", headers=auth)
    assert status == 200 and data == {"a": "b"}


@pytest.mark.parametrize("path", ["/api/v1/test-list/tor-targets",
                                  "/api/v1/test-list/psiphon-config"])
async def test_config_files_need_a_probe_token(client, path):
    await assert_error(client, "GET", path, 401)
    await assert_error(client, "GET", path, 400, "Invalid token format",
                       headers={"Authorization": "Basic abc"})
    await assert_error(client, "GET", path, 400, "Invalid token format",
                       headers={"Authorization": "Bearer "})
    await assert_error(client, "GET", path, 401, headers={"Authorization": "Bearer garbage"})
    forged = jwt.encode({"aud": "probe_token"}, "y" * 32, algorithm="HS256")
    await assert_error(client, "GET", path, 401, "Invalid JWT signature",
                       headers={"Authorization": f"Bearer {forged}"})
    expired = jwt.encode({"aud": "probe_token", "exp": int(time.time()) - 10}, SECRET,
                         algorithm="HS256")
    await assert_error(client, "GET", path, 401, headers={"Authorization": f"Bearer {expired}"})
    client_id = jwt.encode({"aud": "probe_login", "iat": 1}, SECRET, algorithm="HS256")
    await assert_error(client, "GET", path, 401, "Invalid credentials",
                       headers={"Authorization": f"Bearer {client_id}"})


async def test_tor_targets_pass_through_and_reload(serve_factory, fastpath_port, tmp_path: Path):
    """`source` survives (private bridges), edits are picked up, a missing file is {}."""
    tor = tmp_path / "tor.json"
    targets = {"abc": {"address": "1.2.3.4:443", "fingerprint": "F" * 40, "name": "", "params":
                       {"cert": ["c"], "iat-mode": ["0"]}, "protocol": "obfs4",
                       "source": "bridgedb"}}
    tor.write_text(json.dumps(targets, indent=1))
    b = serve_factory(fastpath_port, probe={"jwt_secret": SECRET, "tor_targets_file": str(tor),
                                            "psiphon_config_file": str(tmp_path / "none.json")})
    b.start()
    async with aiohttp.ClientSession(base_url=b.url) as c:
        auth = {"Authorization": f"Bearer {await probe_token(c)}"}
        status, data, _ = await call(c, "GET", "/api/v1/test-list/tor-targets", headers=auth)
        assert status == 200 and data == targets
        targets["abc"]["source"] = "private"
        tor.write_text(json.dumps(targets))
        os.utime(tor, ns=(time.time_ns(), time.time_ns() + 10**9))
        status, data, _ = await call(c, "GET", "/api/v1/test-list/tor-targets", headers=auth)
        assert data["abc"]["source"] == "private"
        tor.write_text("{broken")  # an invalid edit keeps serving the last good content
        os.utime(tor, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
        status, data, _ = await call(c, "GET", "/api/v1/test-list/tor-targets", headers=auth)
        assert status == 200 and data["abc"]["source"] == "private"
        status, data, _ = await call(c, "GET", "/api/v1/test-list/psiphon-config", headers=auth)
        assert status == 200 and data == {}


# -- geolookup ----------------------------------------------------------------------------------

async def test_geolookup(client):
    ips = ["192.33.4.12", "5.5.5.5", "1.2.3.4", "2a01:4f8::1", "::ffff:192.33.4.12", "8.8.8.8"]
    status, data, _ = await call(client, "POST", "/api/v1/geolookup", json={"addresses": ips})
    assert status == 200 and data["v"] == 1
    geo = data["geolocation"]
    assert geo["192.33.4.12"] == {"cc": "US", "asn": 2149, "as_name": "CAIDA / PSGnet"}
    assert geo["5.5.5.5"] == {"cc": "IT", "asn": 12874, "as_name": "Fastweb"}
    assert geo["1.2.3.4"]["cc"] == "IE" and geo["1.2.3.4"]["asn"] == 65550
    assert geo["2a01:4f8::1"]["cc"] == "IT"
    assert geo["::ffff:192.33.4.12"]["cc"] == "US"
    assert geo["8.8.8.8"] == {"cc": None, "asn": None, "as_name": None}
    status, data, _ = await call(client, "POST", "/api/v1/geolookup", json={"addresses": []})
    assert status == 200 and data == {"v": 1, "geolocation": {}}


async def test_geolookup_bad_input(client):
    for body in ({"addresses": ["1.2.3.4", "not-an-ip"]}, {"addresses": ["300.1.1.1"]},
                 {"addresses": [1234]}, {"addresses": "1.2.3.4"}, {}, {"addresses": None},
                 {"addresses": ["1" * 5000]}, {"addresses": ["5.5.5.5"] * 1001}, [], "x"):
        await assert_error(client, "POST", "/api/v1/geolookup", 400, json=body)
    await assert_error(client, "POST", "/api/v1/geolookup", 400, "JSON expected", data=b"{bad")


# -- never a 500 --------------------------------------------------------------------------------

JUNK = [b"", b"null", b"0", b"\"s\"", b"[]", b"[{}]", b"{", b"\xff\xfe", b"{}" * 3,
        b'{"probe_cc": ["IT"]}', b'{"probe_asn": {}}', b'{"addresses": [[]]}',
        b'{"username": [], "password": {}}', b'{"web_connectivity": []}',
        b'{"web_connectivity": {"category_codes": [1, 2]}}', b'{"net-tests": [null]}',
        json.dumps({"web_connectivity": {"category_codes": ["NEWS"] * 10000}}).encode(),
        b'{"charging": "yes"}', b'{"run_type": 5}', b'{"probe_cc": "\\u0000\\u0000"}']
POSTS = ["/api/v1/check-in", "/api/_/check-in", "/api/v1/register", "/api/v1/login",
         "/api/v1/geolookup", "/bouncer/net-tests"]


@pytest.mark.parametrize("path", POSTS)
async def test_junk_bodies_never_500(client, path):
    for body in JUNK:
        for ctype in ("application/json", "text/plain"):
            status, data, r = await call(client, "POST", path, data=body,
                                         headers={"Content-Type": ctype})
            assert status < 500, (path, body[:60], status, data)
            assert data is not None and r.content_type == "application/json"
            if status >= 400:
                assert isinstance(data.get("error"), str)


@pytest.mark.parametrize("query", [
    "country_code=ITA", "country_code=1", "probe_cc=%00%00", "limit=abc", "limit=-5",
    "category_codes=NE-WS", "category_codes=" + ",".join(["NEWS"] * 200),
])
async def test_test_list_urls_bad_params(client, query):
    await assert_error(client, "GET", f"/api/v1/test-list/urls?{query}", 400)


@pytest.mark.parametrize("query", ["probe_cc=USA", "probe_asn=ASX", "probe_asn=AS99999999999",
                                   "limit=x", "category_codes=1"])
async def test_debug_prioritization_bad_params(client, query):
    await assert_error(client, "GET", f"/api/_/debug_prioritization?{query}", 400)


async def test_apispec_documents_probe_routes(client):
    status, spec, _ = await call(client, "GET", "/apispec_1.json")
    assert status == 200
    paths = spec["paths"]
    for path, method in [("/api/v1/check-in", "post"), ("/api/_/check-in", "post"),
                         ("/api/v1/test-helpers", "get"), ("/api/v1/collectors", "get"),
                         ("/bouncer/net-tests", "post"), ("/api/v1/register", "post"),
                         ("/api/v1/login", "post"), ("/api/v1/test-list/tor-targets", "get"),
                         ("/api/v1/test-list/psiphon-config", "get"),
                         ("/api/v1/geolookup", "post"), ("/api/v1/test-list/urls", "get"),
                         ("/api/_/debug_prioritization", "get")]:
        op = paths[path][method]
        assert op["tags"] == ["Probe services"] and op["summary"], path
    names = {p["name"] for p in paths["/api/v1/test-list/urls"]["get"]["parameters"]}
    assert names == {"country_code", "probe_cc", "category_codes", "limit", "debug"}
    body = [p for p in paths["/api/v1/check-in"]["post"]["parameters"] if p["in"] == "body"]
    assert len(body) == 1
