"""`Sink`: batches scored rows into ClickHouse inserts, then commits their queue entries.

Why batches: one INSERT per measurement (the reference) creates one part per row in a
MergeTree; `batch_size` rows or `batch_interval` seconds, whichever comes first, keeps parts
large and latency bounded.

Why commit after the insert: an entry leaves the durable intake queue only once every row it
produced (fastpath, and obs_openvpn for openvpn) is in the database. A failed insert
(DatabaseError / DatabaseUnavailable) is retried with exponential back-off up to
`retry_max` between tries and never dropped; meanwhile rows wait here, the pool stops
dispatching (`wait_for_room`), the intake queue fills and the feeder answers 503.

One exception to "retry forever": when ClickHouse says the *data* is invalid (parse / type
errors), or a row cannot even be encoded, retrying the same rows cannot succeed, so the
batch is split in halves until the offending measurement is isolated, and that one is
handed to `on_rejected` (quarantine).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain
from typing import Any, Generic, Protocol, TypeVar

from oonibackend.metrics import Metrics
from oonibackend.storage import Database, DatabaseError, DatabaseUnavailable

log = logging.getLogger("workers.intake.sink")

Row = dict[str, Any]
Rows = dict[str, list[Row]]

# ClickHouse error codes meaning "these values cannot go into this table".
DATA_ERROR_CODES = frozenset({
    6, 25, 26, 27, 32, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 691,
})
# Tries of a batch failing with a data error before it is split.
DATA_ERROR_TRIES = 2


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


def is_data_error(e: DatabaseError) -> bool:
    return not isinstance(e, DatabaseUnavailable) and getattr(e, "code", None) in DATA_ERROR_CODES


class Sink(Generic[T]):
    def __init__(self, db: Database, *, batch_size: int, batch_interval: float,
                 retry_max: float, metrics: Metrics,
                 on_committed: Callable[[list[T]], object],
                 on_rejected: Callable[[T, str], Awaitable[None]] | None = None,
                 retry_min: float = 0.1, max_buffered: int | None = None) -> None:
        self._db = db
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
        metrics.set("sink_buffered_rows", lambda: self._rows + self._inflight_rows,
                    help="Scored rows waiting for (or in) a database insert")

    # -- producer side -------------------------------------------------------------------------

    @property
    def buffered_rows(self) -> int:
        return self._rows + self._inflight_rows

    def add(self, item: T, rows: Rows) -> None:
        """Queue an item's rows (per table); an item without rows is committed at once."""
        n = sum(len(r) for r in rows.values())
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
        """Wait while too many rows are held (the database is slow or down)."""
        while self.buffered_rows >= self.max_buffered:
            self._room.clear()
            await self._room.wait()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fastpath-sink")

    async def close(self, timeout: float = 10.0) -> bool:
        """Insert what is buffered (trying for at most `timeout` seconds); True when
        everything was committed. What is left stays in the durable queue."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return not self._buf
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
            batch = self._take()
            self._inflight_rows = sum(n for _, _, n in batch)
            try:
                await self._deliver(batch)
            except Exception:  # a callback failed; the entries stay queued for a restart
                log.exception("batch abandoned", extra={"items": len(batch)})
            finally:
                self._inflight_rows = 0
                if self.buffered_rows < self.max_buffered:
                    self._room.set()

    async def _ready(self) -> bool:
        """Wait for a full batch or the interval; False once closing with nothing left."""
        while True:
            if self._closing:
                return bool(self._buf)
            if self._rows >= self.batch_size:
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

    async def _deliver(self, batch: list[tuple[T, Rows, int]]) -> None:
        """Insert until it works; split batches whose data cannot go into the table."""
        delay = self.retry_min
        data_errors = 0
        done: set[str] = set()
        while True:
            try:
                await self._insert(batch, done)
                break
            except (DatabaseError, TypeError, ValueError) as e:
                # TypeError / ValueError: a row that cannot even be encoded (a bug upstream).
                data = not isinstance(e, DatabaseError) or is_data_error(e)
                self._metrics.inc("insert_failures_total", help="Failed database inserts "
                                  "(retried)", kind="data" if data else "other")
                if data:
                    data_errors += 1
                    if data_errors >= DATA_ERROR_TRIES:
                        await self._split(batch, e)
                        return
                log.warning("database insert failed, retrying",
                            extra={"error": str(e), "rows": sum(n for _, _, n in batch),
                                   "retry_in": delay})
            except Exception as e:  # never let the sink die: retry like an outage
                log.exception("unexpected insert error, retrying", extra={"retry_in": delay})
                self._metrics.inc("insert_failures_total", kind=type(e).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
        items = [item for item, _, _ in batch]
        self._observe_lag(items)
        self._on_committed(items)

    async def _split(self, batch: list[tuple[T, Rows, int]], e: Exception) -> None:
        if len(batch) > 1:
            mid = len(batch) // 2
            await self._deliver(batch[:mid])
            await self._deliver(batch[mid:])
            return
        item = batch[0][0]
        log.error("database rejects the rows of a measurement",
                  extra={"uid": item.uid, "error": str(e)})
        if self._on_rejected is None:
            raise e
        await self._on_rejected(item, f"rows rejected by the database: {e}")

    async def _insert(self, batch: Sequence[tuple[T, Rows, int]], done: set[str]) -> None:
        tables: dict[str, list[Row]] = {}
        for _, rows, _ in batch:
            for table, trows in rows.items():
                if trows and table not in done:
                    tables.setdefault(table, []).extend(trows)
        for table, trows in tables.items():
            columns = list(dict.fromkeys(chain.from_iterable(trows)))  # union, in order
            t0 = time.perf_counter()
            await self._db.insert(table, trows, columns=columns)
            self._metrics.observe("insert_duration_seconds", time.perf_counter() - t0,
                                  help="Duration of one batch insert", table=table)
            self._metrics.inc("rows_inserted_total", len(trows), help="Rows inserted",
                              table=table)
            done.add(table)

    def _observe_lag(self, items: list[T]) -> None:
        now = time.time()
        for item in items:
            t = uid_time(item.uid)
            if t is not None:
                self._metrics.observe("lag_seconds", max(0.0, now - t),
                                      help="From receipt by the API (uid time) to insert")
