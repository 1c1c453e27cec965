"""Backpressure with real processes: while the database owner is frozen (SIGSTOP) inserts
stall, the intake queue fills to `max_queue` and the feeder answers 503; the API keeps its
measurements pending, and once the database is back everything reaches the table."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp

from tests.integration.test_fastpath_stack import Stack, new_uid, open_report, sample, submit


async def test_queue_full_answers_503_then_recovers(tmp_path, geoip_files):
    with Stack(tmp_path / "data", geoip_files, max_queue=5, batch_size=2,
               batch_interval=0.05).start() as stack:
        owner = stack.owner_pid()
        assert owner
        msm = sample("report1.json")
        body = json.dumps({"format": "json", "content": msm}).encode()
        os.kill(owner, signal.SIGSTOP)
        try:
            accepted, refused = [], []
            async with aiohttp.ClientSession() as s:
                for i in range(8):
                    uid = new_uid(i)
                    async with s.post(f"{stack.feeder}/{uid}", data=body,
                                      headers=stack.headers) as r:
                        if r.status == 200:
                            accepted.append(uid)
                        else:
                            assert r.status == 503, await r.text()
                            assert r.content_type == "application/json"
                            assert "error" in await r.json()
                            assert r.headers["Retry-After"] == "1"
                            refused.append(uid)
                assert len(accepted) == 5 and len(refused) == 3
                assert stack.metric("fastpath_queue_depth") == 5
                # Through the API: answered at once (spooled), delivered later.
                rid = await open_report(s, stack.api, msm)
                t0 = time.monotonic()
                via_api = [await submit(s, stack.api, rid, msm) for _ in range(4)]
                assert time.monotonic() - t0 < 5
                await asyncio.sleep(1.0)
                assert stack.metric("fastpath_queue_depth") == 5  # still refused
        finally:
            os.kill(owner, signal.SIGCONT)
        rows = await stack.wait_rows(accepted + via_api, timeout=120)
        assert set(rows) == set(accepted + via_api)
        assert not await stack.fastpath_rows(refused)  # the refused ones were never ours
        assert stack.metric('fastpath_feeder_requests_total{status="503"}') >= 3
        assert stack.stop() == 0
