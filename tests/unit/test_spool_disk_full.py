"""A full disk, simulated deterministically (writes raise ENOSPC for a while):

1. a `.post` that fails after the WAL write stays owed; the forwarder parks it instead of
   counting it gone, and delivers it exactly once when the retry writes it, without a restart;
2. a WAL replay that fails at start leaves the spool degraded (submissions 503 with
   Retry-After, /health `spool_recovery_pending`), retried until it succeeds;
3. failed appends leave no empty WAL segment and no `.post.tmp` behind.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from oonibackend import ids
from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.errors import error_middleware
from oonibackend.health import FATAL, Monitor
from oonibackend.metrics import Metrics
from oonibackend.routes import collector
from oonibackend.spool import Spool, SpoolError, SpoolUnavailable, layout, wal
from oonibackend.spool import writer as spool_writer
from tests.conftest import free_port
from tests.fakefastpath import FakeFastpath
from tests.unit.test_spool import make_cfg, new_item
from tests.unit.test_spool_forwarder import Stack, delivered_on_disk, until
from tests.unit.test_spool_forwarder import make_cfg as fwd_cfg


def enospc(*_args: object, **_kw: object):
    raise OSError(errno.ENOSPC, "No space left on device")


class DiskFull:
    """`layout.write_post` raising ENOSPC while `full` is set (every spool thread calls it
    through the module, so patching it reaches them all)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = threading.Event()
        self.failures = 0
        orig = layout.write_post

        def write_post(path: str, body: bytes) -> bool:
            if self.full.is_set():
                self.failures += 1
                enospc()
            return orig(path, body)

        monkeypatch.setattr(layout, "write_post", write_post)


class APIStack(Stack):
    """Spool and forwarder started the way the API starts them (degraded on failure)."""

    async def __aenter__(self) -> APIStack:
        await self.spool.start(degraded_ok=True)
        await self.fwd.start()
        return self


def wal_files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "spool" / "wal"))


# -- 1. an owed .post is parked, then delivered once ----------------------------------------

async def test_owed_post_is_delivered_after_the_retry_not_dropped(tmp_path, monkeypatch):
    disk = DiskFull(monkeypatch)
    port = free_port()
    cfg = fwd_cfg(tmp_path, port, concurrency=4)
    cfg.spool.checkpoint_interval = 0.2
    async with Stack(cfg) as s:
        disk.full.set()
        sent = await s.submit(30)  # acknowledged: the WAL write succeeded
        await s.spool.files_written()
        assert disk.failures >= 30
        inc = tmp_path / "spool" / "incoming"
        assert not any(inc.rglob("*.post")) and not any(inc.rglob("*.tmp"))
        assert all(s.spool.owes(ids.hour_dir_of(u), u) for u in sent)
        assert s.metrics.value("spool_files_owed") == 30
        # Nothing listens: the in-memory bodies fail and come back without a body, so the
        # next attempts must read the missing files: owed, so parked, not gone.
        assert await until(lambda: s.metrics.value("fastpath_file_waits_total") >= 30)
        assert s.metrics.value("fastpath_gone_total") == 0
        fp = FakeFastpath(port).start()
        try:
            await asyncio.sleep(0.6)  # several checkpoints retry and fail
            assert s.metrics.value("fastpath_gone_total") == 0
            assert s.fwd.pending == 30 and not fp.counts()
            assert wal_files(tmp_path)  # the WAL keeps them while the files are owed
            disk.full.clear()  # space is back: the next checkpoint writes them
            assert await until(lambda: set(fp.counts()) == set(sent), 10)
            await asyncio.sleep(0.3)
            assert all(c == 1 for c in fp.counts().values())
            assert fp.bodies() == sent
            assert s.fwd.pending == 0 and s.metrics.value("fastpath_gone_total") == 0
            assert s.metrics.value("spool_files_owed") == 0
            assert await until(lambda: delivered_on_disk(tmp_path) == set(sent), 3)
            assert await until(lambda: "LOCK" in wal_files(tmp_path)
                               and not wal.segments(tmp_path / "spool" / "wal"), 5)
        finally:
            fp.stop()


async def test_owed_uid_found_by_the_scan_waits_for_its_file(tmp_path, monkeypatch):
    """An item without a body (rescan, memory cap) whose file is owed is parked too."""
    disk = DiskFull(monkeypatch)
    port = free_port()
    cfg = fwd_cfg(tmp_path, port)
    cfg.spool.checkpoint_interval = 0.2
    fp = FakeFastpath(port).start()
    try:
        async with Stack(cfg) as s:
            disk.full.set()
            uid = ids.new_measurement_uid("IT", "ndt")
            hour = ids.hour_dir_of(uid)
            await s.spool.write(hour, uid, b"owed")
            s.fwd.enqueue(hour, uid)  # no body in memory: read from disk
            assert await until(lambda: s.metrics.value("fastpath_file_waits_total") >= 1)
            assert s.metrics.value("fastpath_gone_total") == 0 and not fp.counts()
            disk.full.clear()
            assert await until(lambda: fp.counts() == {uid: 1}, 10)
            assert fp.bodies() == {uid: b"owed"}
    finally:
        fp.stop()


async def test_a_file_removed_after_it_was_written_is_gone(tmp_path):
    """Not owed and missing: archived by the uploader (the only meaning of "gone")."""
    spool = Spool(make_cfg(tmp_path))
    await spool.start()
    try:
        hour, uid = new_item()
        await spool.write(hour, uid, b"x")
        await spool.files_written()
        assert not spool.owes(hour, uid)
        spool.post_path(hour, uid).unlink()
        assert not spool.owes(hour, uid)
    finally:
        await spool.close()


async def test_failed_delivered_flush_is_kept_and_retried(tmp_path, monkeypatch):
    """`.delivered` appends failing on a full disk are retried, not dropped (a drop would
    re-deliver after the next restart), and no torn line is left behind."""
    port = free_port()
    fp = FakeFastpath(port).start()
    real = layout.append_delivered
    full = threading.Event()
    full.set()

    def append(incoming, batch):
        if full.is_set():
            enospc()
        real(incoming, batch)

    monkeypatch.setattr(layout, "append_delivered", append)
    try:
        async with Stack(fwd_cfg(tmp_path, port)) as s:
            sent = await s.submit(5)
            assert await until(lambda: set(fp.counts()) == set(sent))
            await asyncio.sleep(1.2)  # a couple of failed flushes
            assert delivered_on_disk(tmp_path) == set()
            full.clear()
            assert await until(lambda: delivered_on_disk(tmp_path) == set(sent), 3)
    finally:
        fp.stop()
    # A restart finds nothing pending: nothing is delivered twice.
    fp = FakeFastpath(port).start()
    try:
        async with Stack(fwd_cfg(tmp_path, port)):
            await asyncio.sleep(0.5)
        assert not fp.counts()
    finally:
        fp.stop()


def test_append_delivered_truncates_a_torn_batch(tmp_path, monkeypatch):
    inc = tmp_path / "incoming"
    hour, uid = new_item()
    (inc / hour).mkdir(parents=True)
    layout.append_delivered(inc, {hour: [uid]})
    real_write = os.write
    calls = {"n": 0}

    def short_then_full(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:7]))  # part of the line
        enospc()

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        layout.append_delivered(inc, {hour: [new_item()[1]]})
    monkeypatch.undo()
    assert (inc / hour / layout.DELIVERED).read_text() == uid + "\n"


# -- 2. degraded start ------------------------------------------------------------------------

def _records(n: int) -> list[tuple[str, str, bytes]]:
    out = []
    for i in range(n):
        hour, uid = new_item()
        out.append((uid, hour, b"body %d" % i))
    return out


def _crashed_spool(tmp_path: Path, records: list[tuple[str, str, bytes]]) -> Path:
    """WAL segments left by a crash, their `.post` files missing."""
    wal_dir = tmp_path / "spool" / "wal"
    wal_dir.mkdir(parents=True, exist_ok=True)
    half = len(records) // 2
    for n, part in ((100, records[:half]), (101, records[half:])):
        seg = wal.Segment(wal_dir / f"{n:016d}.wal", sync=False)
        seg.append(b"".join(wal.encode(*r) for r in part))
        seg.close()
    return wal_dir


async def test_recovery_on_a_full_disk_starts_degraded_then_recovers(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_writer, "RECOVERY_RETRY_MIN", 0.05)
    monkeypatch.setattr(spool_writer, "RECOVERY_RETRY_MAX", 0.1)
    records = _records(6)
    wal_dir = _crashed_spool(tmp_path, records)
    segs_before = wal.segments(wal_dir)
    disk = DiskFull(monkeypatch)
    disk.full.set()
    cfg = make_cfg(tmp_path)
    metrics = Metrics()

    # Without degraded_ok (the uploader's replay) the failure is raised, the lock released.
    with pytest.raises(OSError):
        await Spool(cfg).start()

    spool = Spool(cfg, metrics)
    notified = threading.Event()
    spool.add_listener(notified.set)
    await spool.start(degraded_ok=True)
    try:
        assert spool.recovery_pending and "No space left" in spool.recovery_error
        assert metrics.value("spool_recovery_pending") == 1
        with pytest.raises(SpoolUnavailable) as exc:
            await spool.write(*new_item(), b"refused")
        assert isinstance(exc.value, SpoolError) and exc.value.retry_after > 0
        assert all(spool.owes(h, u) for u, h, _ in records)
        # /health: a fatal error while the replay is pending.
        monitor = Monitor(cfg, None, 1, spool=spool)
        errors, check = monitor._spool()
        assert "spool_recovery_pending" in errors and not check["ok"]
        assert "spool_recovery_pending" in FATAL
        await asyncio.sleep(0.4)  # retries keep failing, segments are kept
        assert disk.failures >= 3
        assert wal.segments(wal_dir) == segs_before
        assert not notified.is_set()

        disk.full.clear()
        assert await until(lambda: not spool.recovery_pending, 5)
        assert notified.wait(1)
        assert wal.segments(wal_dir) == []
        inc = tmp_path / "spool" / "incoming"
        for uid, hour, body in records:
            assert Path(layout.post_path(inc, hour, uid)).read_bytes() == body
            assert not spool.owes(hour, uid)
        assert monitor._spool()[0] == []
        await spool.write(*new_item(), b"accepted again")
    finally:
        await spool.close()


async def test_degraded_spool_delivers_everything_after_recovery(tmp_path, monkeypatch):
    """Files of the previous run and the replayed ones reach the fastpath without a
    restart; nothing is delivered from disk while the replay is pending (a file may be
    torn then)."""
    monkeypatch.setattr(spool_writer, "RECOVERY_RETRY_MIN", 0.05)
    monkeypatch.setattr(spool_writer, "RECOVERY_RETRY_MAX", 0.1)
    port = free_port()
    cfg = fwd_cfg(tmp_path, port)
    async with Stack(cfg) as s:  # fastpath down: a pending file from a previous run
        earlier = await s.submit(3)
    records = _records(5)
    _crashed_spool(tmp_path, records)
    inc = tmp_path / "spool" / "incoming"
    torn = Path(layout.post_path(inc, records[0][1], records[0][0]))
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"\0" * 3)  # what a power loss can leave
    disk = DiskFull(monkeypatch)
    disk.full.set()
    fp = FakeFastpath(port).start()
    try:
        async with APIStack(cfg) as s:
            assert s.spool.recovery_pending
            await asyncio.sleep(0.5)
            assert not fp.counts()
            disk.full.clear()
            want = dict(earlier) | {u: b for u, _, b in records}
            assert await until(lambda: set(fp.counts()) == set(want), 10)
            await asyncio.sleep(0.3)
            assert fp.bodies() == want and all(c == 1 for c in fp.counts().values())
            assert s.metrics.value("fastpath_gone_total") == 0
    finally:
        fp.stop()


async def _collector_client(cfg) -> TestClient:
    app = web.Application(middlewares=[error_middleware])
    app[CONFIG] = cfg
    app[METRICS] = Metrics()
    collector.setup(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_submission_routes_answer_503_with_retry_after_while_degraded(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(spool_writer, "RECOVERY_RETRY_MIN", 0.05)
    monkeypatch.setattr(spool_writer, "RECOVERY_RETRY_MAX", 0.1)
    _crashed_spool(tmp_path, _records(2))
    disk = DiskFull(monkeypatch)
    disk.full.set()
    cfg = fwd_cfg(tmp_path, free_port())
    client = await _collector_client(cfg)
    try:
        r = await client.post("/report", json={"probe_cc": "IT", "probe_asn": "AS1",
                                               "test_name": "web_connectivity"})
        assert r.status == 200  # opening a report writes nothing
        rid = (await r.json())["report_id"]
        msm = {"format": "json", "content": {"report_id": rid, "probe_cc": "IT",
                                             "test_name": "web_connectivity"}}
        for path, body in ((f"/report/{rid}", msm),
                           ("/api/v1/submit_measurement", msm)):
            r = await client.post(path, json=body)
            assert r.status == 503
            assert int(r.headers["Retry-After"]) > 0
            assert "error" in await r.json()
        disk.full.clear()
        for _ in range(100):
            r = await client.post(f"/report/{rid}", json=msm)
            if r.status == 200:
                break
            await asyncio.sleep(0.05)
        assert r.status == 200 and "measurement_uid" in await r.json()
    finally:
        await client.close()


# -- 3. no litter --------------------------------------------------------------------------

async def test_failed_appends_leave_no_segments(tmp_path, monkeypatch):
    spool = Spool(make_cfg(tmp_path))
    await spool.start()
    try:
        real = wal.Segment.append
        # First every write fails (the new segment's magic included), then only records.
        mode = {"fail": "all"}

        def append(self, data):
            if mode["fail"] == "all" or (mode["fail"] == "records" and data != wal.MAGIC):
                enospc()
            return real(self, data)

        monkeypatch.setattr(wal.Segment, "append", append)
        for fail in ("all", "records"):
            mode["fail"] = fail
            for _ in range(50):
                with pytest.raises(SpoolError):
                    await spool.write(*new_item(), b"x")
            assert wal_files(tmp_path) == ["LOCK"], fail
        # A segment that holds acknowledged records is kept (abandoned), only that one.
        mode["fail"] = "none"
        hour, uid = new_item()
        await spool.write(hour, uid, b"acked")
        mode["fail"] = "records"
        for _ in range(50):
            with pytest.raises(SpoolError):
                await spool.write(*new_item(), b"x")
        assert len(wal.segments(tmp_path / "spool" / "wal")) == 1
        mode["fail"] = "none"
        await spool.write(*new_item(), b"y")
        assert len(wal.segments(tmp_path / "spool" / "wal")) == 2
        await spool.files_written()
        assert spool.post_path(hour, uid).read_bytes() == b"acked"
    finally:
        await spool.close()
    assert wal.segments(tmp_path / "spool" / "wal") == []


def test_segment_creation_failure_removes_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(OSError):
        wal.Segment(tmp_path / "0000000000000001.wal", sync=True)
    assert os.listdir(tmp_path) == []


def test_write_post_failure_leaves_no_tmp(tmp_path, monkeypatch):
    path = str(tmp_path / "h" / "20210208220710.181572_MA_ndt_7888edc7748936bf.post")
    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(OSError):
        layout.write_post(path, b"body")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "h") == []
    layout.write_post(path, b"body")
    assert os.listdir(tmp_path / "h") == [os.path.basename(path)]
