"""`oonibackend fastpath reprocess --start-day D --end-day D [--cc ..] [--testname ..]`.

Re-scores stored raw measurements and writes the rows again (ClickHouse deduplicates,
docs/fastpath.md §1.11): after a scoring fix, after new fingerprints, or to fill a fresh
database from the bucket.

For each day in [start, end) the objects under `canned/<YYYY-MM-DD>/` and `raw/<YYYYMMDD>/`
are listed, filtered (see workers.sources.selection) and read one by one: postcans (uid = member
name), jsonl.gz (uids from the `jsonl` table, else trivial ids) and legacy lz4 cans (trivial
ids). Rows are inserted in batches of `fastpath.batch_size` through the storage layer, retried
with back-off while the database fails (never dropped; rows ClickHouse rejects as invalid are
isolated and written to `<state>.rejected.jsonl`: workers/batch_insert.py).

Resumable: an object's key is appended to `<fastpath.dir>/reprocess-<start>-<end>.done` once
all its rows are inserted, and skipped by the next run of the same range (unless
--no-resume). One pipeline: the next objects are fetched while the current one is scored (in
a thread), and a batch is inserted while the next one fills. At the end the rollups of the days
the run wrote are recounted (storage/rollups.py: a re-scored row would be counted twice);
after a run that was interrupted and resumed, recount the range's days with `oonibackend db
rebuild-rollups`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from oonibackend.objectstore import ObjectInfo, ObjectStore, StoreError, keys, open_store
from oonibackend.storage import Database, DatabaseError, DatabaseUnavailable, rollups
from workers.batch_insert import RetryingInsert
from workers.sources import selection
from workers.sources.formats import Record, iter_object
from workers.sources.jsonl_uids import JsonlUids
from workers.sources.selection import Filters
from workers.sources.state import DoneLog

if TYPE_CHECKING:
    from oonibackend.config import Config
    from workers.fingerprints import Fingerprints

log = logging.getLogger(__name__)

PROG = "oonibackend fastpath reprocess"
CHUNK = 500  # records scored per trip to the scoring thread
PREFETCH = 2  # objects fetched ahead of the one being scored
PERMANENT_TRIES = 5  # a non-connection database error fails the run after this many tries

Rows = dict[str, list[dict[str, Any]]]
TableRows = tuple[str, list[dict[str, Any]]]  # a batch: one table's rows


# ---------------------------------------------------------------- statistics and progress


@dataclass
class Stats:
    days: int = 0
    files: int = 0
    files_skipped: int = 0
    files_failed: list[str] = field(default_factory=list)
    measurements: int = 0
    discarded: int = 0
    errors: int = 0
    filtered: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    bytes: int = 0

    def summary(self, elapsed: float, dry_run: bool) -> str:
        rows = ", ".join(f"{n} {t}" for t, n in sorted(self.rows.items())) or "0"
        verb = "would insert" if dry_run else "inserted"
        rate = self.measurements / elapsed if elapsed > 0 else 0.0
        return (f"reprocessed {self.files} files ({self.files_skipped} already done, "
                f"{len(self.files_failed)} failed) over {self.days} "
                f"day{'' if self.days == 1 else 's'}: "
                f"{self.measurements} measurements, {self.discarded} discarded, "
                f"{self.errors} errors, {self.filtered} filtered out; {verb} rows: {rows}"
                + (f"; {self.rejected} rows rejected by the database" if self.rejected else "")
                + f"; {elapsed:.1f} s, {rate:.0f} msmt/s")


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """A status line on stderr: redrawn in place on a terminal, else one line every
    `interval` seconds (logs and CI). ETA as the reference: days done plus the byte
    fraction of the current day, extrapolated over the range."""

    def __init__(self, stats: Stats, total_days: int, stream: IO[str] | None = None,
                 interval: float | None = None) -> None:
        self.stats = stats
        self.total_days = max(1, total_days)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.t0 = time.monotonic()
        self._last = 0.0
        self.day_index = 0
        self.day = ""
        self.day_files = self.day_bytes = 0
        self.done_files = self.done_bytes = 0

    def start_day(self, index: int, day: dt.date, files: int, nbytes: int) -> None:
        self.day_index, self.day = index, day.isoformat()
        self.day_files, self.day_bytes = files, nbytes
        self.done_files = self.done_bytes = 0
        self.update()

    def object_done(self, nbytes: int) -> None:
        self.done_files += 1
        self.done_bytes += nbytes
        self.update()

    def eta(self) -> float | None:
        frac = self.done_bytes / self.day_bytes if self.day_bytes else 0.0
        done = self.day_index + frac
        if done <= 0:
            return None
        elapsed = time.monotonic() - self.t0
        return elapsed * self.total_days / done - elapsed

    def line(self) -> str:
        s = self.stats
        elapsed = time.monotonic() - self.t0
        rate = s.measurements / elapsed if elapsed > 0 else 0.0
        eta = self.eta()
        return (f"day {min(self.day_index + 1, self.total_days)}/{self.total_days} {self.day} "
                f"files {self.done_files}/{self.day_files} (total {s.files}) "
                f"msmts {s.measurements} ({rate:.0f}/s) errors {s.errors} "
                f"elapsed {_hms(elapsed)} ETA {_hms(eta) if eta is not None else '?'}")

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line that must not be overwritten by the status line."""
        self.stream.write(("\r\x1b[2K" if self.tty else "") + text + "\n")
        self.stream.flush()
        self._last = 0.0 if self.tty else self._last

    def finish(self) -> None:
        self.update(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------- batched writes


class BatchWriter(RetryingInsert[TableRows]):
    """Buffers rows per table; inserts `batch_size` rows at a time in the background (one
    insert in flight) and records object keys as done once all their rows are in. A batch is
    one table's rows; a run gives up on a database error other than a lost connection or
    invalid data after PERMANENT_TRIES tries."""

    other_tries = PERMANENT_TRIES

    def __init__(self, db: Database | None, done: DoneLog | None, *, batch_size: int,
                 retry_max: float, stats: Stats, rejected_path: Path | None = None,
                 say: Any = None) -> None:
        self.db = db
        self.done = done
        self.batch_size = max(1, batch_size)
        self.retry_max = max(0.1, retry_max)
        self.retry_min = min(0.5, self.retry_max)
        self.stats = stats
        self.rejected_path = rejected_path
        self.say = say or (lambda _m: None)
        self._rows: Rows = {}
        self._n = 0
        self._keys: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, rows: Rows) -> None:
        for table, table_rows in rows.items():
            if table_rows:
                self._rows.setdefault(table, []).extend(table_rows)
                self._n += len(table_rows)
                self.stats.rows[table] = self.stats.rows.get(table, 0) + len(table_rows)

    def object_done(self, key: str) -> None:
        self._keys.append(key)

    @property
    def full(self) -> bool:
        return self._n >= self.batch_size

    async def flush(self, wait: bool = False) -> None:
        """Start inserting what is buffered (after the previous insert finished)."""
        await self._wait()
        rows, keys = self._rows, self._keys
        self._rows, self._n, self._keys = {}, 0, []
        if rows or keys:
            self._task = asyncio.create_task(self._write(rows, keys))
        if wait:
            await self._wait()

    async def _wait(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def close(self) -> None:
        await self.flush(wait=True)

    async def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _write(self, rows: Rows, keys: list[str]) -> None:
        if self.db is not None:
            for table, table_rows in rows.items():
                for part in _split_by_columns(table_rows):
                    for start in range(0, len(part), self.batch_size):
                        await self.deliver((table, part[start:start + self.batch_size]))
        if self.done is not None:
            await asyncio.to_thread(self.done.add, keys)

    async def _insert(self, batch: TableRows) -> None:
        table, rows = batch
        assert self.db is not None
        await self.db.insert(table, rows, columns=list(rows[0]))

    def _failed(self, batch: TableRows, error: Exception, retry_in: float | None) -> None:
        table, rows = batch
        if retry_in is None:
            return
        if isinstance(error, DatabaseUnavailable):
            self.say(f"database unavailable, retrying {len(rows)} {table} rows in "
                     f"{retry_in:.1f} s: {error}")
        else:
            self.say(f"insert into {table} failed ({error}), retrying in {retry_in:.1f} s")

    async def _halves(self, batch: TableRows) -> list[TableRows] | None:
        table, rows = batch
        if len(rows) < 2:
            return None
        mid = len(rows) // 2
        return [(table, rows[:mid]), (table, rows[mid:])]

    async def _reject(self, batch: TableRows, error: Exception) -> None:
        """A row the database rejects as invalid goes to the rejected file (kept for
        inspection, never silently dropped)."""
        from oonibackend import jsonutil

        table, (row,) = batch
        self.stats.rejected += 1
        self.say(f"{table} row of {row.get('measurement_uid')} rejected by the database: "
                 f"{error}")
        if self.rejected_path is not None:
            with open(self.rejected_path, "ab") as f:
                f.write(jsonutil.dumps({"table": table, "error": str(error), "row": row})
                        + b"\n")


def _split_by_columns(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Rows grouped by their column set (one INSERT has one column list)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r), []).append(r)
    yield from groups.values()


# ---------------------------------------------------------------- scoring


@dataclass
class Chunk:
    """What one trip to the scoring thread produced."""

    rows: Rows = field(default_factory=dict)
    measurements: int = 0  # scored, with rows
    discarded: int = 0  # dropped by the pipeline as the reference does (no report_id, ZZ, AS0)
    errors: int = 0
    filtered: int = 0
    messages: list[str] = field(default_factory=list)
    exhausted: bool = False


def _score_chunk(records: Iterator[Record], fps: Fingerprints, filters: Filters,
                 legacy: bool, limit: int) -> Chunk:
    """Score up to `limit` records in the calling (worker) thread."""
    from workers.process import MeasurementError, process_record

    chunk = Chunk()
    for _ in range(limit):
        rec = next(records, None)
        if rec is None:
            chunk.exhausted = True
            break
        if legacy and filters.active and rec.msm is not None and \
                not filters.msm_matches(rec.msm):
            chunk.filtered += 1
            continue
        try:
            out = process_record(rec, fps)
        except (MeasurementError, ValueError) as e:
            chunk.errors += 1
            log.debug("measurement skipped", extra={"where": rec.where, "error": str(e)})
            continue
        except Exception as e:  # a scorer bug must not stop a long run
            chunk.errors += 1
            chunk.messages.append(f"{rec.where}: internal error: {type(e).__name__}: {e}")
            continue
        if not out:
            chunk.discarded += 1
            continue
        chunk.measurements += 1
        for table, table_rows in out.items():
            chunk.rows.setdefault(table, []).extend(table_rows)
    return chunk


# ---------------------------------------------------------------- the run


@dataclass
class Options:
    start: dt.date
    end: dt.date
    filters: Filters
    dry_run: bool = False
    resume: bool = True


class Reprocessor:
    def __init__(self, db: Database, store: ObjectStore, fps: Fingerprints, opts: Options,
                 *, batch_size: int, retry_max: float, state_path: Path,
                 progress_stream: IO[str] | None = None) -> None:
        self.db = db
        self.store = store
        self.fps = fps
        self.opts = opts
        self.stats = Stats()
        self.days = selection.days(opts.start, opts.end)
        self.progress = Progress(self.stats, len(self.days), progress_stream)
        self.state_path = state_path
        self.batch_size = batch_size
        self.retry_max = retry_max
        self.uids = JsonlUids(self._query)

    async def _query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        delay, permanent = min(0.5, self.retry_max), 0
        while True:
            try:
                return await self.db.query(sql, params)
            except DatabaseUnavailable as e:
                self.progress.message(f"database unavailable ({e}), retrying in {delay:.1f} s")
            except DatabaseError:
                permanent += 1
                if permanent >= PERMANENT_TRIES:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def run(self) -> Stats:
        done = None if self.opts.dry_run else DoneLog(self.state_path, self.opts.resume)
        writer = BatchWriter(None if self.opts.dry_run else self.db, done,
                             batch_size=self.batch_size, retry_max=self.retry_max,
                             stats=self.stats,
                             rejected_path=self.state_path.with_suffix(".rejected.jsonl"),
                             say=self.progress.message)
        queue: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue(PREFETCH)
        producer = asyncio.create_task(self._produce(queue, done))
        try:
            await self._consume(queue, writer)
            await producer  # re-raises a listing error
            await writer.close()
        except BaseException:
            producer.cancel()
            await writer.abort()
            with contextlib.suppress(BaseException):
                await producer
            raise
        finally:
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None and item[0] == "object":
                    await self.store.release(item[2])
            if done is not None:
                done.close()
            self.progress.finish()
        return self.stats

    async def _produce(self, queue: asyncio.Queue[tuple[Any, ...] | None],
                       done: DoneLog | None) -> None:
        try:
            for index, day in enumerate(self.days):
                listed: list[ObjectInfo] = []
                for prefix in keys.day_prefixes(day):
                    listed.extend(await self.store.list(prefix))
                todo = []
                for obj in selection.select(listed, self.opts.filters):
                    if done is not None and obj.key in done:
                        self.stats.files_skipped += 1
                    else:
                        todo.append(obj)
                self.uids.plan([o.key for o in todo])
                await queue.put(("day", index, day, len(todo), sum(o.size for o in todo)))
                for obj in todo:
                    try:
                        path = await self.store.fetch(obj)
                    except StoreError as e:
                        await queue.put(("failed", obj, str(e)))
                        continue
                    await queue.put(("object", obj, path))
        except asyncio.CancelledError:
            # The consumer is gone (interrupted run): a full queue must not block this.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
            raise
        except BaseException:
            await queue.put(None)  # the consumer ends, then run() re-raises this error
            raise
        await queue.put(None)

    async def _consume(self, queue: asyncio.Queue[tuple[Any, ...] | None],
                       writer: BatchWriter) -> None:
        while (item := await queue.get()) is not None:
            if item[0] == "day":
                _, index, day, nfiles, nbytes = item
                self.stats.days += 1
                self.progress.start_day(index, day, nfiles, nbytes)
            elif item[0] == "failed":
                _, obj, err = item
                self.stats.files_failed.append(obj.key)
                self.progress.message(f"{obj.key}: {err}")
                self.progress.object_done(obj.size)
            else:
                _, obj, path = item
                try:
                    await self._object(obj, path, writer)
                finally:
                    await self.store.release(path)
                self.progress.object_done(obj.size)

    async def _object(self, obj: ObjectInfo, path: Path, writer: BatchWriter) -> None:
        uids = await self.uids.get(obj.key) if obj.key.endswith(keys.JSONL) else None
        legacy = keys.is_legacy(obj.key)
        with open(path, "rb") as f:
            records = iter_object(obj.key, f, uids)
            while True:
                try:
                    chunk = await asyncio.to_thread(_score_chunk, records, self.fps,
                                                    self.opts.filters, legacy, CHUNK)
                except Exception as e:
                    # A corrupt or truncated object (tarfile, gzip, lz4 errors): rows read
                    # so far are kept, the key is not marked done so a re-run retries it.
                    self.stats.files_failed.append(obj.key)
                    self.progress.message(f"{obj.key}: unreadable: {type(e).__name__}: {e}")
                    return
                self.stats.measurements += chunk.measurements
                self.stats.discarded += chunk.discarded
                self.stats.errors += chunk.errors
                self.stats.filtered += chunk.filtered
                for m in chunk.messages:
                    self.progress.message(m)
                writer.add(chunk.rows)
                if writer.full:
                    await writer.flush()
                self.progress.update()
                if chunk.exhausted:
                    break
        self.stats.files += 1
        self.stats.bytes += obj.size
        writer.object_done(obj.key)


async def load_fingerprints(db: Database) -> Fingerprints:
    """The fingerprints the fastpath would use: the two tables, DNS first (§3.1)."""
    from oonibackend.jobs.fingerprints.parse import MATCH_COLUMNS
    from workers.fingerprints import Fingerprints

    columns = ", ".join(MATCH_COLUMNS)
    dns = await db.query(f"SELECT {columns} FROM fingerprints_dns")
    http = await db.query(f"SELECT {columns} FROM fingerprints_http")
    return Fingerprints.from_rows(dns, http)


def state_file(cfg: Config, start: dt.date, end: dt.date) -> Path:
    return cfg.path(cfg.fastpath.dir) / f"reprocess-{start.isoformat()}-{end.isoformat()}.done"


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One run per range at a time: both would append to the same resume log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise StoreError(f"another reprocess of this range is running ({path})") from e
        yield


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM / SIGINT cancel the run, so fetched temporary files are removed and the
    resume log is closed properly (completed objects stay recorded)."""
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    sigs = (signal.SIGTERM, signal.SIGINT)
    installed = []
    for sig in sigs:
        try:
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_reprocess(args: argparse.Namespace, cfg: Config) -> int:
    """Entry point of `fastpath reprocess` (args: start_day, end_day, cc, testname, source,
    dry_run, resume)."""
    from oonibackend.jobs.harness import open_database
    from oonibackend.storage.migrate import migrate

    try:
        start, end = selection.parse_day(args.start_day), selection.parse_day(args.end_day)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if end <= start:
        print(f"{PROG}: --end-day must be after --start-day (the end day is exclusive)",
              file=sys.stderr)
        return 2
    opts = Options(start, end, Filters.make(getattr(args, "cc", None),
                                            getattr(args, "testname", None)),
                   dry_run=bool(getattr(args, "dry_run", False)),
                   resume=getattr(args, "resume", True) is not False)
    state = state_file(cfg, start, end)
    t0 = time.monotonic()
    tmp = None
    try:
        with _exclusive(state):
            state.parent.mkdir(parents=True, exist_ok=True)
            # Fetched objects of a run that was killed: only one run per range exists.
            for stale in state.parent.glob(f"reprocess-{start}-{end}-*/"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = tempfile.mkdtemp(prefix=f"reprocess-{start}-{end}-", dir=state.parent)
            store = open_store(cfg, getattr(args, "source", None), tmp_dir=tmp)
            async with store, open_database(cfg) as db:
                await migrate(db)
                fps = await load_fingerprints(db)
                if not len(fps):
                    print(f"{PROG}: warning: no fingerprints in the database "
                          f"(run `oonibackend update-fingerprints`)", file=sys.stderr)
                job = Reprocessor(db, store, fps, opts, batch_size=cfg.fastpath.batch_size,
                                  retry_max=cfg.fastpath.insert_retry_max, state_path=state)
                ndays = len(job.days)
                print(f"{PROG}: {store.name}, {ndays} day{'' if ndays == 1 else 's'} from {start} "
                      f"(end {end} excluded)" + (", dry run" if opts.dry_run else ""),
                      file=sys.stderr)
                started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                with _stop_on_signals():
                    stats = await job.run()
                if not opts.dry_run:  # the rollups counted re-scored rows twice
                    await rollups.rebuild_written_since(db, started)
    except asyncio.CancelledError:
        print(f"{PROG}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except StoreError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except DatabaseError as e:
        print(f"{PROG}: database error: {e} (re-run to resume)", file=sys.stderr)
        return 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(stats.summary(time.monotonic() - t0, opts.dry_run), flush=True)
    if stats.files_failed:
        print(f"{PROG}: {len(stats.files_failed)} objects could not be read (re-run to "
              f"retry): {', '.join(stats.files_failed[:10])}", file=sys.stderr)
        return 1
    return 0
