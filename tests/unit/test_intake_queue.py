"""The fastpath's durable intake queue: what was acknowledged survives close, crash and
torn writes; commits remove entries (and segments); the bound refuses more."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workers.intake import segment as seg
from workers.intake.queue import IntakeQueue, QueueFull, QueueLocked


def uid(i: int) -> str:
    return f"20240101120000.{i:06d}_IT_webconnectivity_{i:016x}"


async def opened(d: Path, max_entries: int = 1000, **kw) -> IntakeQueue:
    q = IntakeQueue(d, max_entries, **kw)
    await q.open()
    return q


async def drain(q: IntakeQueue) -> dict[str, bytes]:
    out = {}
    while q.pending:
        e = await q.get()
        out[e.uid] = e.body
    return out


async def test_entries_survive_close_and_reopen(tmp_path):
    q = await opened(tmp_path)
    await asyncio.gather(*(q.put(uid(i), b"body%d" % i) for i in range(50)))
    assert q.depth == 50 and q.pending == 50
    await q.close()
    q = await opened(tmp_path)
    assert q.depth == 50
    got = await drain(q)
    assert got == {uid(i): b"body%d" % i for i in range(50)}
    await q.close()


async def test_group_commit_shares_fsyncs(tmp_path, monkeypatch):
    syncs = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    q = await opened(tmp_path)
    await asyncio.gather(*(q.put(uid(i), b"x" * 100) for i in range(200)))
    assert len(syncs) < 20  # 200 concurrent puts, a handful of fdatasyncs
    await q.close()


async def test_commit_removes_entries_and_segments(tmp_path):
    q = await opened(tmp_path, segment_bytes=4096)
    for i in range(40):  # ~4 segments of ~1 KiB records
        await q.put(uid(i), b"y" * 1000)
    assert q.segments >= 4
    entries = [await q.get() for _ in range(40)]
    q.commit(entries[:20])
    assert q.depth == 20
    await q.close()
    q = await opened(tmp_path)
    rest = [await q.get() for _ in range(q.pending)]
    assert sorted(e.uid for e in rest) == [uid(i) for i in range(20, 40)]
    q.commit(rest)
    await q.close()
    # Everything committed: nothing is queued again and no file is left.
    q = await opened(tmp_path)
    assert q.depth == 0
    await q.close()
    assert seg.segment_paths(tmp_path) == [] and not list(tmp_path.glob("*.ack"))


async def test_fully_committed_sealed_segments_are_deleted(tmp_path):
    q = await opened(tmp_path, segment_bytes=2048)
    for i in range(30):
        await q.put(uid(i), b"z" * 500)
    entries = [await q.get() for _ in range(30)]
    q.commit(entries)
    assert q.depth == 0
    # Only the active segment may remain.
    assert len(seg.segment_paths(tmp_path)) <= 1
    await q.close()
    assert seg.segment_paths(tmp_path) == []  # the active one held nothing uncommitted
    assert not list(tmp_path.glob("*.ack"))


async def test_torn_tail_is_ignored(tmp_path):
    q = await opened(tmp_path)
    for i in range(3):
        await q.put(uid(i), b"good%d" % i)
    await q.close()
    [(_, path)] = seg.segment_paths(tmp_path)
    full = seg.encode(uid(9), b"never acknowledged")
    with open(path, "ab") as f:
        f.write(full[:-5])  # torn record
    q = await opened(tmp_path)
    assert await drain(q) == {uid(i): b"good%d" % i for i in range(3)}
    await q.close()
    # A corrupted (bad crc) record also ends the segment.
    data = bytearray(path.read_bytes())
    records, _ = seg.read_records(path)
    data[records[2].body_offset] ^= 0xFF
    path.write_bytes(bytes(data))
    recs, torn = seg.read_records(path)
    assert [r.uid for r in recs] == [uid(0), uid(1)] and torn > 0


async def test_segment_without_magic_is_empty(tmp_path):
    (tmp_path / seg.segment_name(7)).write_bytes(b"OOF")
    q = await opened(tmp_path)
    assert q.depth == 0
    await q.put(uid(1), b"a")
    await q.close()
    assert [s for s, _ in seg.segment_paths(tmp_path)] == [8]  # numbering continues


async def test_commit_marks_torn_last_line(tmp_path):
    q = await opened(tmp_path)
    for i in range(3):
        await q.put(uid(i), b"m")
    entries = [await q.get() for _ in range(3)]
    q.commit(entries[:1])
    await q.close()
    [(_, path)] = seg.segment_paths(tmp_path)
    with open(seg.ack_path(path), "ab") as f:
        f.write(str(entries[1].offset)[:-1].encode())  # torn mark, no newline
    q = await opened(tmp_path)
    assert sorted(await drain(q)) == [uid(1), uid(2)]
    await q.close()


async def test_bound_refuses_beyond_max_entries(tmp_path):
    q = await opened(tmp_path, max_entries=5)
    for i in range(5):
        await q.put(uid(i), b"b")
    assert q.full
    with pytest.raises(QueueFull):
        await q.put(uid(99), b"b")
    q.commit([await q.get()])
    assert not q.full
    await q.put(uid(99), b"b")
    await q.close()


async def test_same_uid_is_stored_once(tmp_path):
    q = await opened(tmp_path)
    await asyncio.gather(q.put(uid(1), b"a"), q.put(uid(1), b"a"))
    await q.put(uid(1), b"a")
    assert q.depth == 1
    await q.close()
    records, _ = seg.read_records(seg.segment_paths(tmp_path)[0][1])
    assert len(records) == 1


async def test_bodies_beyond_memory_budget_are_read_from_disk(tmp_path):
    q = await opened(tmp_path, memory_bytes=1000)
    bodies = {uid(i): os.urandom(400) for i in range(10)}
    for u, b in bodies.items():
        await q.put(u, b)
    assert await drain(q) == bodies
    await q.close()


async def test_retry_hands_out_again_first(tmp_path):
    q = await opened(tmp_path)
    for i in range(3):
        await q.put(uid(i), b"r%d" % i)
    e = await q.get()
    q.retry(e)
    again = await q.get()
    assert again is e and again.body == b"r0"
    await q.close()


async def test_second_process_is_locked_out(tmp_path):
    q = await opened(tmp_path)
    other = IntakeQueue(tmp_path, 10)
    with pytest.raises(QueueLocked, match=f"pid {os.getpid()}"):
        await other.open()
    await q.close()


_WRITER = textwrap.dedent("""
    import asyncio, sys
    from workers.intake.queue import IntakeQueue

    async def main():
        q = IntakeQueue(sys.argv[1], 100000, segment_bytes=64 * 1024)
        await q.open()
        async def one(i):
            uid = f"20240101120000.{i:06d}_IT_webconnectivity_{i:016x}"
            await q.put(uid, b"body-%d" % i * 50)
            print(uid, flush=True)
        i = 0
        while True:
            await asyncio.gather(*(one(i + k) for k in range(20)))
            i += 20
    asyncio.run(main())
""")


async def test_acknowledged_entries_survive_sigkill(tmp_path):
    """A writer process killed mid-stream: every uid it acknowledged is found again."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    acked = []
    assert proc.stdout is not None
    while len(acked) < 500:
        line = proc.stdout.readline()
        assert line, "writer died"
        acked.append(line.decode().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked += [ln.decode().strip() for ln in proc.stdout.read().splitlines()]
    q = await opened(tmp_path)
    got = await drain(q)
    assert set(acked) <= set(got)
    assert all(body == b"body-%d" % int(u.split("_")[0].split(".")[1]) * 50
               for u, body in got.items())
    await q.close()
