"""Remaining request-time budgets in one LMDB environment shared by every API process.

Why this shape:
* Checking a budget must not block the event loop: it is one LMDB read transaction (a few
  microseconds, no lock against writers) minus the charges this process has not written yet.
* Writing costs an fsync, so charges accumulate in memory and `write` applies a whole batch in
  ONE write transaction, normally from a thread. It reads, subtracts and writes back inside the
  transaction; LMDB serialises writers across processes, so charges from all processes add up.
* Hourly replenishment happens inside that same write transaction, guarded by a shared
  `last_replenish` timestamp, so it happens once for all processes (the legacy limiter kept the
  timer per process and replenished N times with N workers).

Values are remaining milliseconds as big-endian signed 64-bit ints; an absent key means a full
budget, and replenishment deletes keys that are back to full, so the database only holds
clients that spent something recently.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lmdb

from oonibackend.config import Config
from oonibackend.quotas.keys import is_account_key, key_label

log = logging.getLogger(__name__)

# Bucket name -> period in seconds (day 24 h, week 168 h, month 720 h).
PERIODS: dict[str, int] = {"daily": 24 * 3600, "weekly": 168 * 3600, "monthly": 720 * 3600}
REPLENISH_EVERY = 3600.0
DEFAULT_MAP_SIZE = 256 * 1024 * 1024  # address space only; the file grows with the data

_VALUE = struct.Struct(">q")
_TIME = struct.Struct(">d")
_LAST_REPLENISH = b"last_replenish"
_WRITE_ATTEMPTS = 16


@dataclass(frozen=True)
class Budgets:
    """Budgets in seconds of wall-clock request time per period."""

    daily: int
    weekly: int
    monthly: int

    def ms(self) -> dict[str, int]:
        return {name: getattr(self, name) * 1000 for name in PERIODS}


_CACHE_MAX = 100_000

class _ResizeGate:
    """Lets read transactions run concurrently but keeps them out while the map is resized:
    LMDB forbids `set_mapsize` while any transaction of this process is open."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class QuotaStore:
    """Budgets of networks and accounts. Not tied to aiohttp: `quotas_ctx` drives the flushes.

    `charge`, `remaining`, `begin_flush`/`end_flush` are meant for the event-loop thread; `write`
    (and the synchronous `flush`, `replenish`, `lowest`) may run in worker threads.
    """

    def __init__(self, path: str | Path, budgets: Budgets, token_budgets: Budgets,
                 map_size: int = DEFAULT_MAP_SIZE, env: lmdb.Environment | None = None,
                 cache_ttl: float = 1.0) -> None:
        """Open (or create) the environment at `path`, or use `env`, an environment this process
        already opened there (LMDB allows one handle per environment and process)."""
        self.path = Path(path)
        self.budgets, self.token_budgets = budgets, token_budgets
        self._full = budgets.ms()
        self._token_full = token_budgets.ms()
        self._owns_env = env is None
        if env is None:
            self.path.mkdir(parents=True, exist_ok=True)
            # metasync=False: one fsync per commit instead of two; a crash loses at most the
            # last commit's charges, never the database's integrity.
            env = lmdb.open(str(path), max_dbs=8, map_size=map_size, metasync=False,
                            readahead=False)
            env.reader_check()  # free reader slots left by processes that died
        self.env = env
        self._dbs = {name: self.env.open_db(name.encode()) for name in PERIODS}
        self._meta = self.env.open_db(b"meta")
        self._pending: dict[bytes, float] = {}  # ms charged here, not yet in a write
        # The batch being written (ms), and the id of the write transaction carrying it once
        # known: a read snapshot at or after that id already contains the batch.
        self._inflight: dict[bytes, float] = {}
        self._inflight_txn: int | None = None
        self._gate = _ResizeGate()
        # Stored budgets per key as last read (monotonic time, ms per bucket, snapshot id):
        # the hot path reads LMDB at most once per key per TTL, and each flush clears it.
        self._cache: dict[bytes, tuple[float, dict[str, int], int]] = {}
        self._cache_ttl = cache_ttl
        self._write_lock = threading.Lock()
        self._adopt_map_size = False

    @classmethod
    def from_config(cls, cfg: Config, map_size: int = DEFAULT_MAP_SIZE) -> QuotaStore:
        q = cfg.quotas
        return cls(cfg.path(q.dir), Budgets(q.daily, q.weekly, q.monthly),
                   Budgets(q.token_daily, q.token_weekly, q.token_monthly), map_size,
                   cache_ttl=q.flush_interval)

    def sibling(self) -> QuotaStore:
        """Another store on the same environment with its own pending charges: what a second
        process sees, for tests (two handles on one environment in one process are forbidden)."""
        return QuotaStore(self.path, self.budgets, self.token_budgets, env=self.env,
                          cache_ttl=self._cache_ttl)

    def close(self) -> None:
        if self._owns_env:
            self.env.close()

    def full_ms(self, key: bytes) -> dict[str, int]:
        return self._token_full if is_account_key(key) else self._full

    # -- reading (hot path) ------------------------------------------------------------------

    def remaining(self, key: bytes) -> dict[str, float]:
        """Seconds left per bucket: stored value (or full budget) minus unwritten local charges.

        Raises lmdb.Error when the environment cannot be read right now (callers fail open).
        """
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is None or now - hit[0] > self._cache_ttl:
            full = self.full_ms(key)
            with self._reading() as txn:
                stored = {name: (_VALUE.unpack(raw)[0] if (raw := txn.get(key, db=db))
                                 is not None else full[name])
                          for name, db in self._dbs.items()}
                hit = (now, stored, txn.id())
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = hit
        _, stored, txn_id = hit
        spent = self._pending.get(key, 0.0) + self._unwritten_at(txn_id).get(key, 0.0)
        return {name: (ms - spent) / 1000 for name, ms in stored.items()}

    def last_replenish(self) -> float | None:
        with self._reading() as txn:
            raw = txn.get(_LAST_REPLENISH, db=self._meta)
        return None if raw is None else _TIME.unpack(raw)[0]

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the next replenishment could run (at least 1)."""
        now = time.time() if now is None else now
        try:
            last = self.last_replenish()
        except lmdb.Error:
            last = None
        if last is None or last > now:
            return int(REPLENISH_EVERY)
        return max(1, math.ceil(last + REPLENISH_EVERY - now))

    def replenish_due(self, now: float) -> bool:
        last = self.last_replenish()
        return last is None or now - last >= REPLENISH_EVERY or now < last

    def lowest(self, n: int, bucket: str = "daily") -> list[tuple[str, float]]:
        """The `n` keys with the least time left in `bucket`, lowest first, as (label, seconds).

        Scans the whole bucket: for the admin summary, run it in a thread.
        """
        db = self._dbs[bucket]
        with self._reading() as txn:
            # dict() copies are atomic under the GIL: the loop thread may be charging meanwhile.
            spent: dict[bytes, float] = dict(self._pending)
            for k, ms in dict(self._unwritten(txn)).items():
                spent[k] = spent.get(k, 0.0) + ms
            seen: set[bytes] = set()
            rows: list[tuple[float, bytes]] = []
            for key, raw in txn.cursor(db=db):
                seen.add(key)
                rows.append((_VALUE.unpack(raw)[0] - spent.get(key, 0.0), key))
        rows.extend((self.full_ms(k)[bucket] - ms, k) for k, ms in spent.items() if k not in seen)
        return [(key_label(k), max(0.0, ms) / 1000) for ms, k in heapq.nsmallest(n, rows)]

    def _unwritten(self, txn: lmdb.Transaction) -> dict[bytes, float]:
        return self._unwritten_at(txn.id())

    def _unwritten_at(self, txn_id: int) -> dict[bytes, float]:
        """The in-flight batch unless the read snapshot `txn_id` already contains it: counting
        it twice would refuse clients early while the flusher's completion waits for the loop."""
        written_in = self._inflight_txn
        if written_in is not None and txn_id >= written_in:
            return {}
        return self._inflight

    @contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction]:
        with self._gate.reading():
            try:
                with self.env.begin(buffers=False) as txn:
                    yield txn
            except lmdb.MapResizedError:
                # Another process grew the map; adopting its size needs no open transaction
                # in this process, so leave it to the writer and report the failure.
                self._adopt_map_size = True
                raise

    # -- charging and writing ----------------------------------------------------------------

    def charge(self, key: bytes, seconds: float) -> None:
        """Record request time against a key, in memory until the next flush."""
        self._pending[key] = self._pending.get(key, 0.0) + seconds * 1000

    def has_pending(self) -> bool:
        return bool(self._pending) or self._adopt_map_size

    def begin_flush(self) -> dict[bytes, float]:
        """Take the pending charges for a write; they stay counted (as in flight) until the
        snapshot readers see contains them, so a check never sees them missing or doubled.
        One batch at a time."""
        if self._inflight:
            raise RuntimeError("a quota flush is already in flight")
        batch, self._pending = self._pending, {}
        self._inflight, self._inflight_txn = batch, None
        return batch

    def end_flush(self, batch: dict[bytes, float], ok: bool) -> None:
        """Forget a written batch, or put a failed one back to be retried with the next."""
        if batch is self._inflight:
            self._inflight, self._inflight_txn = {}, None
            # Cached reads predate this batch's commit: drop them rather than miss its charges.
            self._cache.clear()
        if not ok:
            for k, ms in batch.items():
                self._pending[k] = self._pending.get(k, 0.0) + ms

    def flush(self, now: float | None = None) -> bool:
        """Write all pending charges now (synchronously). Returns whether it replenished."""
        batch = self.begin_flush()
        ok = False
        try:
            replenished = self.write(batch, time.time() if now is None else now)
            ok = True
            return replenished
        finally:
            self.end_flush(batch, ok)

    def replenish(self, now: float) -> bool:
        """Credit every key if an hour passed since the last replenishment by any process."""
        return self.write({}, now)

    def write(self, batch: dict[bytes, float], now: float) -> bool:
        """Apply a batch of charges (ms) and any due replenishment in one write transaction.

        Blocks on the fsync and on other processes' writers: call it from a thread. Grows the
        map when full. Returns whether this call replenished.
        """
        with self._write_lock:
            for _ in range(_WRITE_ATTEMPTS):
                if self._adopt_map_size:
                    self._set_map_size(0)
                try:
                    with self.env.begin(write=True) as txn:
                        replenished = self._replenish_in(txn, now)
                        self._apply(txn, batch)
                        if batch and batch is self._inflight:
                            # Set before the commit: no snapshot can reach this id without it.
                            self._inflight_txn = txn.id()
                    return replenished
                except lmdb.MapFullError:
                    self._forget_txn(batch)
                    size = self.env.info()["map_size"] * 2
                    log.info("quota map full, growing it", extra={"map_size": size})
                    self._set_map_size(size)
                except lmdb.MapResizedError:
                    self._forget_txn(batch)
                    self._adopt_map_size = True
                except BaseException:
                    self._forget_txn(batch)
                    raise
            raise lmdb.MapFullError("quota store: could not make room")

    def _forget_txn(self, batch: dict[bytes, float]) -> None:
        if batch is self._inflight:
            self._inflight_txn = None

    def _set_map_size(self, size: int) -> None:
        with self._gate.exclusive():
            self.env.set_mapsize(size)
            self._adopt_map_size = False

    def _apply(self, txn: lmdb.Transaction, batch: dict[bytes, float]) -> None:
        for key, spent in batch.items():
            # Stochastic rounding: sub-millisecond requests are charged right on average
            # instead of never (a flush often holds a single fast request per key).
            ms = int(spent)
            if random.random() < spent - ms:
                ms += 1
            if ms <= 0:
                continue
            full = self.full_ms(key)
            for name, db in self._dbs.items():
                raw = txn.get(key, db=db)
                current = _VALUE.unpack(raw)[0] if raw is not None else full[name]
                txn.put(key, _VALUE.pack(max(0, current - ms)), db=db)

    def _replenish_in(self, txn: lmdb.Transaction, now: float) -> bool:
        raw = txn.get(_LAST_REPLENISH, db=self._meta)
        if raw is None or now < _TIME.unpack(raw)[0]:
            # First use, or the clock went back: start counting from now.
            txn.put(_LAST_REPLENISH, _TIME.pack(now), db=self._meta)
            return False
        elapsed = now - _TIME.unpack(raw)[0]
        if elapsed < REPLENISH_EVERY:
            return False
        for name, db in self._dbs.items():
            period = PERIODS[name]
            updates: list[tuple[bytes, int]] = []
            full_again: list[bytes] = []
            for key, value in txn.cursor(db=db):
                full = self.full_ms(key)[name]
                new = _VALUE.unpack(value)[0] + round(elapsed * full / period)
                if new >= full:
                    full_again.append(key)
                else:
                    updates.append((key, new))
            for key in full_again:
                txn.delete(key, db=db)
            for key, new in updates:
                txn.put(key, _VALUE.pack(new), db=db)
        txn.put(_LAST_REPLENISH, _TIME.pack(now), db=self._meta)
        log.info("quotas replenished", extra={"elapsed_s": round(elapsed)})
        return True
