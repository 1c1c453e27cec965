"""A real full disk under the real backend (`oonibackend run`): the spool and the fastpath's
intake queue live on a small tmpfs (64 MiB), the database, logs and keys elsewhere.

1. Submissions flow while a ballast file and the measurements themselves fill the disk; it
   stays full for a while (submissions are refused 503), then the ballast is deleted. Every
   measurement answered 200 must reach `fastpath` exactly once within DRAIN_LIMIT seconds,
   without a restart, and the forwarder must never have dropped one as "gone"
   (`fastpath_gone_total`). Meanwhile the WAL directory must not fill with empty segments.
2. The disk is full at start: the backend is killed with measurements whose `.post` files
   are lost (as after a power loss; the WAL has them), the disk is filled, `run` is started
   again. The API must come up degraded: /health 503 `spool_recovery_pending`, reads 200,
   submissions 503 with Retry-After, no crash loop. Once space is freed it recovers by
   itself and every acknowledged measurement is delivered, without a restart.

Each scenario prints one line: acknowledged, found, lost, duplicated, drain seconds (counted
with count() and uniqExact(measurement_uid) without FINAL, merges of `fastpath` stopped, so a
duplicate cannot hide in the ReplacingMergeTree).

Needs root to mount the tmpfs (CI runs as root); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from oonibackend import ids
from tests.conftest import write_config
from tests.faults.harness import Load, api_metric, assert_exactly_once, settle, stop_merges
from tests.integration.test_fastpath_stack import Stack, open_report, sample

pytestmark = pytest.mark.faults

TMPFS_MB = 64
RATE = 200              # submissions per second while loading
MAX_INFLIGHT = 32
LEAVE_FREE = 8 << 20    # what the ballast leaves for the measurements to fill (bytes)
FILL_LIMIT = 60.0       # seconds the load may take to fill the disk
FULL_SECONDS = 8.0      # how long the disk stays full under load
AFTER_FREE_SECONDS = 3.0
DRAIN_LIMIT = 120.0     # from freeing space until every acknowledged row is in fastpath
MAX_WAL_FILES = 20      # segments in spool/wal at any time (5,000+ before the fix)


# -- the disk ----------------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int = TMPFS_MB) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) to mount a tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs",
                        str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): "
                    f"{(r.stderr or r.stdout).strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> int:
    """Grow the ballast file until `leave` bytes are free (0: until ENOSPC); its size."""
    ballast = disk / "ballast"
    chunk = b"\xa5" * (1 << 20)
    with open(ballast, "ab") as f:
        while True:
            free = shutil.disk_usage(disk).free
            want = min(len(chunk), free - leave) if leave else len(chunk)
            if want <= 0:
                break
            try:
                f.write(chunk[:want])
                f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    if not leave:  # the last pages: small writes until nothing fits
        fd = os.open(ballast, os.O_WRONLY | os.O_APPEND)
        try:
            while True:
                try:
                    os.write(fd, b"\xa5" * 512)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        finally:
            os.close(fd)
    return ballast.stat().st_size


def free_space(disk: Path) -> None:
    (disk / "ballast").unlink(missing_ok=True)


def litter(disk: Path) -> tuple[int, int]:
    """(files in spool/wal, .post.tmp files in the spool)."""
    try:
        wal_files = len(os.listdir(disk / "spool" / "wal"))
    except FileNotFoundError:
        wal_files = 0
    tmp = sum(1 for _ in (disk / "spool" / "incoming").rglob("*.post.tmp"))
    return wal_files, tmp


def make_stack(tmp_path: Path, disk: Path, geoip: tuple[Path, Path]) -> Stack:
    """`run` with the spool and the fastpath's directory (intake queue) on the tmpfs."""
    s = Stack(tmp_path / "data", geoip, dir=str(disk / "fastpath"), batch_interval=0.3)
    s.backend.sections["spool"] = {"dir": str(disk / "spool"), "min_free_mb": 1}
    write_config(s.backend.config, s.backend.sections)
    return s


# -- the verdict ---------------------------------------------------------------------------------

async def report(stack: Stack, name: str, acked: list[str], since: float,
                 extra: str = "") -> None:
    assert len(acked) == len(set(acked))
    rows, distinct, drained = await settle(stack, acked, since, DRAIN_LIMIT)
    lost, duplicated = len(acked) - distinct, rows - distinct
    gone = await api_metric(stack, "fastpath_gone_total")
    print(f"\n{name}: acknowledged {len(acked)}, found {distinct}, lost {lost}, "
          f"duplicated {duplicated}, drain {drained:.1f} s, fastpath_gone_total {gone:g}"
          f"{extra}")
    await assert_exactly_once(stack, acked, rows, distinct, drained, DRAIN_LIMIT)
    assert gone == 0, "the forwarder dropped acknowledged measurements as gone"


# -- the load ------------------------------------------------------------------------------------

# -- 1. the disk fills under load, then space comes back ----------------------------------------

async def test_disk_fills_under_load_then_space_returns(tmp_path, geoip_files):
    with tmpfs(tmp_path / "disk") as disk, make_stack(tmp_path, disk, geoip_files) as stack:
        stack.start()
        await stop_merges(stack)
        ballast = fill(disk, leave=LEAVE_FREE)
        load = Load(stack.api, RATE, MAX_INFLIGHT)
        task = asyncio.create_task(load.run())
        max_wal = 0
        t0 = time.monotonic()
        full_at = None
        while True:
            await asyncio.sleep(0.2)
            max_wal = max(max_wal, litter(disk)[0])
            assert not task.done(), task.exception() if task.done() else None
            now = time.monotonic()
            if full_at is None and load.refused.get("503", 0) >= 20:
                full_at = now  # the spool refuses: the disk is full
            if full_at is not None and now - full_at >= FULL_SECONDS:
                break
            if full_at is None and now - t0 > FILL_LIMIT:
                load.stop.set()
                await task
                raise AssertionError(f"the disk did not fill: {load.refused}, "
                                     f"{shutil.disk_usage(disk)}")
        refused_while_full = dict(load.refused)
        free_space(disk)
        freed = time.monotonic()
        while time.monotonic() - freed < AFTER_FREE_SECONDS:
            await asyncio.sleep(0.2)
            max_wal = max(max_wal, litter(disk)[0])
        load.stop.set()
        await task
        acked_after = sum(1 for _ in load.acked)  # all of them, for the line below
        file_errors = await api_metric(stack, "spool_file_errors_total")
        waits = await api_metric(stack, "fastpath_file_waits_total")
        wal_errors = await api_metric(stack, "spool_errors_total")
        await report(stack, "disk full under load", load.acked, freed,
                     f" (ballast {ballast >> 20} MiB, refused while full {refused_while_full}, "
                     f"WAL appends refused {wal_errors:g}, .post writes failed "
                     f"{file_errors:g}, deliveries that waited for their file {waits:g}, "
                     f"most files in spool/wal {max_wal}, filled in {full_at - t0:.1f} s)")
        assert acked_after > 100
        assert not load.refused.get("503 without Retry-After"), load.refused
        assert wal_errors > 0  # the disk really was full for the WAL
        assert max_wal <= MAX_WAL_FILES
        assert litter(disk)[1] == 0  # no .post.tmp left
        # Accepting again: one more measurement goes all the way.
        more = Load(stack.api, RATE, MAX_INFLIGHT)
        more_task = asyncio.create_task(more.run())
        await asyncio.sleep(1.0)
        more.stop.set()
        await more_task
        assert more.acked and not more.refused.get("503")
        await stack.wait_rows(more.acked)


# -- 2. the disk is full at start -----------------------------------------------------------------

async def _health(s: aiohttp.ClientSession, api: str) -> tuple[int, dict]:
    async with s.get(api + "/health") as r:
        return r.status, await r.json()


async def _post(s: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict, str]:
    async with s.post(url, json=body) as r:
        return r.status, await r.json(), r.headers.get("Retry-After", "")


async def test_disk_full_at_start_degraded_then_recovers(tmp_path, geoip_files):
    with tmpfs(tmp_path / "disk") as disk, make_stack(tmp_path, disk, geoip_files) as stack:
        stack.start()
        msm = sample("report1.json")
        # Deliveries wait (fastpath stopped), so nothing is in `.delivered` when it dies.
        fp_pid = stack._pid(disk / "fastpath" / "queue" / "lock", "fastpath")
        assert fp_pid
        os.kill(fp_pid, signal.SIGSTOP)
        acked: list[str] = []
        async with aiohttp.ClientSession() as s:
            rid = await open_report(s, stack.api, msm)
            body = {"format": "json", "content": {**msm, "report_id": rid}}
            for _ in range(10):
                results = await asyncio.gather(*(
                    _post(s, f"{stack.api}/report/{rid}", body) for _ in range(30)))
                acked += [b["measurement_uid"] for st, b, _ in results if st == 200]
        assert len(acked) == 300
        # Power loss: everything dies before a checkpoint, the files the kernel had not
        # written yet are lost; the WAL has them.
        stack.backend.kill_group()
        assert [p for p in os.listdir(disk / "spool" / "wal") if p.endswith(".wal")]
        lost_files = acked[::3]
        for uid in lost_files:
            post = disk / "spool" / "incoming" / ids.hour_dir_of(uid) / f"{uid}.post"
            post.unlink(missing_ok=True)  # (or never written: killed first)
        fill(disk)
        log_mark = len(stack.log())

        stack.start()  # must not crash-loop: the API comes up degraded
        await stop_merges(stack)
        async with aiohttp.ClientSession() as s:
            status, health = await _health(s, stack.api)
            deadline = time.monotonic() + 10
            while "spool_recovery_pending" not in health["errors"] and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                status, health = await _health(s, stack.api)
            assert status == 503 and health["status"] == "fail", health
            assert "spool_recovery_pending" in health["errors"], health
            async with s.get(stack.api + "/api/v1/measurements?limit=1") as r:
                assert r.status == 200
            rid2 = await open_report(s, stack.api, msm)  # writes nothing: still 200
            body2 = {"format": "json", "content": {**msm, "report_id": rid2}}
            st, err, retry_after = await _post(s, f"{stack.api}/report/{rid2}", body2)
            assert st == 503 and "error" in err and int(retry_after) > 0
            st, err, retry_after = await _post(s, f"{stack.api}/api/v1/submit_measurement",
                                               body2)
            assert st == 503 and "error" in err and int(retry_after) > 0
            await asyncio.sleep(3.0)  # stays up, degraded, retrying
            assert stack.backend.proc is not None and stack.backend.proc.poll() is None
            log = stack.log()[log_mark:]
            failed_starts = len(re.findall(r"spool recovery failed", log))
            assert failed_starts == 1, f"the API restarted {failed_starts} times\n{log[-3000:]}"
            status, health = await _health(s, stack.api)
            assert "spool_recovery_pending" in health["errors"]

            free_space(disk)
            freed = time.monotonic()
            while True:
                status, health = await _health(s, stack.api)
                if "spool_recovery_pending" not in health["errors"]:
                    break
                assert time.monotonic() - freed < 30, health
                await asyncio.sleep(0.2)
            recovered = time.monotonic() - freed
            st, got, _ = await _post(s, f"{stack.api}/report/{rid2}", body2)
            assert st == 200, got  # accepting again, without a restart
            acked.append(got["measurement_uid"])
        await report(stack, "disk full at start", acked, freed,
                     f" (files lost and rewritten from the WAL {len(lost_files)}, "
                     f"recovered {recovered:.1f} s after space was freed, "
                     f"failed starts {failed_starts})")
