"""What every fault scenario needs: a steady load of submissions through the API, and the
count of acknowledged uids against the rows in `fastpath` (read without FINAL, merges
stopped, so a duplicate row is seen even where a merge would hide it later)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from oonibackend import storage
from oonibackend.storage import DatabaseError
from tests.integration.test_fastpath_stack import Stack, open_report, sample

Fault = tuple[float, Callable[[], Awaitable]]  # (seconds after the load starts, action)


@dataclass
class Load:
    """Submissions through the API at `rate` per second, for `seconds` or until `stop` is
    set; a uid counts once answered 200. At most `max_inflight` at once: a tick beyond that
    is skipped (counted, never acknowledged)."""

    api: str
    rate: float
    max_inflight: int
    acked: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    last_refusal: float = 0.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, seconds: float | None = None, faults: list[Fault] = ()) -> None:
        msm = sample("report1.json")
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=self.max_inflight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as s:
            rid = await open_report(s, self.api, msm)
            body = json.dumps({"format": "json",
                               "content": {**msm, "report_id": rid}}).encode()
            loop = asyncio.get_running_loop()
            inflight: set[asyncio.Task] = set()
            injected = [asyncio.create_task(self._later(at, f)) for at, f in faults]
            t0, i = loop.time(), 0
            while not self.stop.is_set():
                due = t0 + i / self.rate
                if seconds is not None and due - t0 >= seconds:
                    break
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                i += 1
                if len(inflight) >= self.max_inflight:
                    self.refused["skipped"] += 1
                    continue
                t = asyncio.create_task(self._one(s, rid, body))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            await asyncio.gather(*inflight, *injected)

    @staticmethod
    async def _later(at: float, fault: Callable[[], Awaitable]) -> None:
        await asyncio.sleep(at)
        await fault()

    async def _one(self, s: aiohttp.ClientSession, rid: str, body: bytes) -> None:
        try:
            async with s.post(f"{self.api}/report/{rid}", data=body) as r:
                if r.status == 200:
                    self.acked.append((await r.json())["measurement_uid"])
                    return
                self.refused[str(r.status)] += 1
                if r.status == 503 and not r.headers.get("Retry-After"):
                    self.refused["503 without Retry-After"] += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            self.refused[type(e).__name__] += 1
        self.last_refusal = time.monotonic()


async def retry_db(what: Callable[[], Awaitable], timeout: float = 60.0):
    """`what()` until the database answers (it may be restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await what()
        except DatabaseError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def stop_merges(stack: Stack) -> None:
    """No merges of `fastpath`: a duplicate stays visible (runtime state of the database
    process: again after each restart of the owner)."""
    async def stop() -> None:
        db = storage.connect(stack.cfg())
        try:
            await db.execute("SYSTEM STOP MERGES fastpath")
        finally:
            await db.close()

    await retry_db(stop)


async def counts(stack: Stack, uids: list[str]) -> tuple[int, int]:
    """(rows, distinct uids) among `uids` in fastpath, without FINAL."""
    rows = await stack.query_uids(
        "SELECT count() AS n, uniqExact(measurement_uid) AS u FROM fastpath "
        "WHERE has(%(u)s, measurement_uid)", uids)
    return sum(r["n"] for r in rows), sum(r["u"] for r in rows)


def feeder_metric(stack: Stack, name: str) -> float | None:
    """A value of the fastpath's /metrics, None while it does not answer."""
    try:
        return stack.metric(name)
    except OSError:
        return None


async def api_metric(stack: Stack, name: str) -> float:
    """A counter of the API's /metrics (0 when never incremented)."""
    async with aiohttp.ClientSession() as s, s.get(stack.api + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("oonibackend_" + name + " ", "oonibackend_" + name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def settle(stack: Stack, uids: list[str], since: float,
                 limit: float) -> tuple[int, int, float]:
    """Wait until every uid has a row (the drain time, from `since`; inf past `limit`), then
    until the fastpath's queue is empty and a late duplicate would be in; returns (rows,
    distinct uids, drain seconds)."""
    deadline = since + limit
    drain = None
    while time.monotonic() < deadline:
        _, u = await counts(stack, uids)
        if u == len(uids):
            drain = time.monotonic() - since
            break
        await asyncio.sleep(0.25)
    while time.monotonic() < deadline:
        if await asyncio.to_thread(feeder_metric, stack, "fastpath_queue_depth") == 0:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.5)
    n, u = await counts(stack, uids)
    return n, u, drain if drain is not None else float("inf")


async def assert_exactly_once(stack: Stack, acked: list[str], rows: int, distinct: int,
                              drain: float, limit: float) -> None:
    """Every acknowledged uid has exactly one row, all in within `limit` seconds."""
    if rows > distinct:
        dups = await stack.query_uids(
            "SELECT measurement_uid, count() AS n FROM fastpath WHERE has(%(u)s, "
            "measurement_uid) GROUP BY measurement_uid HAVING n > 1", acked)
        raise AssertionError(f"{rows - distinct} duplicated rows, e.g. {dups[:3]}")
    lost = len(acked) - distinct
    assert lost == 0, f"{lost} acknowledged measurements missing\n{stack.log()[-3000:]}"
    assert drain < limit
