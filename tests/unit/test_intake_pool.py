"""The fastpath worker pool with a stand-in process function (spawned workers import it from
this module): results, error kinds, fingerprints broadcast, and workers that die or hang."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from oonibackend.metrics import Metrics
from workers.intake.pool import Pool

STUB = "tests.unit.test_intake_pool:stub_process"


class MeasurementError(Exception):
    pass


class ScorerCrash(MeasurementError):
    pass


def stub_process(raw: bytes, uid: str, fingerprints, **kw) -> dict:
    """Behaviour chosen by the body: ok, invalid, crash, bug, die, segv, hang, once:<file>."""
    cmd, _, arg = raw.partition(b":")
    if cmd == b"invalid":
        raise MeasurementError("not a measurement")
    if cmd == b"crash":
        raise ScorerCrash("scorer crashed")
    if cmd == b"bug":
        raise KeyError("oops")
    if cmd == b"die":
        os.kill(os.getpid(), signal.SIGKILL)
    if cmd == b"segv":
        ctypes.string_at(0)
    if cmd == b"hang":
        time.sleep(3600)
    if cmd == b"once":  # die the first time only
        flag = Path(arg.decode())
        if not flag.exists():
            flag.write_text("x")
            os._exit(9)
    if cmd == b"fp":
        return {"fastpath": [{"uid": uid, "fp": fingerprints}]}
    if cmd == b"none":
        return {}
    return {"fastpath": [{"uid": uid, "pid": os.getpid()}]}


@dataclass(eq=False)
class Item:
    uid: str
    attempts: int = 0


def item(i: int) -> Item:
    return Item(f"20240101120000.{i:06d}_IT_webconnectivity_{i:016x}")


class Harness:
    def __init__(self, size: int = 2, **kw) -> None:
        self.done: dict[str, dict] = {}
        self.errors: dict[str, tuple[bytes, str, str]] = {}
        self.metrics = Metrics("t")
        self.pool: Pool[Item] = Pool(size, on_done=self._done, on_error=self._error,
                                     metrics=self.metrics, process_ref=STUB,
                                     fingerprints_ref=None, log_format="text", **kw)

    def _done(self, it: Item, rows: dict, seconds: float) -> None:
        self.done[it.uid] = rows

    def _error(self, it: Item, body: bytes, kind: str, message: str) -> None:
        self.errors[it.uid] = (body, kind, message)

    async def send(self, it: Item, body: bytes) -> None:
        await asyncio.wait_for(self.pool.wait_for_slot(), 30)
        self.pool.send(it, body)

    async def wait(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.done) + len(self.errors) < n:
            assert time.monotonic() < deadline, (self.done, self.errors)
            await asyncio.sleep(0.01)


async def test_results_and_error_kinds():
    h = Harness(2)
    await h.pool.start()
    try:
        bodies = {item(1): b"ok", item(2): b"invalid", item(3): b"crash", item(4): b"bug",
                  item(5): b"none", item(6): b"ok"}
        for it, body in bodies.items():
            await h.send(it, body)
        await h.wait(6)
        assert set(h.done) == {item(1).uid, item(5).uid, item(6).uid}
        assert h.done[item(5).uid] == {}
        kinds = {u: k for u, (_, k, _) in h.errors.items()}
        assert kinds == {item(2).uid: "invalid", item(3).uid: "crash",
                         item(4).uid: "unexpected"}
        assert h.errors[item(3).uid][0] == b"crash"  # the body, for the quarantine
        assert "Traceback" in h.errors[item(4).uid][2]
        assert await h.pool.drain(1)
    finally:
        await h.pool.close()


async def test_fingerprints_reach_every_worker_including_restarted_ones():
    h = Harness(2)
    await h.pool.start()
    try:
        h.pool.set_fingerprints([{"name": "d"}], [{"name": "h"}])
        for i in range(4):
            await h.send(item(i), b"fp")
        await h.wait(4)
        fps = [rows["fastpath"][0]["fp"] for rows in h.done.values()]
        assert all(fp == {"dns": [{"name": "d"}], "http": [{"name": "h"}]} for fp in fps)
        await h.send(item(10), b"die")  # dies twice: reported, and the worker replaced
        await h.wait(5)
        h.done.clear()
        for i in range(20, 24):
            await h.send(item(i), b"fp")
        await h.wait(5)  # 4 rows + the error of item 10
        await asyncio.wait_for(h.pool.drain(30), 31)
        assert all(r["fastpath"][0]["fp"]["dns"] == [{"name": "d"}] for r in h.done.values())
    finally:
        await h.pool.close()


async def test_worker_death_retries_once_then_reports(tmp_path):
    h = Harness(2)
    await h.pool.start()
    try:
        await h.send(item(1), b"once:" + str(tmp_path / "flag").encode())
        await h.send(item(2), b"die")
        await h.send(item(3), b"segv")
        for i in range(4, 12):  # innocent neighbours of the poison pills
            await h.send(item(i), b"ok")
        await h.wait(11)
        assert item(1).uid in h.done  # died once, scored on retry
        for i in (2, 3):
            body, kind, message = h.errors[item(i).uid]
            assert kind == "died" and "2 times" in message
        assert all(item(i).uid in h.done for i in range(4, 12))
        assert h.metrics.value("worker_deaths_total") >= 5
        # Replacements keep working.
        await h.send(item(20), b"ok")
        await h.wait(12)
        assert item(20).uid in h.done
    finally:
        await h.pool.close()


async def test_hung_worker_is_killed():
    h = Harness(1, item_timeout=0.5)
    await h.pool.start()
    try:
        await h.send(item(1), b"hang")
        await h.send(item(2), b"ok")
        await h.wait(2, timeout=60)
        assert h.errors[item(1).uid][1] == "died"
        assert "timed out" in h.errors[item(1).uid][2]
        assert item(2).uid in h.done
    finally:
        await h.pool.close()


async def test_workers_failing_at_start_do_not_condemn_items():
    h = Harness(1)
    h.pool._process_ref = "tests.unit.test_intake_pool:no_such_function"
    await h.pool.start()
    try:
        h.pool.send(item(1), b"ok")
        h.pool.send(item(2), b"ok")
        deadline = time.monotonic() + 30
        while h.metrics.value("worker_deaths_total") < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert h.errors == {} and h.done == {}  # kept, waiting for a working worker
        assert h.pool.inflight == 2
    finally:
        await h.pool.close()


async def test_close_stops_workers_and_leaves_no_process():
    h = Harness(2)
    await h.pool.start()
    await h.send(item(1), b"ok")
    await h.wait(1)
    pids = {rows["fastpath"][0]["pid"] for rows in h.done.values()}
    await h.pool.close()
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive


_OWNER = textwrap.dedent("""
    import asyncio
    from oonibackend.metrics import Metrics
    from workers.intake.pool import Pool
    from tests.unit.test_intake_pool import STUB, Item, item

    async def main():
        pool = Pool(2, on_done=lambda *a: None, on_error=lambda *a: None, metrics=Metrics(),
                    process_ref=STUB, fingerprints_ref=None, log_format="text")
        await pool.start()
        pool.send(item(1), b"hang")  # one worker stuck in a scorer, one idle
        await asyncio.sleep(1.0)
        print(" ".join(str(w.proc.pid) for w in pool._workers), flush=True)
        await asyncio.sleep(3600)

    if __name__ == "__main__":
        asyncio.run(main())
""")


def test_workers_do_not_outlive_a_killed_main_process(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(_OWNER)
    # (stderr: its resource tracker reports the killed process's queues; expected here)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[2],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and b"Z" not in _state(p) for p in pids):
        assert time.monotonic() < deadline, "orphaned workers still running"
        time.sleep(0.05)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


async def test_poison_pill_in_a_batch_blames_only_itself():
    """Items go to a worker in batches; one killing its worker mid-batch is the only one
    reported (after its second try), every other item of the batch is scored."""
    h = Harness(1, prefetch=16)
    await h.pool.start()
    try:
        bodies = [(item(i), b"die" if i == 5 else b"ok") for i in range(12)]
        for it, body in bodies:  # in one loop iteration: one message
            assert h.pool.room() > 0
            h.pool.send(it, body)
        await h.wait(12)
        assert set(h.errors) == {item(5).uid}
        assert h.errors[item(5).uid][1] == "died"
        assert set(h.done) == {item(i).uid for i in range(12) if i != 5}
    finally:
        await h.pool.close()
