"""GET /api/v2/ooniprobe/vpn-config/{provider} against the real server and database
(docs/current_services.md §3), with a loopback stand-in for RiseupVPN's public API: nothing
cached and the provider down (503), a fresh fetch, the database cache across a restart, the
stale entry served while the provider is down, the refresh once the interval has passed, and
unknown or hostile provider names (404)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from oonibackend import config
from oonibackend.storage.http import HTTPDatabase
from tests.conftest import Backend, free_port

REFRESH_SECONDS = 3.0
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA{n}\n-----END RSA PRIVATE KEY-----"
CERT = "-----BEGIN CERTIFICATE-----\nMIIEnzCCAoegAwIBAgIRA{n}\n-----END CERTIFICATE-----"
CA = "-----BEGIN CERTIFICATE-----\nMIIFjDCCA3SgAwIBAgIBATANBgkq\n-----END CERTIFICATE-----"
EIP = {"gateways": [
    {"host": f"gw{i}.riseup.net", "ip_address": f"198.252.153.{100 + i}", "location": "x",
     "capabilities": {"transport": [
         {"type": "openvpn", "protocols": ["tcp", "udp"], "ports": ["53", "1194"]},
         {"type": "obfs4", "protocols": ["tcp"], "ports": ["23042"]}]}}
    for i in range(3)], "serial": 3, "version": 3}


class StandIn:
    """RiseupVPN's API on loopback, in a thread: /ca.crt, /3/cert, /3/config/eip-service.json.
    `up = False` answers 502 like a failing proxy; each certificate it hands out is new."""

    def __init__(self) -> None:
        self.port = free_port()
        self.up = True
        self.hits: list[str] = []
        self.certs = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        if not self.up:
            return web.Response(status=502, text="bad gateway")
        if request.path == "/ca.crt":
            return web.Response(text=CA + "\n")
        if request.path == "/3/cert":
            self.certs += 1
            return web.Response(text=KEY.format(n=self.certs) + "\n" +
                                CERT.format(n=self.certs) + "\n")
        if request.path == "/3/config/eip-service.json":
            return web.json_response(EIP)
        return web.Response(status=404)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> StandIn:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def riseup() -> Iterator[StandIn]:
    s = StandIn().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, riseup: StandIn) -> Iterator[Backend]:
    b = Backend(tmp_path_factory.mktemp("vpn"), {
        "vpn": {"riseupvpn_api_url": riseup.url, "fetch_timeout": 5.0, "retry_interval": 0.5,
                "vpn_credential_refresh_hours": REFRESH_SECONDS / 3600},
        "fastpath": {"enabled": False}, "quotas": {"enabled": False}})
    yield b
    b.stop()


def get(b: Backend, path: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(b.url + path, timeout=20) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


PATH = "/api/v2/ooniprobe/vpn-config/riseupvpn"
ENDPOINT = re.compile(r"openvpn://riseupvpn\.corp/\?address=198\.252\.153\.10[0-2]:(53|1194)"
                      r"&transport=(tcp|udp)")


def check_answer(body: dict, cert_no: int) -> dt.datetime:
    assert list(body) == ["provider", "protocol", "config", "date_updated", "endpoints"]
    assert body["provider"] == "riseupvpn" and body["protocol"] == "openvpn"
    assert body["config"] == {"ca": CA, "cert": CERT.format(n=cert_no),
                              "key": KEY.format(n=cert_no)}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["date_updated"])
    assert len(body["endpoints"]) == 4 and len(set(body["endpoints"])) == 4
    assert all(ENDPOINT.fullmatch(e) for e in body["endpoints"]), body["endpoints"]
    return dt.datetime.strptime(body["date_updated"], "%Y-%m-%dT%H:%M:%S.%fZ")


async def db_rows(b: Backend) -> list[dict]:
    db = HTTPDatabase(config.load(str(b.config), data_dir=str(b.data_dir)))
    try:
        return await db.query("SELECT provider_name, date_updated, openvpn_cert, "
                              "length(endpoint_address) AS n FROM ooniprobe_vpn_provider "
                              "ORDER BY date_updated")
    finally:
        await db.close()


def wait_for(pred, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := pred():
            return v
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_lifecycle(backend: Backend, riseup: StandIn):
    # 1. Nothing cached and the provider down: 503, clear JSON, Retry-After.
    riseup.up = False
    backend.start()
    status, headers, body = get(backend, PATH)
    assert status == 503, body
    assert body["detail"] == "could not fetch credentials" and "retry later" in body["error"]
    assert int(headers["Retry-After"]) >= 1
    assert riseup.hits, "the provider was asked"
    # within retry_interval the provider is not asked again
    n = len(riseup.hits)
    assert get(backend, PATH)[0] == 503 and len(riseup.hits) == n

    # 2. Provider up: a fresh fetch, cached in the database.
    riseup.up = True
    time.sleep(0.6)
    status, headers, body = get(backend, PATH)
    assert status == 200, body
    assert headers["Cache-Control"] == "max-age=0, no-cache"
    first = check_answer(body, 1)
    assert abs((dt.datetime.now(dt.UTC).replace(tzinfo=None) - first).total_seconds()) < 30
    rows = await db_rows(backend)
    assert [(r["provider_name"], r["openvpn_cert"], r["n"]) for r in rows] == [
        ("riseupvpn", CERT.format(n=1), 12)]
    assert rows[0]["date_updated"] == first
    # served from memory: no new fetch; the endpoints are picked at random per request
    hits = len(riseup.hits)
    seen = {e for _ in range(8) for e in get(backend, PATH)[2]["endpoints"]}
    assert len(riseup.hits) == hits and len(seen) > 4
    # country_code is ignored
    assert get(backend, PATH + "?country_code=IT")[0] == 200

    # 3. Restart with the provider down: the database's entry is served (stale by now).
    backend.stop()
    riseup.up = False
    time.sleep(REFRESH_SECONDS)
    backend.start()
    status, _, body = get(backend, PATH)
    assert status == 200 and check_answer(body, 1) == first
    time.sleep(0.6)
    assert get(backend, PATH)[2]["date_updated"] == body["date_updated"]  # still stale

    # 4. Provider back: the next request still gets the stale entry at once and starts a
    #    refresh in the background; a fresh one follows.
    riseup.up = True
    time.sleep(0.6)
    assert get(backend, PATH)[0] == 200
    fresh = wait_for(lambda: (b := get(backend, PATH)[2])["config"]["cert"] ==
                     CERT.format(n=2) and b)
    assert check_answer(fresh, 2) > first
    rows = await db_rows(backend)
    assert [r["openvpn_cert"] for r in rows] == [CERT.format(n=1), CERT.format(n=2)]

    # 5. Fresh again: no fetch until the interval has passed, then one.
    certs = riseup.certs
    for _ in range(3):
        get(backend, PATH)
    assert riseup.certs == certs
    time.sleep(REFRESH_SECONDS)
    get(backend, PATH)
    wait_for(lambda: get(backend, PATH)[2]["config"]["cert"] == CERT.format(n=certs + 1))


@pytest.mark.parametrize("name", [
    "psiphon", "RISEUPVPN", "riseupvpn%20", "riseup", "riseupvpn.json", "x" * 5000,
    "%00", "..%2F..%2Fetc%2Fpasswd", "riseupvpn%3Bdrop", "%F0%9F%98%80", "'%20OR%201=1"])
def test_unknown_provider_is_404(backend: Backend, riseup: StandIn, name: str):
    if backend.proc is None or backend.proc.poll() is not None:
        backend.start()
    hits = len(riseup.hits)
    status, headers, body = get(backend, "/api/v2/ooniprobe/vpn-config/" + name)
    assert (status, body) == (404, {"error": "provider not found",
                                    "detail": "provider not found"})
    assert headers["Content-Type"].startswith("application/json")
    assert len(riseup.hits) == hits
