"""Forwarder against a real (fake) fastpath HTTP server: prompt delivery, back-off while down,
start-up scan, in-memory overflow and rescan — each measurement delivered exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from oonibackend import config, ids
from oonibackend.metrics import Metrics
from oonibackend.spool import Forwarder, Spool, forwarder, layout
from tests.conftest import free_port
from tests.fakefastpath import FakeFastpath


def make_cfg(tmp_path: Path, port: int, **fastpath: object) -> config.Config:
    cfg = config.load(None, data_dir=str(tmp_path))
    cfg.fastpath.urls = [f"http://127.0.0.1:{port}/"]
    cfg.fastpath.retry_min = 0.05
    cfg.fastpath.retry_max = 0.2
    cfg.fastpath.timeout = 2.0
    for k, v in fastpath.items():
        setattr(cfg.fastpath, k, v)
    return cfg


async def until(cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


class Stack:
    def __init__(self, cfg: config.Config) -> None:
        self.metrics = Metrics()
        self.spool = Spool(cfg, self.metrics)
        self.fwd = Forwarder(cfg, self.spool, self.metrics)

    async def __aenter__(self) -> Stack:
        await self.spool.start()
        await self.fwd.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.fwd.close()
        await self.spool.close()

    async def submit(self, n: int, body: bytes | None = None) -> dict[str, bytes]:
        out = {}
        for i in range(n):
            uid = ids.new_measurement_uid("IT", "webconnectivity")
            b = body if body is not None else b'{"n": %d}' % i
            await self.spool.write(ids.hour_dir_of(uid), uid, b)
            self.fwd.enqueue(ids.hour_dir_of(uid), uid, b)
            out[uid] = b
        return out


def delivered_on_disk(tmp_path: Path) -> set[str]:
    out: set[str] = set()
    for d in layout.hour_dirs(tmp_path / "spool" / "incoming"):
        out |= layout.read_delivered(str(tmp_path / "spool" / "incoming" / d))
    return out


async def test_prompt_delivery_and_delivered_record(tmp_path):
    port = free_port()
    fp = FakeFastpath(port).start()
    try:
        async with Stack(make_cfg(tmp_path, port)) as s:
            t0 = time.monotonic()
            sent = await s.submit(1)
            assert await until(lambda: set(fp.counts()) == set(sent), 5)
            assert time.monotonic() - t0 < 1.0
            assert fp.bodies() == sent
            assert await until(lambda: delivered_on_disk(tmp_path) == set(sent), 3)
            assert s.metrics.value("fastpath_delivered_total") == 1
    finally:
        fp.stop()


async def test_fastpath_down_then_503_then_up_exactly_once(tmp_path):
    port = free_port()
    async with Stack(make_cfg(tmp_path, port, concurrency=4)) as s:
        sent = await s.submit(40)  # answered although nothing listens
        await asyncio.sleep(0.5)
        assert s.fwd.pending == 40
        assert s.metrics.value("fastpath_failed_attempts_total") > 0
        fp = FakeFastpath(port, fail_first=5).start()
        try:
            assert await until(lambda: set(fp.counts()) == set(sent))
            await asyncio.sleep(0.5)
            assert all(c == 1 for c in fp.counts().values())
            assert fp.refused == 5 and fp.bodies() == sent
            assert s.fwd.pending == 0
        finally:
            fp.stop()
    assert delivered_on_disk(tmp_path) == set(sent)


async def test_startup_scan_delivers_only_undelivered(tmp_path):
    port = free_port()
    cfg = make_cfg(tmp_path, port)
    async with Stack(cfg) as s:  # fastpath down: everything stays pending
        sent = await s.submit(10)
    uids = sorted(sent)
    inc = tmp_path / "spool" / "incoming"
    done: dict[str, list[str]] = {}
    for u in uids[:3]:
        done.setdefault(ids.hour_dir_of(u), []).append(u)
    layout.append_delivered(inc, done)
    fp = FakeFastpath(port).start()
    try:
        async with Stack(cfg):
            assert await until(lambda: set(fp.counts()) == set(uids[3:]))
            await asyncio.sleep(0.3)
            assert sorted(fp.counts()) == uids[3:]
            assert all(c == 1 for c in fp.counts().values())
    finally:
        fp.stop()


async def test_overflow_rescans_the_spool(tmp_path):
    port = free_port()
    async with Stack(make_cfg(tmp_path, port, max_pending_in_memory=5, concurrency=2)) as s:
        sent = await s.submit(60)
        assert s.fwd.pending <= 5 + 2
        fp = FakeFastpath(port).start()
        try:
            assert await until(lambda: set(fp.counts()) == set(sent))
            await asyncio.sleep(0.3)
            assert all(c == 1 for c in fp.counts().values())
            assert fp.bodies() == sent
        finally:
            fp.stop()


async def test_file_gone_before_delivery(tmp_path):
    port = free_port()
    async with Stack(make_cfg(tmp_path, port)) as s:
        uid = ids.new_measurement_uid("IT", "ndt")
        await s.spool.write(ids.hour_dir_of(uid), uid, b"x")
        await s.spool.files_written()
        s.spool.post_path(ids.hour_dir_of(uid), uid).unlink()  # archived by the uploader
        s.fwd.enqueue(ids.hour_dir_of(uid), uid)  # no body in memory: read from disk
        fp = FakeFastpath(port).start()
        try:
            assert await until(lambda: s.metrics.value("fastpath_gone_total") == 1)
            assert s.fwd.pending == 0 and not fp.counts()
        finally:
            fp.stop()


async def test_batches_carry_many_measurements(tmp_path):
    """Pending measurements go in batches: far fewer requests than measurements."""
    port = free_port()
    async with Stack(make_cfg(tmp_path, port, concurrency=2)) as s:
        sent = await s.submit(300)  # fastpath down: all pending
        fp = FakeFastpath(port).start()
        try:
            assert await until(lambda: set(fp.counts()) == set(sent))
            await asyncio.sleep(0.3)
            assert all(c == 1 for c in fp.counts().values()) and fp.bodies() == sent
            assert fp.requests <= 10, fp.requests
        finally:
            fp.stop()
    assert delivered_on_disk(tmp_path) == set(sent)


async def test_older_feeder_is_fed_one_by_one(tmp_path):
    """A feeder without the batch route (400 for "batch") still gets everything, once."""
    port = free_port()
    fp = FakeFastpath(port, batches=False).start()
    try:
        async with Stack(make_cfg(tmp_path, port, concurrency=2)) as s:
            sent = await s.submit(50)
            assert await until(lambda: set(fp.counts()) == set(sent))
            await asyncio.sleep(0.3)
            assert all(c == 1 for c in fp.counts().values()) and fp.bodies() == sent
            assert fp.requests == 50
            assert await until(lambda: delivered_on_disk(tmp_path) == set(sent), 3)
    finally:
        fp.stop()


async def test_batches_of_bodies_read_from_disk_stay_within_the_byte_limit(tmp_path,
                                                                           monkeypatch):
    """Bodies not kept in memory are sized only once read: a batch is cut at BATCH_BYTES
    (the rest goes first next time), so it never grows past what the feeder accepts."""
    monkeypatch.setattr(forwarder, "BATCH_BYTES", 1000)
    port = free_port()
    sizes: list[int] = []
    async with Stack(make_cfg(tmp_path, port, concurrency=1)) as s:
        sent = {}
        for i in range(30):
            uid = ids.new_measurement_uid("IT", "webconnectivity")
            body = b'{"n": %d, "pad": "%s"}' % (i, b"x" * 300)
            await s.spool.write(ids.hour_dir_of(uid), uid, body)
            sent[uid] = body
        await s.spool.files_written()
        for uid in sent:
            s.fwd.enqueue(ids.hour_dir_of(uid), uid)  # no body in memory: read from disk
        fp = FakeFastpath(port, sizes=sizes).start()
        try:
            assert await until(lambda: set(fp.counts()) == set(sent))
            await asyncio.sleep(0.3)
            assert all(c == 1 for c in fp.counts().values()) and fp.bodies() == sent
            assert max(sizes) < 1000 + 400 and fp.requests >= 10
        finally:
            fp.stop()
