"""`Sink`: batches scored rows into ClickHouse inserts, then commits their queue entries.

Why batches: one INSERT per measurement (the reference) creates one part per row in a
MergeTree; `batch_size` rows or `batch_interval` seconds, whichever comes first, keeps parts
large and latency bounded.

Why commit after the insert: an entry leaves the durable intake queue only once every row it
produced (fastpath, and obs_openvpn for openvpn) is in the database. A failed insert is
retried with exponential back-off up to `retry_max` between tries and never dropped
(workers/batch_insert.py); meanwhile rows wait here, the pool stops dispatching
(`wait_for_room`), the intake queue fills and the feeder answers 503.

One exception to "retry forever": when ClickHouse says the *data* is invalid (parse / type
errors), or a row cannot even be encoded, the batch is split in halves (of its measurements)
until the offending measurement is isolated, and that one is handed to `on_rejected`
(quarantine).

No duplicates across a crash: every insert carries ClickHouse's `insert_deduplication_token`,
one per batch (split halves derive theirs: `<token>.0`, `<token>.1`), recorded with the
batch's entries in the `BatchJournal` (workers/intake/batches.py) before the first try. A
retry after an ambiguous failure (the answer lost, the owner killed after its commit) and the
replay of an unfinished batch after a restart (`recover`: same entries, same token, scored
first) are dropped by ClickHouse when it has the batch already.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Generic, Protocol, TypeVar

from oonibackend.metrics import Metrics
from oonibackend.storage import Database, DatabaseError
from workers.batch_insert import RetryingInsert, is_data_error
from workers.intake.batches import BatchJournal, Group, Manifest, encode

log = logging.getLogger(__name__)

Row = dict[str, Any]
Rows = dict[str, list[Row]]

# ClickHouse's UNKNOWN_SETTING: a server older than 22.2 has no insert_deduplication_token.
UNKNOWN_SETTING = 115
TOKEN_SETTING = "insert_deduplication_token"


class HasUid(Protocol):
    uid: str


T = TypeVar("T", bound=HasUid)


def uid_time(uid: str) -> float | None:
    """Receive time encoded in an API uid (`YYYYmmddHHMMSS.ffffff_...`), epoch seconds.
    (Sliced by hand: strptime costs more than the rest of the bookkeeping per row.)"""
    s = uid[:21]
    if len(s) != 21 or s[14] != "." or not s[:14].isdigit() or not s[15:].isdigit():
        return None
    try:
        t = dt.datetime(int(s[:4]), int(s[4:6]), int(s[6:8]), int(s[8:10]), int(s[10:12]),
                        int(s[12:14]), int(s[15:]), tzinfo=dt.UTC)
    except ValueError:
        return None
    return t.timestamp()


def new_token() -> str:
    """A batch's deduplication token: unique, so no other batch is ever dropped for it."""
    return secrets.token_hex(16)


@dataclass(eq=False, slots=True)
class _Batch(Generic[T]):
    """Items inserted together under one deduplication token."""

    token: str
    items: list[tuple[T, Rows, int]]
    skip: frozenset[str] = frozenset()  # tables that have these rows already
    manifest: Manifest | None = None  # its journal file (None: not recorded)
    group: Group | None = None  # its entry in that file
    rewrite: bool = False  # replayed with fewer entries than recorded: record it first
    done: set[str] = field(init=False)  # tables that have these rows now

    def __post_init__(self) -> None:
        self.done = set(self.skip)


@dataclass(eq=False, slots=True)
class _Replay(Generic[T]):
    """A recorded group waiting for its entries to be scored again."""

    manifest: Manifest
    group: Group
    items: dict[str, T] = field(default_factory=dict)  # uid -> item, in the group's order
    rows: dict[str, tuple[Rows, int]] = field(default_factory=dict)
    changed: bool = False


class Sink(RetryingInsert[_Batch[T]]):
    data_tries = 2  # a data error may be a fluke of the moment: one more try before splitting
    sturdy = True  # never let the sink die: a bug is retried like an outage

    def __init__(self, db: Database, *, batch_size: int, batch_interval: float,
                 retry_max: float, metrics: Metrics,
                 on_committed: Callable[[list[T]], object],
                 on_rejected: Callable[[T, str], Awaitable[None]] | None = None,
                 retry_min: float = 0.1, max_buffered: int | None = None,
                 journal: BatchJournal | None = None, dedup: bool = True) -> None:
        self._db = db
        self._journal = journal
        self._journal_failing = False
        self.dedup = dedup  # send insert_deduplication_token (off: the server lacks it)
        self.batch_size = max(1, batch_size)
        self.batch_interval = max(0.0, batch_interval)
        self.retry_min = max(0.001, min(retry_min, retry_max))
        self.retry_max = max(retry_max, self.retry_min)
        # Rows held before the pool is told to wait (room for the next batch while one is
        # being inserted).
        self.max_buffered = max_buffered or 2 * self.batch_size
        self._metrics = metrics
        self._on_committed = on_committed
        self._on_rejected = on_rejected
        self._buf: list[tuple[T, Rows, int]] = []
        self._rows = 0  # rows in _buf
        self._inflight_rows = 0  # rows of the batch being inserted
        self._first_at = 0.0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._awaiting: dict[str, _Replay[T]] = {}  # uid -> recorded group being re-scored
        self._replays: deque[_Batch[T]] = deque()  # recorded groups ready to insert again
        self._replay_rows = 0  # rows in _replays
        metrics.set("sink_buffered_rows", lambda: self.buffered_rows,
                    help="Scored rows waiting for (or in) a database insert")

    # -- producer side -------------------------------------------------------------------------

    @property
    def buffered_rows(self) -> int:
        return self._rows + self._replay_rows + self._inflight_rows

    @property
    def replaying(self) -> int:
        """Items of recorded batches not scored again yet."""
        return len(self._awaiting)

    def add(self, item: T, rows: Rows) -> None:
        """Queue an item's rows (per table); an item without rows is committed at once."""
        n = sum(len(r) for r in rows.values())
        replay = self._awaiting.pop(item.uid, None)
        if replay is not None:
            if n:
                replay.rows[item.uid] = (rows, n)
            else:
                self._drop(replay, item.uid)
                self._on_committed([item])
            self._replay_check(replay)
            return
        if n == 0:
            self._on_committed([item])
            return
        if not self._buf:
            self._first_at = time.monotonic()
        self._buf.append((item, rows, n))
        self._rows += n
        if self.buffered_rows >= self.max_buffered:
            self._room.clear()
        self._wake.set()

    async def wait_for_room(self) -> None:
        """Wait while too many rows are held (the database is slow or down). Never while
        recorded batches wait for their items: those must be scored for anything to move."""
        while self.buffered_rows >= self.max_buffered and not self._awaiting:
            self._room.clear()
            await self._room.wait()

    def discard(self, item: T) -> None:
        """`item` could not be scored (it goes to quarantine): a recorded batch waiting for
        it goes on without it."""
        replay = self._awaiting.pop(item.uid, None)
        if replay is not None:
            self._drop(replay, item.uid)
            self._replay_check(replay)

    # -- replay of the batches a previous run left unfinished ------------------------------

    def recover(self, manifests: Sequence[Manifest],
                lookup: Callable[[str], T | None]) -> list[T]:
        """Register the recorded batches of a previous run (`BatchJournal.load`); `lookup`
        gives the uncommitted queue item of a uid (None: committed since). Returns the items
        to score again, first: each group is inserted again as soon as all its items are
        back, with its own token. Call before `start`."""
        claimed: dict[str, _Replay[T]] = {}
        replays: list[_Replay[T]] = []
        for m in manifests:  # oldest first: a uid claimed again belongs to the newer one
            for g in m.groups:
                r: _Replay[T] = _Replay(m, g)
                for uid in g.uids:
                    item = lookup(uid)
                    if item is None:
                        continue
                    prev = claimed.get(uid)
                    if prev is not None:  # a stale manifest: its group goes on without it
                        del prev.items[uid]
                        prev.changed = True
                    claimed[uid] = r
                    r.items[uid] = item
                replays.append(r)
        self._awaiting.update(claimed)
        items: list[T] = []
        for r in replays:
            items.extend(r.items.values())
            if not r.items:
                self._group_done(r.manifest, r.group)
        if replays:
            log.info("unfinished batches to insert again", extra={
                "batches": len(manifests), "groups": len(replays), "items": len(items)})
        return items

    def _drop(self, r: _Replay[T], uid: str) -> None:
        r.items.pop(uid, None)
        r.rows.pop(uid, None)
        r.changed = True

    def _replay_check(self, r: _Replay[T]) -> None:
        if len(r.rows) < len(r.items):
            return
        if not r.items:
            self._group_done(r.manifest, r.group)
            return
        items = [(item, *r.rows[uid]) for uid, item in r.items.items()]
        batch: _Batch[T] = _Batch(r.group.token, items, r.group.skip, r.manifest, r.group,
                                  rewrite=r.changed)
        self._replays.append(batch)
        self._replay_rows += sum(n for _, _, n in items)
        self._metrics.inc("batches_replayed_total", help="Batches recorded by a previous run "
                          "and inserted again with the same deduplication token")
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fastpath-sink")

    async def close(self, timeout: float = 10.0) -> bool:
        """Insert what is buffered (trying for at most `timeout` seconds); True when
        everything was committed. What is left stays in the durable queue (and recorded
        batches in the journal)."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return not self._buf and not self._replays
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except Exception as e:
            if not isinstance(e, TimeoutError):
                log.error("sink failed", extra={"error": repr(e)})
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            log.warning("rows left uninserted at shutdown (kept in the intake queue)",
                        extra={"rows": self.buffered_rows})
            return False
        return True

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not await self._ready():
                return
            if self._replays:
                batch = self._replays.popleft()
                self._replay_rows -= sum(n for _, _, n in batch.items)
            else:
                batch = _Batch(new_token(), self._take())
            self._inflight_rows = sum(n for _, _, n in batch.items)
            try:
                if batch.manifest is None:
                    await self._record(batch)
                elif batch.rewrite:
                    await self._rewrite(batch)
                await self.deliver(batch)
            except Exception:  # a callback failed; the entries stay queued for a restart
                log.exception("batch abandoned", extra={"items": len(batch.items)})
            finally:
                self._inflight_rows = 0
                if self.buffered_rows < self.max_buffered:
                    self._room.set()

    async def _ready(self) -> bool:
        """Wait for a full batch or the interval; False once closing with nothing left."""
        while True:
            if self._closing:
                return bool(self._buf or self._replays)
            if self._rows >= self.batch_size or self._replays:
                return True
            self._wake.clear()
            if not self._buf:
                await self._wake.wait()
                continue
            delay = self._first_at + self.batch_interval - time.monotonic()
            if delay <= 0:
                return True
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                return True

    def _take(self) -> list[tuple[T, Rows, int]]:
        n = 0
        i = 0
        while i < len(self._buf) and n < self.batch_size:
            n += self._buf[i][2]
            i += 1
        batch = self._buf[:i]
        del self._buf[:i]
        self._rows -= n
        self._first_at = time.monotonic()
        return batch

    # -- inserting (RetryingInsert) ------------------------------------------------------------

    async def _insert(self, batch: _Batch[T]) -> None:
        try:
            await self._insert_tables(batch)
        except DatabaseError as e:
            if not self._token_unsupported(e):
                raise
            await self._insert_tables(batch)

    def _token_unsupported(self, e: DatabaseError) -> bool:
        """A server without insert_deduplication_token (ClickHouse < 22.2): go on without
        (at-least-once, as before), once."""
        if (self.dedup and getattr(e, "code", None) == UNKNOWN_SETTING
                and TOKEN_SETTING in str(e)):
            self.dedup = False
            log.warning("the database has no insert_deduplication_token: batches replayed "
                        "after a crash may be stored twice until merged")
            return True
        return False

    async def _insert_tables(self, batch: _Batch[T]) -> None:
        tables: dict[str, list[Row]] = {}
        for _, rows, _ in batch.items:
            for table, trows in rows.items():
                if trows and table not in batch.done:
                    tables.setdefault(table, []).extend(trows)
        settings = {TOKEN_SETTING: batch.token} if self.dedup else None
        for table, trows in tables.items():
            columns = list(dict.fromkeys(chain.from_iterable(trows)))  # union, in order
            t0 = time.perf_counter()
            await self._db.insert(table, trows, columns=columns, settings=settings)
            self._metrics.observe("insert_duration_seconds", time.perf_counter() - t0,
                                  help="Duration of one batch insert", table=table)
            self._metrics.inc("rows_inserted_total", len(trows), help="Rows inserted",
                              table=table)
            batch.done.add(table)

    def _failed(self, batch: _Batch[T], error: Exception, retry_in: float | None) -> None:
        if not isinstance(error, DatabaseError | TypeError | ValueError):
            log.exception("unexpected insert error, retrying", extra={"retry_in": retry_in})
            self._metrics.inc("insert_failures_total", kind=type(error).__name__)
            return
        # TypeError / ValueError: a row that cannot even be encoded (a bug upstream).
        data = not isinstance(error, DatabaseError) or is_data_error(error)
        self._metrics.inc("insert_failures_total", help="Failed database inserts (retried)",
                          kind="data" if data else "other")
        if retry_in is not None:
            log.warning("database insert failed, retrying",
                        extra={"error": str(error),
                               "rows": sum(n for _, _, n in batch.items),
                               "retry_in": retry_in})

    async def _halves(self, batch: _Batch[T]) -> list[_Batch[T]] | None:
        items = batch.items
        if len(items) < 2:
            return None
        mid = len(items) // 2
        skip = frozenset(batch.done)  # what the whole batch inserted stays inserted
        halves = [_Batch(f"{batch.token}.{i}", part, skip)
                  for i, part in enumerate((items[:mid], items[mid:]))]
        await self._record_split(batch, halves)
        return halves

    async def _reject(self, batch: _Batch[T], error: Exception) -> None:
        item = batch.items[0][0]
        log.error("database rejects the rows of a measurement",
                  extra={"uid": item.uid, "error": str(error)})
        if self._on_rejected is None:
            raise error
        await self._on_rejected(item, f"rows rejected by the database: {error}")
        self._finished(batch)

    def _inserted(self, batch: _Batch[T]) -> None:
        items = [item for item, _, _ in batch.items]
        self._observe_lag(items)
        self._on_committed(items)
        self._finished(batch)

    # -- the journal ---------------------------------------------------------------------------

    async def _write(self, m: Manifest, *, sync: bool = True, sync_dir: bool = False) -> bool:
        """Write `m` (off the event loop when synced); on failure (a full disk, say) the file
        is removed and False returned: the batch goes on unrecorded, so a crash before its
        commit may store it twice (until merged) but never loses it."""
        assert self._journal is not None
        try:
            if sync and self._journal.sync:  # fsync: off the event loop (encoded on it)
                await asyncio.to_thread(self._journal.write_bytes, m.name, encode(m),
                                        sync=True, sync_dir=sync_dir)
            else:
                self._journal.write(m, sync=False)
        except OSError as e:
            self._metrics.inc("journal_failures_total", help="Batch manifests that could "
                              "not be written (those batches may be duplicated by a crash)")
            if not self._journal_failing:  # once per streak (a full disk: every batch)
                log.error("cannot record batches; inserting them unrecorded",
                          extra={"batch": m.name, "error": str(e)})
            self._journal_failing = True
            m.groups.clear()  # its other groups (split halves) go on unrecorded as well
            self._unrecord(m)
            return False
        if self._journal_failing:
            self._journal_failing = False
            log.info("batches recorded again")
        return True

    def _unrecord(self, m: Manifest) -> None:
        try:
            self._journal.remove(m)  # type: ignore[union-attr]
        except OSError as e:
            log.error("cannot remove a batch manifest", extra={"batch": m.name,
                                                               "error": str(e)})

    async def _record(self, batch: _Batch[T]) -> None:
        """Before the first try: the batch's entries and token, durably."""
        if self._journal is None:
            return
        group = Group(batch.token, [item.uid for item, _, _ in batch.items], batch.skip)
        m = Manifest(batch.token, [group])
        if await self._write(m):
            batch.manifest, batch.group = m, group

    async def _rewrite(self, batch: _Batch[T]) -> None:
        """A replayed group lost entries (no longer scorable): record what it inserts now,
        so that a later replay cannot drop the dropped entries' rows for its token."""
        m, group = batch.manifest, batch.group
        assert m is not None and group is not None
        group.uids = [item.uid for item, _, _ in batch.items]
        if not await self._write(m, sync_dir=True):
            batch.manifest = batch.group = None

    async def _record_split(self, batch: _Batch[T], halves: list[_Batch[T]]) -> None:
        """The halves replace the batch in its file before either is tried."""
        m, group = batch.manifest, batch.group
        if m is None or group is None:
            return
        i = m.groups.index(group)
        groups = [Group(h.token, [item.uid for item, _, _ in h.items], h.skip) for h in halves]
        m.groups[i:i + 1] = groups
        if await self._write(m, sync_dir=True):
            for h, g in zip(halves, groups, strict=True):
                h.manifest, h.group = m, g

    def _finished(self, batch: _Batch[T]) -> None:
        """Its entries are committed: the group leaves its file."""
        if batch.manifest is not None and batch.group is not None:
            self._group_done(batch.manifest, batch.group)

    def _group_done(self, m: Manifest, group: Group) -> None:
        if self._journal is None:
            return
        if group in m.groups:
            m.groups.remove(group)
        if not m.groups:
            self._unrecord(m)
            return
        try:
            self._journal.write(m, sync=False)  # a stale copy only replays committed groups
        except OSError as e:
            log.error("cannot update a batch manifest", extra={"batch": m.name,
                                                               "error": str(e)})

    def _observe_lag(self, items: list[T]) -> None:
        now = time.time()
        for item in items:
            t = uid_time(item.uid)
            if t is not None:
                self._metrics.observe("lag_seconds", max(0.0, now - t),
                                      help="From receipt by the API (uid time) to insert")
