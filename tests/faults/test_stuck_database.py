"""A stuck database (its owner process SIGSTOPped): reads are answered 503 at once, not after
`database.read_timeout` (the circuit breaker, storage.breaker, fed by the health monitor's
probe); submissions are still accepted into the spool; reads come back by themselves after
SIGCONT."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from oonibackend import config
from oonibackend.storage import DatabaseUnavailable, connect
from oonibackend.storage.breaker import CLOSED, OPEN, CircuitOpen
from tests.clickhouse_server import ClickHouseServer, find_binary
from tests.conftest import Backend
from tests.integration.test_fastpath_stack import open_report, sample, submit

pytestmark = pytest.mark.faults

MEASUREMENTS = "/api/v1/measurements?limit=10"


def meta_path(i: int) -> str:
    """Another read route, a different measurement each time (nothing cached)."""
    return (f"/api/v1/measurement_meta?measurement_uid=20260101000000.{i:06d}"
            f"_IT_webconnectivity_{os.urandom(8).hex()}")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(tmp_path_factory.mktemp("stuckdb") / "data",
                {"fastpath": {"enabled": False}}).start()
    try:
        yield b
    finally:
        b.stop()


def owner_pid(b: Backend) -> int:
    return int((b.data_dir / "db.lock").read_text().split()[0])


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, float, dict, str]:
    t0 = time.monotonic()
    async with s.get(url) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else {}
        return r.status, time.monotonic() - t0, body, r.content_type


async def wait_status(s: aiohttp.ClientSession, url: str, want: int, within: float) -> float:
    t0 = time.monotonic()
    while True:
        status, _, body, _ = await get(s, url)
        if status == want:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < within, (url, status, body)
        await asyncio.sleep(0.1)


async def test_reads_fail_fast_while_the_database_is_stuck(backend):
    api = backend.url
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        await wait_status(s, api + MEASUREMENTS, 200, 30)
        assert (await get(s, api + meta_path(0)))[0] == 200
        pid = owner_pid(backend)
        os.kill(pid, signal.SIGSTOP)
        try:
            # A read sent the moment the database stops: it waits for the next probe to
            # fail (at most one interval, 1 s, plus probe_timeout, 1 s), not 60 s.
            status, first, body, _ = await get(s, api + MEASUREMENTS)
            assert status == 503, body
            assert first < 4.0, first
            # /health says so (from the same probe).
            health_after = await wait_status(s, api + "/health", 503, 5)
            async with s.get(api + "/health") as r:
                h = await r.json()
            assert h["status"] == "fail" and "clickhouse_error" in h["errors"]
            # Known down: every read is answered 503 JSON at once.
            lat = []
            for i in range(20):
                for path in (MEASUREMENTS, meta_path(i + 1)):
                    status, took, body, ctype = await get(s, api + path)
                    assert status == 503, (path, body)
                    assert ctype == "application/json"
                    assert body == {"error": "Database unavailable, retry later"}
                    assert took < 1.5, (path, took)
                    lat.append(took)
            # Probes and submissions do not need the database: still accepted.
            msm = sample("report1.json")
            t0 = time.monotonic()
            rid = await open_report(s, api, msm)
            uid = await submit(s, api, rid, msm)
            submitted = time.monotonic() - t0
            assert uid and submitted < 5, submitted
        finally:
            os.kill(pid, signal.SIGCONT)
        # Back by themselves, without a restart.
        back = await wait_status(s, api + MEASUREMENTS, 200, 10)
        assert (await get(s, api + meta_path(99)))[0] == 200
        print(f"first read after SIGSTOP: 503 in {first:.2f} s; /health 503 "
              f"{health_after:.2f} s later; 40 reads while stopped: max "
              f"{max(lat) * 1000:.0f} ms, mean {sum(lat) / len(lat) * 1000:.1f} ms; "
              f"report+submission {submitted * 1000:.0f} ms; reads 200 again "
              f"{back:.2f} s after SIGCONT")


async def test_reads_in_flight_are_cut_short(backend):
    """Reads already waiting on the stuck database fail when the probe does, all of them."""
    api = backend.url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as s:
        await wait_status(s, api + MEASUREMENTS, 200, 30)
        pid = owner_pid(backend)
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            results = await asyncio.gather(*(get(s, api + meta_path(i)) for i in range(12)))
            took = time.monotonic() - t0
            assert [r[0] for r in results] == [503] * 12, results
            assert took < 4.0, took
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_status(s, api + MEASUREMENTS, 200, 10)


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    if find_binary() is None:
        pytest.skip("clickhouse-server binary not installed")
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.clickhouse_server
@pytest.mark.parametrize("driver", ["native", "http"])
async def test_the_breaker_guards_both_server_drivers(clickhouse, driver):
    """The same breaker in front of the native and the HTTP driver, against a stopped
    clickhouse-server: in-flight reads cut short, reads refused, back after SIGCONT (the
    native driver throws the interrupted connection away and opens a fresh one)."""
    url = clickhouse.native_url if driver == "native" else clickhouse.http_url
    cfg = config.load(None, **{"database.driver": driver, "database.url": url,
                               "database.connect_timeout": 2.0, "database.read_timeout": 30.0,
                               "database.probe_timeout": 0.5})
    db = connect(cfg, breaker=True)
    assert db.breaker.probe_timeout == 0.5
    try:
        assert (await db.query("SELECT 1 AS ok")) == [{"ok": 1}]
        assert clickhouse.proc is not None
        os.kill(clickhouse.proc.pid, signal.SIGSTOP)
        try:
            read = asyncio.ensure_future(db.query("SELECT 2 AS ok"))
            await asyncio.sleep(0.2)
            assert not read.done()
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await db.probe()
            with pytest.raises(CircuitOpen):
                await asyncio.wait_for(read, 1)
            assert time.monotonic() - t0 < 1.5
            assert db.breaker.state == OPEN
            t0 = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                await db.query("SELECT 3 AS ok")
            assert time.monotonic() - t0 < 0.05
        finally:
            os.kill(clickhouse.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while True:
            try:
                await db.probe()
                break
            except (TimeoutError, DatabaseUnavailable):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert db.breaker.state == CLOSED
        assert (await db.query("SELECT 4 AS ok")) == [{"ok": 4}]
    finally:
        await db.close()
