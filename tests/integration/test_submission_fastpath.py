"""Fastpath delivery by the real API process: answers never wait for the fastpath; measurements
spooled while it is down (or answering 503) are delivered exactly once when it comes back,
also across a restart and after a crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp

from tests.conftest import Backend
from tests.fakefastpath import FakeFastpath
from tests.integration.conftest import spool_file


async def submit(api: Backend, n: int) -> tuple[dict[str, bytes], float]:
    """n measurements, half through /report/<id>, half through submit_measurement.
    Returns {uid: spooled body} and the slowest answer (seconds)."""
    out: dict[str, bytes] = {}
    slowest = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        req = {"probe_cc": "IT", "probe_asn": "AS12874", "test_name": "web_connectivity"}
        async with s.post(api.url + "/report", json=req) as r:
            rid = (await r.json())["report_id"]

        async def one(i: int) -> None:
            nonlocal slowest
            m = {"test_name": "web_connectivity", "probe_cc": "IT", "probe_asn": "AS12874",
                 "report_id": rid, "input": f"https://example.org/{i}"}
            t0 = time.monotonic()
            if i % 2:
                body = json.dumps({"format": "json", "content": m}).encode()
                r = await s.post(f"{api.url}/report/{rid}", data=body)
            else:
                r = await s.post(f"{api.url}/api/v1/submit_measurement", json={
                    "format": "json", "content": json.dumps(m), "nym": None,
                    "zkp_request": None, "manifest_version": None, "protocol_version": None})
            assert r.status == 200, await r.text()
            uid = (await r.json())["measurement_uid"]
            slowest = max(slowest, time.monotonic() - t0)
            out[uid] = spool_file(api.data_dir, uid).read_bytes()

        await asyncio.gather(*(one(i) for i in range(n)))
    return out, slowest


def assert_exactly_once(fp: FakeFastpath, sent: dict[str, bytes]) -> None:
    counts = fp.counts()
    assert set(counts) == set(sent)
    dup = {u: c for u, c in counts.items() if c != 1}
    assert not dup, f"delivered more than once: {dup}"
    assert fp.bodies() == sent


async def test_fastpath_down_then_503_then_up(serve_factory, fastpath_port, metric):
    api = serve_factory(fastpath_port).start()
    sent, slowest = await submit(api, 60)
    assert len(sent) == 60 and slowest < 5
    assert metric(api, "oonibackend_fastpath_pending") == 60
    await asyncio.sleep(0.5)
    assert metric(api, "oonibackend_fastpath_failed_attempts_total") > 0
    fp = FakeFastpath(fastpath_port, fail_first=10).start()
    try:
        assert fp.wait_for(set(sent), 30)
        time.sleep(1.0)  # let any duplicate show up
        assert_exactly_once(fp, sent)
        assert fp.refused == 10
        assert metric(api, "oonibackend_fastpath_pending") == 0
        assert metric(api, "oonibackend_fastpath_delivered_total") == 60

        # A restart finds everything recorded as delivered: nothing is sent again.
        time.sleep(1.0)  # `.delivered` appends are batched
        assert api.stop() == 0
        assert not list((api.data_dir / "spool" / "wal").glob("*.wal"))  # final checkpoint
        api = serve_factory(fastpath_port, data_dir=api.data_dir).start()
        time.sleep(1.5)
        assert_exactly_once(fp, sent)

        # With the fastpath up, a new measurement is delivered promptly.
        t0 = time.monotonic()
        more, _ = await submit(api, 1)
        assert fp.wait_for(set(more), 5)
        assert time.monotonic() - t0 < 1.0
    finally:
        api.stop()
        fp.stop()


async def test_slow_fastpath_does_not_delay_answers(serve_factory, fastpath_port):
    fp = FakeFastpath(fastpath_port, delay=2.0).start()
    api = serve_factory(fastpath_port).start()
    try:
        sent, slowest = await submit(api, 20)
        assert slowest < 1.0, slowest  # the fastpath takes 2 s per measurement
        assert fp.wait_for(set(sent), 30)
        assert_exactly_once(fp, sent)
    finally:
        api.stop()
        fp.stop()


async def test_pending_measurements_survive_a_crash(serve_factory, fastpath_port):
    api = serve_factory(fastpath_port).start()
    sent, _ = await submit(api, 30)
    assert api.proc is not None
    os.kill(api.proc.pid, signal.SIGKILL)
    api.proc.wait(10)
    fp = FakeFastpath(fastpath_port).start()
    try:
        api = serve_factory(fastpath_port, data_dir=api.data_dir).start()
        assert fp.wait_for(set(sent), 30)  # found by the start-up scan
        time.sleep(1.0)
        assert_exactly_once(fp, sent)
    finally:
        api.stop()
        fp.stop()
