"""Crashes mid-stream with real processes: the fastpath and the database owner are SIGKILLed
while measurements flow (the supervisor restarts both). Every measurement the feeder
answered 200, and every one the API accepted, ends in the fastpath table exactly once."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.integration.test_fastpath_stack import Stack, new_uid, open_report, sample, submit


async def test_sigkill_fastpath_and_database_owner_mid_stream(tmp_path, geoip_files):
    with Stack(tmp_path / "data", geoip_files, batch_size=50, batch_interval=0.3).start() as stack:
        msm = sample("report1.json")
        body = json.dumps({"format": "json", "content": msm}).encode()
        acked: list[str] = []  # answered 200 by the feeder itself
        via_api: list[str] = []  # accepted by the API (delivered at least once by its forwarder)
        stop = asyncio.Event()

        async def feed_direct(s: aiohttp.ClientSession, worker: int) -> None:
            i = 0
            while not stop.is_set():
                uid = new_uid(worker * 100000 + i)
                i += 1
                try:
                    async with s.post(f"{stack.feeder}/{uid}", data=body,
                                      headers=stack.headers) as r:
                        if r.status == 200:
                            acked.append(uid)
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.05)  # fastpath down: the API would retry later

        async def feed_api(s: aiohttp.ClientSession, rid: str) -> None:
            while not stop.is_set():
                via_api.append(await submit(s, stack.api, rid, msm))
                await asyncio.sleep(0.01)

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            rid = await open_report(s, stack.api, msm)
            feeders = [asyncio.create_task(feed_direct(s, w)) for w in range(4)]
            feeders.append(asyncio.create_task(feed_api(s, rid)))
            try:
                await asyncio.sleep(1.5)
                old = stack.kill("fastpath")
                await asyncio.to_thread(stack.wait_restarted, "fastpath", old)
                await asyncio.sleep(1.5)
                old = stack.kill("owner")
                await asyncio.to_thread(stack.wait_restarted, "owner", old)
                await asyncio.sleep(1.5)
                old = stack.kill("fastpath")  # again, while it may be replaying its queue
                await asyncio.to_thread(stack.wait_restarted, "fastpath", old)
                await asyncio.sleep(1.5)
            finally:
                stop.set()
                await asyncio.gather(*feeders)
        assert len(acked) > 100 and len(via_api) > 20
        uids = acked + via_api
        t0 = time.monotonic()
        await stack.wait_rows(uids, timeout=240)
        counts = await stack.query_uids(
            "SELECT measurement_uid, count() AS n FROM fastpath FINAL "
            "WHERE has(%(u)s, measurement_uid) GROUP BY measurement_uid", uids)
        assert {r["measurement_uid"] for r in counts} == set(uids)
        assert all(r["n"] == 1 for r in counts), [r for r in counts if r["n"] != 1][:5]
        # The restarted fastpath did replay what its predecessor had not committed.
        assert '"uncommitted measurements queued again"' in stack.log()
        print(f"\n{len(acked)} direct + {len(via_api)} via the API; all in the table "
              f"{time.monotonic() - t0:.1f}s after the stream stopped")
        assert stack.stop() == 0
