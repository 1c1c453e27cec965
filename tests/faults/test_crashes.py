"""Crashes under load: measurements keep arriving through the API (about RATE a second) while
the database owner is SIGKILLed or SIGSTOPped, the fastpath is SIGKILLed, or the whole
process group is SIGKILLed and `oonibackend run` started again on the same data directory.

Every submission the API answered 200 must end in the `fastpath` table exactly once: counted
with count() and uniqExact(measurement_uid) *without* FINAL, with merges of the table stopped
so the ReplacingMergeTree cannot hide a duplicate. Each scenario prints one line:

    <scenario>: acknowledged N, found N, lost 0, duplicated 0, drain S s

(drain: from the end of the load until every acknowledged measurement is in the table).
test_fastpath_crash.py kills the fastpath and the owner with the feeder fed directly; here the
load goes through the API and the forwarder, and duplicates are counted before any merge.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from oonibackend import storage
from oonibackend.storage import DatabaseError
from tests.integration.test_fastpath_stack import Stack, open_report, sample

pytestmark = pytest.mark.faults

RATE = 150  # submissions per second
LOAD_SECONDS = 12.0
MAX_INFLIGHT = 64  # beyond this a tick is skipped (counted, never acknowledged)
DRAIN_LIMIT = 60.0  # seconds from the end of the load until every row is in


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("faults-crashes") / "data", geoip_files,
               batch_interval=0.3).start() as s:
        yield s


@dataclass
class Load:
    """Submissions through the API at a steady rate; a uid counts once answered 200."""

    api: str
    rate: float = RATE
    acked: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)

    async def run(self, seconds: float, faults: list[tuple[float, Callable[[], Awaitable]]]
                  ) -> None:
        msm = sample("report1.json")
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=MAX_INFLIGHT)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as s:
            rid = await open_report(s, self.api, msm)
            body = json.dumps({"format": "json",
                               "content": {**msm, "report_id": rid}}).encode()
            loop = asyncio.get_running_loop()
            inflight: set[asyncio.Task] = set()
            injected = [asyncio.create_task(self._later(at, f)) for at, f in faults]
            t0 = loop.time()
            i = 0
            while True:
                due = t0 + i / self.rate
                if due - t0 >= seconds:
                    break
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                i += 1
                if len(inflight) >= MAX_INFLIGHT:
                    self.refused["skipped"] += 1
                    continue
                t = asyncio.create_task(self._one(s, rid, body))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            await asyncio.gather(*inflight, *injected)

    async def _later(self, at: float, fault: Callable[[], Awaitable]) -> None:
        await asyncio.sleep(at)
        await fault()

    async def _one(self, s: aiohttp.ClientSession, rid: str, body: bytes) -> None:
        try:
            async with s.post(f"{self.api}/report/{rid}", data=body) as r:
                if r.status == 200:
                    self.acked.append((await r.json())["measurement_uid"])
                else:
                    self.refused[str(r.status)] += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            self.refused[type(e).__name__] += 1


async def retry(what: Callable[[], Awaitable], timeout: float = 60.0):
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

    await retry(stop)


async def counts(stack: Stack, uids: list[str]) -> tuple[int, int]:
    """(rows, distinct uids) among `uids` in fastpath, without FINAL."""
    rows = await stack.query_uids(
        "SELECT count() AS n, uniqExact(measurement_uid) AS u FROM fastpath "
        "WHERE has(%(u)s, measurement_uid)", uids)
    return sum(r["n"] for r in rows), sum(r["u"] for r in rows)


def metric(stack: Stack, name: str) -> float | None:
    try:
        return stack.metric(name)
    except OSError:
        return None


async def settle(stack: Stack, uids: list[str], since: float) -> tuple[int, int, float]:
    """Wait until every uid has a row (drain time, from `since`), then until the fastpath's
    queue is empty (whatever is still coming is in); returns (rows, distinct, drain)."""
    deadline = since + DRAIN_LIMIT
    drain = None
    while time.monotonic() < deadline:
        n, u = await counts(stack, uids)
        if u == len(uids):
            drain = time.monotonic() - since
            break
        await asyncio.sleep(0.25)
    while time.monotonic() < deadline:
        if await asyncio.to_thread(metric, stack, "fastpath_queue_depth") == 0:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)  # a late duplicate would be inserted by now
    n, u = await counts(stack, uids)
    return n, u, drain if drain is not None else float("inf")


async def scenario(stack: Stack, name: str,
                   faults: list[tuple[float, Callable[[], Awaitable]]]) -> None:
    await stop_merges(stack)
    load = Load(stack.api)
    t0 = time.monotonic()
    await load.run(LOAD_SECONDS, faults)
    end = time.monotonic()
    acked = load.acked
    assert len(acked) == len(set(acked))
    rows, distinct, drain = await settle(stack, acked, end)
    lost, duplicated = len(acked) - distinct, rows - distinct
    replayed = await asyncio.to_thread(metric, stack, "fastpath_batches_replayed_total")
    print(f"\n{name}: acknowledged {len(acked)}, found {distinct}, lost {lost}, "
          f"duplicated {duplicated}, drain {drain:.1f} s (load {end - t0:.1f} s, "
          f"not acknowledged {dict(load.refused)}, batches replayed by the running "
          f"fastpath {replayed})")
    assert len(acked) > RATE * LOAD_SECONDS * 0.3, load.refused  # the load did flow
    if duplicated:
        dups = await stack.query_uids(
            "SELECT measurement_uid, count() AS n FROM fastpath WHERE has(%(u)s, "
            "measurement_uid) GROUP BY measurement_uid HAVING n > 1", acked)
        raise AssertionError(f"{duplicated} duplicated rows, e.g. {dups[:3]}")
    assert lost == 0, f"{lost} acknowledged measurements missing\n{stack.log()[-3000:]}"
    assert drain < DRAIN_LIMIT


async def restarted(stack: Stack, which: str, old: int) -> None:
    await asyncio.to_thread(stack.wait_restarted, which, old)
    if which == "owner":
        await stop_merges(stack)


async def test_sigkill_database_owner(stack):
    async def kill() -> None:
        await restarted(stack, "owner", stack.kill("owner"))

    await scenario(stack, "SIGKILL database owner", [(4.0, kill)])


async def test_sigstop_database_owner(stack):
    async def stop() -> None:
        pid = stack.owner_pid()
        assert pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(4.0)
        finally:
            os.kill(pid, signal.SIGCONT)

    await scenario(stack, "SIGSTOP database owner 4 s", [(3.0, stop)])


async def test_sigkill_fastpath(stack):
    async def kill() -> None:
        await restarted(stack, "fastpath", stack.kill("fastpath"))

    # Twice: the second may land while the first restart still replays its batches.
    await scenario(stack, "SIGKILL fastpath", [(3.0, kill), (7.0, kill)])


async def test_sigkill_process_group_and_run_again(stack):
    """Last: everything dies at once (API, forwarder, fastpath, owner); `run` again on the
    same data directory, while the load goes on (refused until the API is back)."""
    async def crash() -> None:
        stack.backend.kill_group()
        await asyncio.to_thread(stack.start)
        await stop_merges(stack)

    await scenario(stack, "SIGKILL process group + run again", [(4.0, crash)])
