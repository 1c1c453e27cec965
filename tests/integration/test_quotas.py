"""Quotas in real `serve` processes: two API processes share one data directory (one LMDB env).

Spending whole seconds of budget on fast routes would take tens of thousands of requests, so
the tests pre-spend most of a network's budget from the test process (a third process on the
same LMDB environment, exactly like another API worker) and let the servers spend the rest on
/robots.txt. Every test uses its own networks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from oonibackend.clientip import network_key
from oonibackend.quotas.store import Budgets, QuotaStore
from tests.conftest import Backend

SECRET = "q" * 32
BUDGETS = Budgets(daily=4000, weekly=20000, monthly=60000)
TOKEN_BUDGETS = Budgets(daily=500, weekly=2000, monthly=6000)
WHITELISTED = "10.9.9.9"
FLUSH_INTERVAL = 0.2
HDR = "X-RateLimit-Remaining"


def admin_token() -> str:
    claims = {"aud": "user_auth", "account_id": "admin1", "role": "admin",
              "exp": int(time.time()) + 3600}
    return "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")


class Seeder:
    """The test process's own handle on the servers' quota environment."""

    def __init__(self, path: Path) -> None:
        self.store = QuotaStore(path, BUDGETS, TOKEN_BUDGETS)

    def leave(self, ip: str, daily_seconds: float) -> None:
        """Spend a fresh network's daily budget down to `daily_seconds`."""
        self.store.charge(network_key(ip), BUDGETS.daily - daily_seconds)
        self.store.flush()

    def remaining(self, ip: str) -> dict[str, float]:
        return self.store.remaining(network_key(ip))


def _backend(data_dir: Path, name: str) -> Backend:
    b = Backend(data_dir, {
        "probe": {"jwt_secret": SECRET},
        "quotas": {"whitelist": [WHITELISTED], "flush_interval": FLUSH_INTERVAL},
        # The measurement spool takes an exclusive lock per process; quotas are what's shared.
        "spool": {"dir": f"spool-{name}"},
    }, command="serve")
    b.log = data_dir / f"serve-{name}.log"
    return b


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Backend, Backend, Seeder]]:
    """API processes A and B on one data directory, plus a seeder on their quota env."""
    data = tmp_path_factory.mktemp("quotas")
    a = _backend(data, "a").start()
    b = _backend(data, "b").start()  # rewrites test.toml, which A has already read
    seeder = Seeder(data / "quotas")
    try:
        yield a, b, seeder
    finally:
        seeder.store.close()
        for server in (a, b):
            server.stop()


async def get(s: aiohttp.ClientSession, url: str, ip: str | None = None,
              **headers: str) -> tuple[int, dict[str, str], bytes]:
    if ip is not None:
        headers["X-Real-IP"] = ip
    async with s.get(url, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def spend_until(s: aiohttp.ClientSession, url: str, ip: str, stop, limit: int = 20000,
                      concurrency: int = 8) -> list[tuple[int, dict[str, str]]]:
    """Hit /robots.txt from `ip` until `stop(status, headers)` holds; responses in order."""
    seen: list[tuple[int, dict[str, str]]] = []
    done = asyncio.Event()

    async def worker() -> None:
        while not done.is_set() and len(seen) < limit:
            status, headers, _ = await get(s, url + "/robots.txt", ip)
            seen.append((status, headers))
            if stop(status, headers):
                done.set()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    assert done.is_set(), f"condition not reached in {len(seen)} requests"
    return seen


async def summary(s: aiohttp.ClientSession, server: Backend) -> dict[str, float]:
    status, _, body = await get(s, server.url + "/api/_/quotas_summary",
                                Authorization=admin_token())
    assert status == 200, body
    return dict(json.loads(body))


async def test_remaining_decreases_then_429(servers):
    a, _, seeder = servers
    seeder.leave("1.2.3.4", 1.02)
    async with aiohttp.ClientSession() as s:
        status, headers, _ = await get(s, a.url + "/robots.txt", "1.2.3.4")
        assert status == 200 and headers[HDR] == "1"
        seen = await spend_until(s, a.url, "1.2.3.77", lambda st, h: h.get(HDR) == "0")
        assert {h[HDR] for _, h in seen} <= {"1", "0"}
        assert all(status == 200 for status, _ in seen)
        # Take the rest away from another process (the seeder): A sees it within its cache
        # lifetime (one flush interval).
        seeder.store.charge(network_key("1.2.3.4"), 1.0)
        seeder.store.flush()
        deadline = time.monotonic() + 5 * FLUSH_INTERVAL + 1
        while True:
            status, headers, body = await get(s, a.url + "/robots.txt", "1.2.3.200")
            if status == 429 or time.monotonic() > deadline:
                break
            await asyncio.sleep(FLUSH_INTERVAL / 4)
        assert status == 429
        assert body == b'{"error":"Quota exceeded"}'
        assert headers["Content-Type"].startswith("application/json")
        assert headers[HDR] == "0"
        assert 1 <= int(headers["Retry-After"]) <= 3600
        # /health is never metered (these APIs run without a database: it answers 503, the
        # truth, but never 429); another network is unaffected.
        for _ in range(20):
            status, headers, _ = await get(s, a.url + "/health", "1.2.3.4")
            assert status == 503 and HDR not in headers
        status, headers, _ = await get(s, a.url + "/robots.txt", "1.2.4.1")
        assert status == 200 and headers[HDR] == "3999"


async def test_whitelisted_address_never_metered(servers):
    a, b, seeder = servers
    seeder.leave(WHITELISTED, 0.0)  # its whole /24 is exhausted
    async with aiohttp.ClientSession() as s:
        for server in (a, b):
            for _ in range(10):
                status, headers, _ = await get(s, server.url + "/robots.txt", WHITELISTED)
                assert status == 200 and HDR not in headers
            status, _, _ = await get(s, server.url + "/robots.txt", "10.9.9.8")
            assert status == 429


async def test_submissions_never_refused_for_quota(servers):
    """By design, as in the legacy API (`/report*` unmetered): probes behind CGNAT share a /24,
    and a refused measurement is lost. A spent network still opens reports and submits."""
    a, b, seeder = servers
    ip = "11.22.33.44"
    seeder.leave(ip, 0.0)
    report = {"probe_cc": "IT", "probe_asn": "AS12874", "test_name": "web_connectivity",
              "software_name": "quota-test", "software_version": "1.0",
              "test_version": "0.4.3", "format": "json", "data_format_version": "0.2.0",
              "test_start_time": "2026-12-06 12:00:00"}
    headers = {"X-Real-IP": ip}
    async with aiohttp.ClientSession() as s:
        for server in (a, b):
            assert (await get(s, server.url + "/robots.txt", ip))[0] == 429  # spent
            async with s.post(server.url + "/report", json=report, headers=headers) as r:
                assert r.status == 200 and HDR not in r.headers
                rid = (await r.json())["report_id"]
            content = {**report, "report_id": rid, "input": "https://example.org/",
                       "measurement_start_time": "2026-12-06 12:00:01", "test_keys": {}}
            async with s.post(f"{server.url}/report/{rid}", headers=headers,
                              json={"format": "json", "content": content}) as r:
                assert r.status == 200 and HDR not in r.headers
                assert "measurement_uid" in await r.json()
            async with s.post(server.url + "/api/v1/submit_measurement", headers=headers,
                              json={"format": "json", "content": content}) as r:
                assert r.status == 200 and HDR not in r.headers
            async with s.post(f"{server.url}/report/{rid}/close", headers=headers) as r:
                assert r.status == 200


async def test_quotas_shared_between_processes(servers):
    a, b, seeder = servers
    ip = "7.7.7.7"
    seeder.leave(ip, 0.1)
    async with aiohttp.ClientSession() as s:
        status, headers, _ = await get(s, b.url + "/robots.txt", "7.7.7.1")
        assert status == 200 and headers[HDR] == "0"
        await asyncio.sleep(3 * FLUSH_INTERVAL)
        before = (await summary(s, b))["7.7.7.0/24"]
        assert 0.09 < before <= 0.1

        # Spend part of it on A: after a flush B's summary shows A's spending.
        spent = 0
        for _ in range(1000):
            status, headers, _ = await get(s, a.url + "/robots.txt", "7.7.7.2")
            assert status == 200
            spent += 1
        await asyncio.sleep(3 * FLUSH_INTERVAL)
        after = (await summary(s, b))["7.7.7.0/24"]
        assert after < before - 0.003, (before, after, spent)  # >= 3 us per request
        assert seeder.remaining(ip)["daily"] == pytest.approx(after, abs=0.002)

        # Exhaust it on A, then B refuses too once A has flushed.
        await spend_until(s, a.url, "7.7.7.3", lambda st, h: st == 429)
        status, _, _ = await get(s, b.url + "/robots.txt", "7.7.7.4")
        deadline = time.monotonic() + 10 * FLUSH_INTERVAL
        while status != 429 and time.monotonic() < deadline:
            await asyncio.sleep(FLUSH_INTERVAL / 2)
            status, _, _ = await get(s, b.url + "/robots.txt", "7.7.7.4")
        assert status == 429
        assert (await summary(s, b))["7.7.7.0/24"] == 0.0


async def test_account_token_uses_token_budget(servers):
    a, _, _ = servers
    async with aiohttp.ClientSession() as s:
        status, headers, _ = await get(s, a.url + "/robots.txt", "8.8.8.8",
                                       Authorization=admin_token())
        assert status == 200 and headers[HDR] == "499"
        status, headers, _ = await get(s, a.url + "/robots.txt", "8.8.8.8",
                                       Authorization="Bearer not-a-token")
        assert status == 200 and headers[HDR] == "3999"


async def test_summary_requires_admin(servers):
    a, _, _ = servers
    async with aiohttp.ClientSession() as s:
        status, headers, body = await get(s, a.url + "/api/_/quotas_summary")
        assert status == 401 and body == b'{"error":"Authentication required"}'
        user = jwt.encode({"aud": "user_auth", "account_id": "u", "role": "user",
                           "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
        status, _, _ = await get(s, a.url + "/api/_/quotas_summary",
                                 Authorization=f"Bearer {user}")
        assert status == 403
        status, headers, _ = await get(s, a.url + "/api/_/quotas_summary",
                                       Authorization=admin_token())
        assert status == 200 and "no-cache" in headers["Cache-Control"]


async def test_replenish_once_across_processes(servers):
    """Both processes see the hour pass; the credit must be given once (legacy: N times)."""
    a, b, seeder = servers
    ip = "9.8.7.6"
    seeder.leave(ip, 0.0)
    async with aiohttp.ClientSession() as s:
        assert (await get(s, b.url + "/robots.txt", ip))[0] == 429
        logs_before = sum(x.log.read_text().count("quotas replenished") for x in (a, b))
        # Pretend the last replenishment was two hours ago (the store restarts its clock when
        # it finds a timestamp in the future, so "now - 7200" moves it back).
        seeder.store.replenish(time.time() - 7200)
        await asyncio.sleep(5 * FLUSH_INTERVAL)
        logs_after = sum(x.log.read_text().count("quotas replenished") for x in (a, b))
        assert logs_after - logs_before == 1
        credit = BUDGETS.daily * 7200 / (24 * 3600)  # 333.3 s
        left = seeder.remaining(ip)["daily"]
        assert left == pytest.approx(credit, abs=1.0)
        for server in (a, b):
            status, headers, _ = await get(s, server.url + "/robots.txt", ip)
            assert status == 200 and int(headers[HDR]) in (332, 333)
