"""SIGKILL the API in the middle of a submission burst: every measurement that was answered
with a uid must be in the spool, byte for byte, after a restart — also when the page cache is
lost (simulated by deleting every `.post` file, which recovery rebuilds from the WAL)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SAMPLES, Backend
from tests.fakefastpath import FakeFastpath
from tests.integration.conftest import spool_file


async def open_report(session: aiohttp.ClientSession, api: Backend) -> str:
    req = {"probe_cc": "IT", "probe_asn": "AS12874", "test_name": "web_connectivity"}
    async with session.post(api.url + "/report", json=req) as r:
        return (await r.json())["report_id"]


def api_child(supervisor_pid: int) -> int:
    """Pid of the `oonibackend serve` child of an `oonibackend run` supervisor."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == supervisor_pid and b"serve" in cmd:
            return int(d.name)
    raise LookupError("no API child")


async def burst(api: Backend, n: int, concurrency: int, kill_after: int, pid: int
                ) -> tuple[dict[str, bytes], int, float]:
    """Submit `n` distinct measurements; SIGKILL `pid` (the API) once `kill_after` were
    answered.

    Returns {uid: body} of every answered submission, the number of failed ones, and the
    answered rate before the kill (req/s).
    """
    template = json.loads((SAMPLES / "report1.json").read_text())
    answered: dict[str, bytes] = {}
    failed = 0
    killed_at = 0.0
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        rid = await open_report(s, api)
        t0 = time.monotonic()

        async def one(i: int) -> None:
            nonlocal failed, killed_at
            body = json.dumps({"format": "json",
                               "content": {**template, "report_id": rid, "id": f"m-{i}"}}).encode()
            async with sem:
                if killed_at:
                    failed += 1
                    return
                try:
                    async with s.post(f"{api.url}/report/{rid}", data=body) as r:
                        if r.status != 200:
                            failed += 1
                            return
                        answered[(await r.json())["measurement_uid"]] = body
                except (TimeoutError, aiohttp.ClientError):
                    failed += 1
                    return
            if len(answered) >= kill_after and not killed_at:
                killed_at = time.monotonic()
                os.kill(pid, signal.SIGKILL)

        await asyncio.gather(*(one(i) for i in range(n)))
    rate = len(answered) / max(1e-6, (killed_at or time.monotonic()) - t0)
    return answered, failed, rate


@pytest.mark.parametrize("lose_page_cache", [False, True])
async def test_sigkill_mid_burst_keeps_every_answered_measurement(
        serve_factory, fastpath_port, tmp_path, lose_page_cache):
    fp = FakeFastpath(fastpath_port).start()
    # A long checkpoint interval keeps the whole burst in the WAL (the power-loss case needs
    # it); the other case checkpoints constantly, racing checkpoints with the kill.
    interval = 3600.0 if lose_page_cache else 0.05
    api = serve_factory(fastpath_port, spool={"checkpoint_interval": interval}).start()
    try:
        assert api.proc is not None
        answered, failed, rate = await burst(api, n=4000, concurrency=64, kill_after=1000,
                                             pid=api.proc.pid)
        assert api.proc.wait(10) == -signal.SIGKILL
        assert len(answered) >= 1000 and failed > 0  # killed mid-burst
        print(f"\nanswered {len(answered)}, failed {failed}, {rate:.0f} answered req/s")
        wal_dir = api.data_dir / "spool" / "wal"
        if lose_page_cache:
            assert list(wal_dir.glob("*.wal"))
            for p in (api.data_dir / "spool" / "incoming").glob("*/*.post"):
                p.unlink()

        again = serve_factory(fastpath_port, data_dir=api.data_dir).start()
        missing = [u for u in answered if not spool_file(api.data_dir, u).exists()]
        assert not missing, f"{len(missing)} answered measurements lost"
        for uid, body in answered.items():
            assert spool_file(api.data_dir, uid).read_bytes() == body
        assert not list(wal_dir.glob("*.wal"))  # replayed and removed
        assert not list((api.data_dir / "spool").glob("incoming/*/*.tmp"))
        # And the fastpath eventually gets every one of them (at least once across a crash).
        assert fp.wait_for(set(answered), 60)
        again.stop()
    finally:
        fp.stop()


async def test_sigkill_api_child_under_run_supervisor(serve_factory, fastpath_port):
    """Under `oonibackend run` the supervisor restarts the killed API, which replays its WAL."""
    fp = FakeFastpath(fastpath_port).start()
    backend = serve_factory(fastpath_port, command="run").start()
    try:
        assert backend.proc is not None
        pid = api_child(backend.proc.pid)
        answered, failed, _ = await burst(backend, n=3000, concurrency=64, kill_after=500,
                                          pid=pid)
        assert len(answered) >= 500 and failed > 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # restarted by the supervisor
            try:
                if api_child(backend.proc.pid) != pid:
                    with urllib.request.urlopen(backend.url + "/health", timeout=1):
                        break
            except (LookupError, OSError):
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("API not restarted")
        for uid, body in answered.items():
            assert spool_file(backend.data_dir, uid).read_bytes() == body
        assert fp.wait_for(set(answered), 60)
        assert backend.stop() == 0
    finally:
        fp.stop()
