"""`IntakeQueue`: the fastpath's durable, bounded queue of received measurements.

Why durable: the API forgets a measurement ("delivered") as soon as the feeder answers 200,
so from that moment the fastpath alone owns it until its rows are in ClickHouse. `put`
returns only after the record is appended to a segment and fdatasync'ed; concurrent puts
share one fdatasync (group commit), which is what makes the durability affordable.

Why bounded: when scoring or the database falls behind, `full` turns true once
`max_entries` measurements are uncommitted and the feeder answers 503; the API keeps them
pending in its own spool and retries, so nothing piles up in memory here.

Life of an entry: put (durable) -> get (handed to the worker pool) -> commit (its rows are
in the database, or it was quarantined). Commits are marked in the segment's ack file and a
segment is deleted once it is sealed and all its entries are committed. On start every
record without a commit mark is queued again: delivery is at-least-once, and the sink's
batch journal (batches.py: entries of the batch being inserted + its deduplication token)
makes ClickHouse drop the rows of a replayed batch it already has.

Bodies are kept in memory up to `memory_bytes` (the common case: scored right away);
beyond that they are read back from the segment when needed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from oonibackend.fileutil import try_flock
from workers.intake import segment as seg
from workers.intake.recent import KEEP, CommittedLog

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024
MEMORY_BYTES = 64 * 1024 * 1024
MAX_BATCH = 1024


class QueueFull(Exception):
    """The bound is reached: the caller should answer 503 and let the sender retry."""


class QueueLocked(Exception):
    """Another fastpath process owns this queue directory."""


class QueueClosed(Exception):
    """The queue is shutting down; nothing more is accepted."""


@dataclass(eq=False, slots=True)
class _Segment:
    file: seg.SegmentFile
    outstanding: int = 0
    sealed: bool = False


@dataclass(eq=False, slots=True)
class Entry:
    """One uncommitted measurement. `body` is None while it lives only on disk."""

    uid: str
    segment: _Segment
    offset: int
    body_offset: int
    size: int
    body: bytes | None = None
    # Times a worker died while holding it (poison-pill protection).
    attempts: int = 0
    committed: bool = field(default=False)


@dataclass(eq=False, slots=True)
class _Incoming:
    uid: str
    body: bytes
    done: asyncio.Future[Entry]
    record: bytes | None = None  # already encoded (a delivered batch's record, crc checked)


class IntakeQueue:
    def __init__(self, directory: Path, max_entries: int, *, sync: bool = True,
                 segment_bytes: int = SEGMENT_BYTES, memory_bytes: int = MEMORY_BYTES,
                 max_batch: int = MAX_BATCH, remember: int = KEEP) -> None:
        self.directory = Path(directory)
        # Uids committed lately: delivered again (the API lost its mark), not queued again.
        self.recent = CommittedLog(self.directory, keep=remember)
        self.max_entries = max(1, max_entries)
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._memory_bytes = memory_bytes
        self._max_batch = max(1, max_batch)
        self._entries: dict[str, Entry] = {}  # uid -> uncommitted entry
        self._pending: deque[Entry] = deque()  # durable, not yet handed out
        self._incoming: list[_Incoming] = []  # waiting for the next group commit
        self._writing: dict[str, asyncio.Future[Entry]] = {}  # uid -> its commit, in flight
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._next_seq = 1
        self._mem = 0
        self._lock_fd = -1
        self._closed = False
        self._has_pending: asyncio.Event | None = None
        self._has_incoming: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Measurements accepted (or being made durable) and not yet committed."""
        return len(self._entries) + len(self._writing)

    @property
    def full(self) -> bool:
        return self.depth >= self.max_entries

    @property
    def pending(self) -> int:
        """Durable entries not yet handed out by `get`."""
        return len(self._pending)

    @property
    def segments(self) -> int:
        return len(self._segments)

    # -- open / close -------------------------------------------------------------------------

    async def open(self) -> int:
        """Lock the directory and queue every uncommitted record again; returns their count."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._has_pending = asyncio.Event()
        self._has_incoming = asyncio.Event()
        recovered = await asyncio.to_thread(self._recover)
        self._writer = asyncio.create_task(self._write_loop(), name="intake-queue-writer")
        if recovered:
            self._has_pending.set()
            log.info("uncommitted measurements queued again",
                     extra={"count": recovered, "segments": len(self._segments)})
        return recovered

    def _lock(self) -> None:
        fd = try_flock(self.directory / "lock", write_pid=True)
        if fd is None:
            holder = (self.directory / "lock").read_text().strip() or "?"
            raise QueueLocked(f"{self.directory} is used by another fastpath process "
                              f"(pid {holder})")
        self._lock_fd = fd

    def _recover(self) -> int:
        self.recent.open()
        count = 0
        for seq, path in seg.segment_paths(self.directory):
            self._next_seq = max(self._next_seq, seq + 1)
            records, torn = seg.read_records(path)
            if torn:
                log.warning("torn tail ignored", extra={"segment": path.name, "bytes": torn})
            acked = seg.read_acks(seg.ack_path(path))
            s = _Segment(seg.SegmentFile(seq, path, create=False, sync=False), sealed=True)
            late: list[int] = []
            for r in records:
                if r.offset in acked:
                    continue
                if r.uid in self._entries:  # an earlier copy is queued already
                    late.append(r.offset)
                    continue
                e = Entry(r.uid, s, r.offset, r.body_offset, len(r.body))
                if self._mem + len(r.body) <= self._memory_bytes:
                    e.body = r.body
                    self._mem += len(r.body)
                self._entries[r.uid] = e
                self._pending.append(e)
                s.outstanding += 1
                count += 1
            if late:
                s.file.ack(late)
            if s.outstanding:
                self._segments[seq] = s
            else:
                s.file.remove()
        for ack in self.directory.glob("*" + seg.ACK_SUFFIX):  # marks of deleted segments
            if not ack.with_suffix(seg.SUFFIX).exists():
                ack.unlink(missing_ok=True)
        return count

    async def close(self) -> None:
        """Stop accepting; let the group commit in progress finish; close the files.
        Uncommitted entries stay on disk for the next start."""
        self._closed = True
        if self._has_incoming is not None:
            self._has_incoming.set()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        for item in self._incoming:
            if not item.done.done():
                item.done.set_exception(QueueClosed("fastpath shutting down"))
        self._incoming.clear()
        for s in self._segments.values():
            s.file.close()
        self.recent.close()
        if self._active is not None and self._active.outstanding == 0:
            self._active.file.remove()  # nothing uncommitted in it
            self._segments.pop(self._active.file.seq, None)
        self._active = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- put: group commit ---------------------------------------------------------------------

    async def put(self, uid: str, body: bytes) -> None:
        """Return once (uid, body) is durable; QueueFull beyond the bound.

        A uid already queued is not written twice (the API may deliver again after losing
        its "delivered" mark): the earlier durable copy answers for it; nor one committed
        lately (`recent`): its rows are in the database already.
        """
        if self._closed or self._has_incoming is None:
            raise QueueClosed("fastpath shutting down")
        if uid in self._entries or uid in self.recent:
            return
        writing = self._writing.get(uid)
        if writing is not None:
            await asyncio.shield(writing)
            return
        if self.full:
            raise QueueFull(f"{self.depth} measurements queued")
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._writing[uid] = fut
        self._incoming.append(_Incoming(uid, body, fut))
        self._has_incoming.set()
        await asyncio.shield(fut)

    async def put_many(self, items: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """`put` for a delivered batch of (uid, body, record or None): returns once every
        one is durable (one group commit for all, or a few for a large batch). QueueFull
        when the bound is reached before it: a batch is taken whole or refused whole (the
        bound may thus be passed by at most one batch). Records given are appended as they
        are (oonibackend/spool/delivery.py: their crc was checked)."""
        if self._closed or self._has_incoming is None:
            raise QueueClosed("fastpath shutting down")
        if self.full:
            raise QueueFull(f"{self.depth} measurements queued")
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[Entry]] = []
        for uid, body, record in items:
            if uid in self._entries or uid in self.recent:
                continue
            writing = self._writing.get(uid)
            if writing is not None:  # a duplicate within the batch, or one being written
                waits.append(writing)
                continue
            fut: asyncio.Future[Entry] = loop.create_future()
            self._writing[uid] = fut
            self._incoming.append(_Incoming(uid, body, fut, record))
            waits.append(fut)
        if not waits:
            return
        self._has_incoming.set()
        await asyncio.shield(asyncio.gather(*waits))

    async def _write_loop(self) -> None:
        assert self._has_incoming is not None and self._has_pending is not None
        while True:
            if not self._incoming:
                if self._closed:
                    return
                self._has_incoming.clear()
                await self._has_incoming.wait()
                continue
            batch = self._incoming[:self._max_batch]
            del self._incoming[:len(batch)]
            try:
                file, base, sizes = await asyncio.to_thread(self._append, batch)
            except Exception as e:  # OSError mostly (disk full): refuse, the sender retries
                log.error("intake write failed", extra={"error": repr(e)})
                self._seal_active()  # never append after a possibly torn record
                err = e if isinstance(e, OSError) else OSError(str(e))
                for i in batch:
                    self._writing.pop(i.uid, None)
                    if not i.done.done():
                        i.done.set_exception(err)
                        i.done.exception()  # retrieved: a cancelled put must not warn
                continue
            s = self._adopt(file)
            pos = base
            dups: list[int] = []
            for item, size in zip(batch, sizes, strict=True):
                e = Entry(item.uid, s, pos, pos + size - len(item.body), len(item.body))
                pos += size
                self._writing.pop(item.uid, None)
                if item.uid in self._entries:  # cannot happen (put deduplicates); be safe
                    dups.append(e.offset)
                    if not item.done.done():
                        item.done.set_result(self._entries[item.uid])
                    continue
                if self._mem + e.size <= self._memory_bytes:
                    e.body = item.body
                    self._mem += e.size
                s.outstanding += 1
                self._entries[item.uid] = e
                self._pending.append(e)
                if not item.done.done():
                    item.done.set_result(e)
            if dups:
                s.file.ack(dups)
            self._has_pending.set()

    def _append(self, batch: list[_Incoming]) -> tuple[seg.SegmentFile, int, list[int]]:
        """Writer thread: encode a batch (crc32 of every body: off the event loop), append
        it to the active segment (a new one when the active is full or sealed) and make it
        durable with one fdatasync. Returns the file, the batch's offset, record sizes."""
        data = [i.record if i.record is not None else seg.encode(i.uid, i.body)
                for i in batch]
        file = self._active.file if self._active is not None else None
        if file is None or not file.writable or file.size >= self._segment_bytes:
            seq = self._next_seq
            self._next_seq += 1
            file = seg.SegmentFile(seq, self.directory / seg.segment_name(seq), create=True,
                                   sync=self._sync)
        base = file.size
        try:
            file.append(b"".join(data))
            if self._sync:
                file.sync()
        except BaseException:
            if self._active is None or file is not self._active.file:
                file.seal()  # a new segment never adopted; recovery deletes or replays it
                file.close()
            raise
        return file, base, [len(d) for d in data]

    def _adopt(self, file: seg.SegmentFile) -> _Segment:
        """Bookkeeping for the segment the writer used (sealing the previous one)."""
        if self._active is not None and self._active.file is file:
            return self._active
        self._seal_active()
        s = _Segment(file)
        self._segments[file.seq] = s
        self._active = s
        return s

    def _seal_active(self) -> None:
        s, self._active = self._active, None
        if s is None:
            return
        s.sealed = True
        s.file.seal()
        if s.outstanding == 0:
            self._drop(s)

    def _drop(self, s: _Segment) -> None:
        self._segments.pop(s.file.seq, None)
        try:
            s.file.remove()
        except OSError as e:
            log.error("cannot remove segment", extra={"segment": str(s.file.path),
                                                      "error": str(e)})

    # -- get / retry / commit ------------------------------------------------------------------

    async def get(self) -> Entry:
        """The next durable entry, with its body loaded (the caller owns the body now)."""
        assert self._has_pending is not None
        while not self._pending:
            self._has_pending.clear()
            await self._has_pending.wait()
        e = self._pending.popleft()
        if e.body is None:
            e.body = await asyncio.to_thread(e.segment.file.read, e.body_offset, e.size)
        else:
            self._mem -= e.size
        return e

    def retry(self, e: Entry) -> None:
        """Hand the entry out again, before anything else (its worker died)."""
        if e.committed:
            return
        e.body = None
        self._pending.appendleft(e)
        if self._has_pending is not None:
            self._has_pending.set()

    def entry(self, uid: str) -> Entry | None:
        """The uncommitted entry of `uid`, if any."""
        return self._entries.get(uid)

    def prioritize(self, entries: Iterable[Entry]) -> None:
        """Hand these entries out before any other, in this order (those still pending):
        the sink's unfinished batches of the previous run wait for them."""
        first = list(entries)
        if not first:
            return
        chosen = {id(e) for e in first}
        waiting = {id(e) for e in self._pending}
        rest = [e for e in self._pending if id(e) not in chosen]
        self._pending = deque([e for e in first if id(e) in waiting] + rest)
        if self._has_pending is not None and self._pending:
            self._has_pending.set()

    async def body_of(self, e: Entry) -> bytes:
        if e.body is not None:
            return e.body
        return await asyncio.to_thread(e.segment.file.read, e.body_offset, e.size)

    def commit(self, entries: Iterable[Entry]) -> int:
        """Forget entries whose rows are in the database (or that were quarantined)."""
        marks: dict[int, tuple[_Segment, list[int]]] = {}
        uids: list[str] = []
        n = 0
        for e in entries:
            if e.committed:
                continue
            e.committed = True
            e.body = None
            n += 1
            if self._entries.get(e.uid) is e:
                del self._entries[e.uid]
            s = e.segment
            s.outstanding -= 1
            marks.setdefault(s.file.seq, (s, []))[1].append(e.offset)
            uids.append(e.uid)
        self.recent.add(uids)  # before the marks: a crash in between only replays them
        for s, offsets in marks.values():
            if s.sealed and s.outstanding == 0:
                self._drop(s)
                continue
            try:
                s.file.ack(offsets)
            except OSError as err:  # only costs re-processing after a restart
                log.error("cannot write commit marks", extra={"error": str(err)})
        return n
