"""Spool: WAL records, torn tails, recovery after a crash, group commit, checkpoints."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from oonibackend import config, ids
from oonibackend.metrics import Metrics
from oonibackend.spool import Spool, SpoolError, layout, wal


def make_cfg(tmp_path: Path, **spool: object) -> config.Config:
    cfg = config.load(None, data_dir=str(tmp_path))
    for k, v in spool.items():
        setattr(cfg.spool, k, v)
    return cfg


def new_item(cc: str = "IT", testname: str = "webconnectivity") -> tuple[str, str]:
    uid = ids.new_measurement_uid(cc, testname)
    return ids.hour_dir_of(uid), uid


# -- WAL records -------------------------------------------------------------------------------

def test_record_roundtrip():
    recs = [("20210208220710.181572_MA_ndt_7888edc7748936bf", "2021020822_MA_ndt", b"x" * n)
            for n in (0, 1, 1000)]
    data = b"".join(wal.encode(*r) for r in recs)
    out, used = wal.decode(data)
    assert [tuple(r) for r in out] == recs
    assert used == len(data)


def test_decode_stops_at_torn_tail_at_every_offset():
    a = wal.encode("20210208220710.181572_MA_ndt_7888edc7748936bf", "2021020822_MA_ndt", b"a" * 50)
    b = wal.encode("20210208220710.181573_MA_ndt_7888edc7748936bf", "2021020822_MA_ndt", b"b" * 50)
    for cut in range(len(b)):
        out, used = wal.decode(a + b[:cut])
        assert len(out) == 1 and used == len(a)


def test_decode_stops_at_bad_crc():
    a = wal.encode("20210208220710.181572_MA_ndt_7888edc7748936bf", "2021020822_MA_ndt", b"abc")
    bad = bytearray(a)
    bad[-1] ^= 1
    assert wal.decode(bytes(bad)) == ([], 0)
    out, used = wal.decode(a + bytes(bad) + a)
    assert len(out) == 1 and used == len(a)


def test_segment_reader(tmp_path):
    p = tmp_path / "0000000000000001.wal"
    seg = wal.Segment(p, sync=True)
    rec = wal.encode("20210208220710.181572_MA_ndt_7888edc7748936bf", "2021020822_MA_ndt", b"z")
    seg.append(rec + rec[:7])
    seg.close()
    records, torn = wal.read_segment(p)
    assert len(records) == 1 and records[0].body == b"z" and torn == 7
    q = tmp_path / "0000000000000002.wal"
    q.write_bytes(b"OO")  # crash before the magic was complete
    assert wal.read_segment(q) == ([], 2)


# -- Spool -------------------------------------------------------------------------------------

async def test_write_is_on_disk_and_close_removes_wal(tmp_path):
    spool = Spool(make_cfg(tmp_path))
    await spool.start()
    hour, uid = new_item()
    await spool.write(hour, uid, b'{"format":"json"}')
    await spool.files_written()
    post = tmp_path / "spool" / "incoming" / hour / f"{uid}.post"
    assert post.read_bytes() == b'{"format":"json"}'
    assert wal.segments(tmp_path / "spool" / "wal")  # durable copy until the checkpoint
    assert not list(post.parent.glob("*.tmp"))
    await spool.close()
    assert wal.segments(tmp_path / "spool" / "wal") == []
    with pytest.raises(SpoolError):
        await spool.write(hour, uid, b"x")


async def test_write_rejects_hostile_names(tmp_path):
    spool = Spool(make_cfg(tmp_path))
    await spool.start()
    try:
        hour, uid = new_item()
        for h, u in [("../x", uid), (hour, "../../etc/passwd"), (hour + "/..", uid),
                     (hour, uid + "\n")]:
            with pytest.raises(ValueError):
                await spool.write(h, u, b"x")
    finally:
        await spool.close()
    assert not (tmp_path / "x").exists()


async def test_second_process_cannot_open_the_same_spool(tmp_path):
    a = Spool(make_cfg(tmp_path))
    await a.start()
    try:
        with pytest.raises(SpoolError, match="in use"):
            await Spool(make_cfg(tmp_path)).start()
    finally:
        await a.close()


async def test_group_commit_many_concurrent_identical_bodies(tmp_path):
    metrics = Metrics()
    spool = Spool(make_cfg(tmp_path, max_batch=64), metrics)
    await spool.start()
    body = b'{"format":"json","content":{}}'
    items = [new_item("US", "ndt") for _ in range(3000)]
    await asyncio.gather(*(spool.write(h, u, body) for h, u in items))
    await spool.close()
    assert len({u for _, u in items}) == 3000
    for h, u in items:
        assert (tmp_path / "spool" / "incoming" / h / f"{u}.post").read_bytes() == body
    batches = metrics.value("spool_batches_total")
    assert metrics.value("spool_writes_total") == 3000
    assert 3000 / 64 <= batches < 3000  # batched: fewer fdatasyncs than measurements


async def test_checkpoint_deletes_old_segments_while_running(tmp_path):
    spool = Spool(make_cfg(tmp_path, checkpoint_interval=0.1))
    await spool.start()
    try:
        for _ in range(5):
            await spool.write(*new_item(), b"x")
        wal_dir = tmp_path / "spool" / "wal"
        deadline = time.monotonic() + 5
        while wal.segments(wal_dir) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert wal.segments(wal_dir) == []
        await spool.write(*new_item(), b"y")  # a fresh segment after rotation
        assert len(wal.segments(wal_dir)) == 1
    finally:
        await spool.close()


async def test_wal_failure_rejects_batch_then_recovers(tmp_path, monkeypatch):
    spool = Spool(make_cfg(tmp_path))
    await spool.start()
    try:
        await spool.write(*new_item(), b"first")  # the segment now holds an acknowledged one
        hour, uid = new_item()
        orig = wal.Segment.sync

        def broken(self):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(wal.Segment, "sync", broken)
        with pytest.raises(SpoolError):
            await spool.write(hour, uid, b"lost")
        assert not (tmp_path / "spool" / "incoming" / hour / f"{uid}.post").exists()
        monkeypatch.setattr(wal.Segment, "sync", orig)
        hour2, uid2 = new_item()
        await spool.write(hour2, uid2, b"kept")
        assert len(wal.segments(tmp_path / "spool" / "wal")) == 2  # abandoned + new
    finally:
        await spool.close()
    assert wal.segments(tmp_path / "spool" / "wal") == []


def _crashed_spool(tmp_path: Path, records: list[tuple[str, str, bytes]], tail: bytes) -> Path:
    """A spool as a power loss leaves it: WAL segments, .post files possibly missing."""
    wal_dir = tmp_path / "spool" / "wal"
    wal_dir.mkdir(parents=True)
    half = len(records) // 2
    for n, part in ((1, records[:half]), (2, records[half:])):
        seg = wal.Segment(wal_dir / f"{n:016d}.wal", sync=False)
        seg.append(b"".join(wal.encode(*r) for r in part) + (tail if n == 2 else b""))
        seg.close()
    return wal_dir


async def test_recovery_rewrites_missing_and_short_files_ignores_torn_tail(tmp_path):
    records = []
    for i in range(10):
        hour, uid = new_item()
        records.append((uid, hour, b"body %d " % i * 100))
    torn_hour, torn_uid = new_item()
    tail = wal.encode(torn_uid, torn_hour, b"never acknowledged")[:-3]
    wal_dir = _crashed_spool(tmp_path, records, tail)
    inc = tmp_path / "spool" / "incoming"
    # Record 0: intact file (must be left alone); 1: truncated; the rest: missing.
    p0 = Path(layout.post_path(inc, records[0][1], records[0][0]))
    p0.parent.mkdir(parents=True, exist_ok=True)
    p0.write_bytes(records[0][2])
    os.utime(p0, (1, 1))
    p1 = Path(layout.post_path(inc, records[1][1], records[1][0]))
    p1.write_bytes(records[1][2][:10])
    (p1.parent / "stale.post.tmp").write_bytes(b"partial")

    metrics = Metrics()
    spool = Spool(make_cfg(tmp_path), metrics)
    await spool.start()
    try:
        assert wal.segments(wal_dir) == []
        for uid, hour, body in records:
            assert Path(layout.post_path(inc, hour, uid)).read_bytes() == body
        assert p0.stat().st_mtime == 1  # not rewritten
        assert not Path(layout.post_path(inc, torn_hour, torn_uid)).exists()
        assert not (p1.parent / "stale.post.tmp").exists()
        assert metrics.value("spool_recovered_total") == 9
        # New segments continue after the recovered ones.
        await spool.write(*new_item(), b"new")
        assert [p.name for p in wal.segments(wal_dir)] == [f"{3:016d}.wal"]
    finally:
        await spool.close()


def test_make_durable_both_paths(tmp_path):
    files = []
    for i in range(layout.SYNCFS_THRESHOLD * 2):
        p = tmp_path / f"{i}.post"
        p.write_bytes(b"x")
        files.append(str(p))
    layout.make_durable(tmp_path, files, {str(tmp_path)})  # syncfs
    layout.make_durable(tmp_path, files[:3] + [str(tmp_path / "gone")], {str(tmp_path)})


def test_scan_pending_and_delivered(tmp_path):
    inc = tmp_path / "incoming"
    items = [new_item() for _ in range(5)] + [new_item("US", "ndt") for _ in range(3)]
    for hour, uid in items:
        p = Path(layout.post_path(inc, hour, uid))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (inc / items[0][0] / "junk.post").write_bytes(b"x")  # not a uid: ignored
    (inc / "not_an_hour_dir").mkdir()
    layout.append_delivered(inc, {items[0][0]: [items[0][1], items[1][1]],
                                  "2001010100_XX_gone": ["20010101000000.000000_XX_gone_"
                                                         "0000000000000000"]})
    with open(inc / items[0][0] / layout.DELIVERED, "a") as f:
        f.write("2021020822")  # torn last line
    pending, more = layout.scan_pending(inc, 100)
    assert not more
    assert sorted(u for _, u in pending) == sorted(u for _, u in items[2:])
    part, more = layout.scan_pending(inc, 2)
    assert more and len(part) == 2
    assert not (inc / "2001010100_XX_gone").exists()


def test_recovery_rewrites_a_zero_filled_file_of_the_right_size(tmp_path):
    """ext4 can leave a file with its size but not its data after a power loss."""
    from oonibackend.spool import layout

    p = str(tmp_path / "x.post")
    layout.write_post(p, b"hello")
    assert layout.same_content(p, b"hello")
    with open(p, "wb") as f:
        f.write(b"\0" * 5)
    assert not layout.same_content(p, b"hello")
    layout.write_post(p, b"hello")
    assert layout.same_content(p, b"hello")
    assert not layout.same_content(str(tmp_path / "missing.post"), b"hello")
