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
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.faults.harness import (
    Load,
    assert_exactly_once,
    feeder_metric,
    settle,
    stop_merges,
)
from tests.integration.test_fastpath_stack import Stack

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


async def scenario(stack: Stack, name: str,
                   faults: list[tuple[float, Callable[[], Awaitable]]]) -> None:
    await stop_merges(stack)
    load = Load(stack.api, RATE, MAX_INFLIGHT)
    t0 = time.monotonic()
    await load.run(LOAD_SECONDS, faults)
    end = time.monotonic()
    acked = load.acked
    assert len(acked) == len(set(acked))
    rows, distinct, drain = await settle(stack, acked, end, DRAIN_LIMIT)
    lost, duplicated = len(acked) - distinct, rows - distinct
    replayed = await asyncio.to_thread(feeder_metric, stack, "fastpath_batches_replayed_total")
    print(f"\n{name}: acknowledged {len(acked)}, found {distinct}, lost {lost}, "
          f"duplicated {duplicated}, drain {drain:.1f} s (load {end - t0:.1f} s, "
          f"not acknowledged {dict(load.refused)}, batches replayed by the running "
          f"fastpath {replayed})")
    assert len(acked) > RATE * LOAD_SECONDS * 0.3, load.refused  # the load did flow
    await assert_exactly_once(stack, acked, rows, distinct, drain, DRAIN_LIMIT)


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
