"""`Spool`: durable measurement writes with group commit.

Acknowledging a measurement only after it is on disk costs an fsync; doing one per
measurement capped the API near 1,800 req/s on the target machine, one per batch reached
~4,200 req/s. So:

* callers enqueue (hour dir, uid, body, future) and await the future;
* one writer thread takes up to `max_batch` queued items, appends them to the current WAL
  segment, issues ONE fdatasync and resolves the batch's futures: the measurements are
  durable, so they are acknowledged;
* a files thread then creates each `<uid>.post` (no fsync), in WAL order, off the answer
  path (ext4 file creation under load varies from 25 to 300 us);
* every `checkpoint_interval` seconds (and on close) the writer rotates to a new segment; once
  the files thread has created every file of the old segments, a checkpoint makes them
  durable and deletes those segments, in a third thread, so submissions never wait for it;
* on start, any segment left over (crash, power loss) is replayed: a record whose `.post` is
  missing or differs from its record is rewritten. A torn last record was never acknowledged.

A full disk (or any write error) never loses an acknowledged measurement nor stops the API:

* a `.post` that cannot be written stays *owed* (`owes()`): its WAL segment is kept and the
  write retried at each checkpoint; listeners (`add_listener`, the forwarder) are told when
  owed files appear, so delivery does not wait for a restart;
* when the replay at start fails, the spool starts *degraded* (`start(degraded_ok=True)`):
  the segments are kept, `write` refuses new measurements (`SpoolUnavailable`), and a thread
  retries the replay with back-off until it succeeds, then accepts measurements again;
* a segment whose first append fails holds nothing acknowledged and is deleted at once, so
  a full disk does not fill the WAL directory with empty segments.

One process owns a spool directory (an flock on `wal/LOCK`), so a second API process on the
same directory fails at start instead of replaying a live WAL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oonibackend.config import Config
from oonibackend.fileutil import fsync_dir, try_flock
from oonibackend.metrics import Metrics
from oonibackend.spool import layout, wal

log = logging.getLogger(__name__)

_STOP = object()
# Messages to the files thread.
_FILES = object()
_SEGMENT = object()
_CHECKPOINT = object()
_BARRIER = object()
# Batches of .post files waiting to be created before the writer blocks (backpressure).
_FILES_BACKLOG = 256
# Files per task of the file threads, and tasks queued to them.
_CHUNK = 16
_FILES_IN_FLIGHT = 64
# Back-off between attempts of a failed start-up replay (seconds).
RECOVERY_RETRY_MIN = 0.5
RECOVERY_RETRY_MAX = 5.0


class SpoolError(Exception):
    """A measurement could not be made durable (disk full, I/O error, spool closed)."""

    retry_after = 10  # seconds a client should wait before trying again


class SpoolUnavailable(SpoolError):
    """The spool refuses measurements until the replay of its WAL succeeds (degraded)."""

    retry_after = 30


@dataclass
class _Checkpoint:
    """What a checkpoint must make durable before it may delete `segments`."""

    segments: list[Path] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    dirs: set[str] = field(default_factory=set)
    retry: list[tuple[str, bytes]] = field(default_factory=list)  # files that failed to write

    def merge(self, other: _Checkpoint) -> None:
        self.segments.extend(other.segments)
        self.files.extend(other.files)
        self.dirs |= other.dirs
        self.retry.extend(other.retry)


class Spool:
    def __init__(self, cfg: Config, metrics: Metrics | None = None) -> None:
        self.root = cfg.path(cfg.spool.dir)
        self.incoming = self.root / layout.INCOMING
        self.wal_dir = self.root / layout.WAL
        self._fsync = cfg.spool.fsync
        self._max_batch = max(1, cfg.spool.max_batch)
        self._interval = cfg.spool.checkpoint_interval
        self._file_threads = max(1, cfg.spool.file_threads)
        self._metrics = metrics or Metrics()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ckpt_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._ckpt_future: concurrent.futures.Future | None = None
        self._ckpt_failed: _Checkpoint | None = None
        self._pending = _Checkpoint()  # files thread: written since the last checkpoint
        self._files_q: queue.Queue = queue.Queue(_FILES_BACKLOG)
        self._files_thread: threading.Thread | None = None
        self._file_pool: concurrent.futures.ThreadPoolExecutor
        self._segment: wal.Segment | None = None
        self._seq = 0
        self._lock_fd = -1
        self._closed = True
        self._last_rotate = time.monotonic()
        # Paths of `.post` files acknowledged (WAL durable) but not written yet: in flight to
        # the files thread, or failed and waiting for a retry. Touched by the spool's threads
        # and read by the event loop; single set operations are atomic in CPython.
        self._owed: set[str] = set()
        self._listeners: list[Callable[[], None]] = []
        # Degraded mode: segments whose replay failed at start, retried by a thread.
        self._recovery_segs: list[Path] | None = None
        self.recovery_error = ""
        self._recovery_stop = threading.Event()
        self._recovery_thread: threading.Thread | None = None
        m = self._metrics
        m.set("spool_recovery_pending", lambda: float(self.recovery_pending),
              help="1 while the WAL replay failed at start: submissions are refused")
        m.set("spool_files_owed", lambda: len(self._owed),
              help="Acknowledged measurements whose .post file is not written yet")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, degraded_ok: bool = False) -> None:
        """Take the spool lock, replay leftover WAL segments, start the writer thread.

        When the replay fails (disk full, I/O error) it raises, unless `degraded_ok`: then the
        spool starts degraded (`recovery_pending`), refusing writes while a thread retries the
        replay; it accepts writes again by itself once the replay succeeds.
        """
        await asyncio.to_thread(self._open, degraded_ok)
        self._closed = False
        if self._recovery_segs is not None:
            self._recovery_thread = threading.Thread(
                target=self._recovery_run, name="spool-recovery", daemon=True)
            self._recovery_thread.start()
        self._ckpt_pool = concurrent.futures.ThreadPoolExecutor(1, "spool-checkpoint")
        self._file_pool = concurrent.futures.ThreadPoolExecutor(self._file_threads, "spool-file")
        self._files_thread = threading.Thread(target=self._files_run, name="spool-files",
                                              daemon=True)
        self._files_thread.start()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Commit everything queued, checkpoint, delete the WAL, release the lock."""
        if self._closed:
            return
        self._closed = True
        self._recovery_stop.set()
        if self._recovery_thread is not None:
            await asyncio.to_thread(self._recovery_thread.join)
        self._queue.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._ckpt_pool is not None:
            self._ckpt_pool.shutdown(wait=True)
            self._file_pool.shutdown(wait=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def write(self, hour_dir: str, uid: str, body: bytes) -> None:
        """Return once `body` is durable (WAL fdatasync'd); `<uid>.post` appears right after.

        Raises ValueError for malformed names, SpoolError when the data could not be stored.
        """
        path = layout.post_path(self.incoming, hour_dir, uid)  # validates both names
        if self._closed:
            raise SpoolError("spool closed")
        if self._recovery_segs is not None:
            raise SpoolUnavailable(f"spool recovery pending: {self.recovery_error}")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((hour_dir, uid, path, body, fut, loop))
        await fut

    async def files_written(self) -> None:
        """Wait until every measurement acknowledged so far has its `.post` file."""
        done = threading.Event()
        await asyncio.to_thread(self._files_q.put, (_BARRIER, done))
        await asyncio.to_thread(done.wait)

    def post_path(self, hour_dir: str, uid: str) -> Path:
        return Path(layout.post_path(self.incoming, hour_dir, uid))

    @property
    def recovery_pending(self) -> bool:
        """True while the start-up replay of the WAL has not succeeded (degraded mode)."""
        return self._recovery_segs is not None

    def owes(self, hour_dir: str, uid: str) -> bool:
        """Whether the spool cannot vouch for `<uid>.post` yet: the measurement was
        acknowledged but its file is not written (in flight, or failed and retried), or the
        WAL replay is pending (a file may then be missing or torn). A missing file that is
        not owed was removed after it was written (archived by the uploader)."""
        if self._recovery_segs is not None:
            return True
        return layout.post_path(self.incoming, hour_dir, uid) in self._owed

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (from a spool thread) whenever files that were owed after a
        failure, or restored by a delayed replay, have been written."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:
                log.exception("spool listener failed")

    # -- start-up: lock and recovery ----------------------------------------------------------

    def _open(self, degraded_ok: bool = False) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        fd = try_flock(self.wal_dir / "LOCK")
        if fd is None:
            raise SpoolError(f"spool {self.root} is in use by another process")
        self._lock_fd = fd
        segs = wal.segments(self.wal_dir)
        self._seq = int(segs[-1].stem) + 1 if segs else 1
        removed = layout.remove_stale_tmp(self.incoming, older_than=0)
        if segs:
            try:
                self.recover(segs)
            except OSError as e:
                if not degraded_ok:
                    os.close(self._lock_fd)
                    self._lock_fd = -1
                    raise
                # Keep the segments (new ones are numbered after them) and retry later.
                self._recovery_segs = segs
                self.recovery_error = _describe(e)
                log.error("spool recovery failed: submissions are refused until a retry "
                          "succeeds", extra={"error": self.recovery_error,
                                             "segments": len(segs)})
        if removed:
            log.info("removed stale temporary spool files", extra={"count": removed})

    def recover(self, segs: list[Path]) -> int:
        """Rewrite every `.post` a crash may have lost, make them durable, drop the segments.

        Returns the number of files rewritten.
        """
        t0 = time.monotonic()
        rewritten: list[str] = []
        dirs: set[str] = set()
        records = torn = 0
        for seg in segs:
            reader = wal.SegmentReader(seg)
            for rec in reader:
                records += 1
                try:
                    path = layout.post_path(self.incoming, rec.hour_dir, rec.uid)
                except ValueError:
                    log.error("invalid name in WAL record", extra={"segment": str(seg)})
                    continue
                if not layout.same_content(path, rec.body):
                    if layout.write_post(path, rec.body):
                        dirs.add(str(self.incoming))
                    rewritten.append(path)
                    dirs.add(os.path.dirname(path))
            if reader.torn:
                torn += reader.torn
                log.warning("ignored torn WAL tail (never acknowledged)",
                            extra={"segment": str(seg), "bytes": reader.torn})
        layout.make_durable(self.root, rewritten, dirs)
        for seg in segs:
            seg.unlink()
        fsync_dir(self.wal_dir)
        log.info("spool recovered", extra={
            "segments": len(segs), "records": records, "rewritten": len(rewritten),
            "torn_bytes": torn, "seconds": round(time.monotonic() - t0, 3)})
        self._metrics.inc("spool_recovered_total", len(rewritten),
                          help="Measurement files rewritten from the WAL at start-up")
        return len(rewritten)

    def _recovery_run(self) -> None:
        """Degraded mode: retry the replay with back-off until it succeeds or close()."""
        delay = RECOVERY_RETRY_MIN
        attempts = 0
        while not self._recovery_stop.wait(delay):
            attempts += 1
            segs = [s for s in self._recovery_segs or () if s.exists()]
            try:
                self.recover(segs)
            except Exception as e:  # OSError mostly; a bug must not end the retries either
                self.recovery_error = _describe(e)
                if delay >= RECOVERY_RETRY_MAX:
                    log.warning("spool recovery still failing",
                                extra={"error": self.recovery_error, "attempts": attempts})
                delay = min(delay * 2, RECOVERY_RETRY_MAX)
                continue
            self._recovery_segs = None
            self.recovery_error = ""
            log.info("spool recovered after a failed start: accepting measurements again",
                     extra={"attempts": attempts})
            self._notify()
            return

    # -- writer thread: WAL group commit, acknowledgements ------------------------------------

    def _run(self) -> None:
        try:
            self._write_loop()
        finally:
            self._files_q.put((_STOP, None))
            if self._files_thread is not None:
                self._files_thread.join()

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            timeout = max(0.01, self._interval - (time.monotonic() - self._last_rotate))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            batch = []
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if batch:
                self._commit_safely(batch)
            if time.monotonic() - self._last_rotate >= self._interval:
                self._rotate_segment()
        # Drain anything that raced with close(), then hand the last segment to a checkpoint.
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                rest.append(item)
        for i in range(0, len(rest), self._max_batch):
            self._commit_safely(rest[i:i + self._max_batch])
        self._rotate_segment()

    def _commit_safely(self, batch: list[tuple]) -> None:
        """_commit, but a bug must fail the batch, not kill the thread and hang every caller."""
        try:
            self._commit(batch)
        except Exception as e:
            log.exception("spool writer error")
            self._abandon_segment()
            self._resolve(batch, [SpoolError(f"spool writer error: {e}")] * len(batch))

    def _commit(self, batch: list[tuple]) -> None:
        """Append the batch to the WAL, fdatasync once, acknowledge, queue the .post files."""
        try:
            data = b"".join(wal.encode(uid, hour, body) for hour, uid, _, body, _, _ in batch)
            seg = self._current_segment()
            seg.append(data)
            if self._fsync:
                t0 = time.perf_counter()
                seg.sync()
                self._metrics.observe("spool_fsync_seconds", time.perf_counter() - t0,
                                      help="Latency of the WAL fdatasync (one per batch)")
        except OSError as e:
            log.error("WAL append failed", extra={"error": str(e), "batch": len(batch)})
            self._drop_failed_segment()
            self._metrics.inc("spool_errors_total", len(batch), help="Failed spool writes")
            self._resolve(batch, [SpoolError(f"WAL write failed: {e}")] * len(batch))
            return
        seg.acknowledged += len(batch)
        # Owed until the files thread has written them (the forwarder must not take a missing
        # file for an archived one), then durable: acknowledge now. The .post files are
        # created by the files thread; file creation latency on a busy ext4 varies 25-300 us
        # and must not hold answers back.
        self._owed.update([path for _, _, path, _, _, _ in batch])
        # Queued before the answers go out, so that a files_written() barrier requested after
        # an answer is queued behind this batch's files. Bounded: when file creation falls
        # behind, the writer (and so the answers) wait.
        self._files_q.put((_FILES, [(path, body) for _, _, path, body, _, _ in batch]))
        self._resolve(batch, [None] * len(batch))
        m = self._metrics
        m.inc("spool_writes_total", len(batch), help="Measurements made durable in the spool")
        m.inc("spool_batches_total", help="WAL group commits (average batch size = "
              "spool_batch_items_total / spool_batches_total)")
        m.inc("spool_batch_items_total", len(batch), help="Measurements in WAL group commits")
        m.set("spool_last_batch_size", len(batch), help="Size of the latest WAL group commit")

    @staticmethod
    def _resolve(batch: list[tuple], errors: list[BaseException | None]) -> None:
        """Wake the waiting coroutines: one call into each event loop per batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for item, err in zip(batch, errors, strict=True):
            by_loop.setdefault(item[5], []).append((item[4], err))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_results, results)
            except RuntimeError:
                pass  # loop closed: nobody is waiting any more

    def _current_segment(self) -> wal.Segment:
        if self._segment is None:
            path = self.wal_dir / f"{self._seq:016d}.wal"
            self._seq += 1
            self._segment = wal.Segment(path, sync=self._fsync)
        return self._segment

    def _drop_failed_segment(self) -> None:
        """After a failed append: the segment may end in a partial record, and appending after
        it would hide later records from recovery. One without acknowledged records is
        deleted (a full disk must not leave a segment per attempt); otherwise it is abandoned
        and its earlier records stay covered until a checkpoint."""
        seg = self._segment
        if seg is None:
            return  # creating it failed: wal.Segment removed the file
        if seg.acknowledged:
            self._abandon_segment()
            return
        self._segment = None
        try:
            seg.discard()
        except OSError as e:
            log.error("cannot delete an unused WAL segment", extra={"error": str(e)})
            self._files_q.put((_SEGMENT, seg.path))

    def _abandon_segment(self) -> None:
        """Close the current segment; its deletion waits for the files queued before now."""
        if self._segment is not None:
            self._segment.close()
            self._files_q.put((_SEGMENT, self._segment.path))
            self._segment = None

    def _rotate_segment(self) -> None:
        self._last_rotate = time.monotonic()
        self._abandon_segment()
        self._files_q.put((_CHECKPOINT, None))

    # -- files thread: .post files, checkpoints ----------------------------------------------

    def _files_run(self) -> None:
        """Create the .post files; a segment marker is handled only after every file queued
        before it exists, so a checkpoint never deletes a segment whose files are missing.

        Chunks go to a small pool of threads (spool.file_threads): creating a file costs
        the kernel 25-900 us on a busy VM and parallel creations overlap, but each thread also
        contends for the GIL with the event loop (eight threads halved request throughput)."""
        outstanding: deque[concurrent.futures.Future] = deque()

        def settle(keep: int = 0) -> None:
            while len(outstanding) > keep:
                self._pending.merge(outstanding.popleft().result())

        while True:
            kind, arg = self._files_q.get()
            try:
                if kind is _FILES:
                    for chunk in _chunks(arg):
                        outstanding.append(self._file_pool.submit(self._write_files, chunk))
                    settle(keep=_FILES_IN_FLIGHT)
                    continue
                settle()
                if kind is _SEGMENT:
                    self._pending.segments.append(arg)
                elif kind is _CHECKPOINT:
                    self._maybe_checkpoint()
                elif kind is _BARRIER:
                    arg.set()
                else:
                    self._final_checkpoint()
                    return
            except Exception:
                log.exception("spool files thread error")

    def _write_files(self, items: list[tuple[str, bytes]]) -> _Checkpoint:
        """Write `.post` files; returns what was written and what must be retried."""
        done = _Checkpoint()
        t0 = time.perf_counter()
        error: OSError | None = None
        for path, body in items:
            try:
                if layout.write_post(path, body):
                    done.dirs.add(str(self.incoming))
                self._owed.discard(path)
                done.files.append(path)
                done.dirs.add(os.path.dirname(path))
            except OSError as e:
                # Durable in the WAL: keep the segment (recovery or a later checkpoint writes
                # the file) by retrying at the next checkpoint. Still owed meanwhile.
                error = e
                done.retry.append((path, body))
        if error is not None:
            # One line per chunk: a full disk fails every file.
            log.error("spool file write failed (retried at the next checkpoint)",
                      extra={"files": len(done.retry), "error": str(error)})
            self._metrics.inc("spool_file_errors_total", len(done.retry),
                              help=".post writes that failed (retried; WAL kept)")
        self._metrics.observe("spool_files_seconds", time.perf_counter() - t0,
                              help="Time writing one chunk of .post files")
        return done

    def _maybe_checkpoint(self) -> None:
        if self._ckpt_future is not None and not self._ckpt_future.done():
            return  # the previous one is still syncing; its successor will cover this too
        self._collect_checkpoint_result()
        job = self._take_job()
        if job is None:
            return
        assert self._ckpt_pool is not None
        self._ckpt_future = self._ckpt_pool.submit(self._checkpoint, job)

    def _take_job(self) -> _Checkpoint | None:
        """What the next checkpoint must cover; None when idle or files still fail."""
        if self._pending.retry:
            retry, self._pending.retry = self._pending.retry, []
            done = self._write_files(retry)
            self._pending.merge(done)
            if done.files:
                self._notify()  # files that were owed exist now: deliver them
            if self._pending.retry:
                return None  # still failing: keep every segment until they are written
        if not self._pending.segments and self._ckpt_failed is None:
            return None
        job, self._pending = self._pending, _Checkpoint()
        if self._ckpt_failed is not None:
            job.merge(self._ckpt_failed)
            self._ckpt_failed = None
        return job

    def _collect_checkpoint_result(self) -> None:
        if self._ckpt_future is None:
            return
        fut, self._ckpt_future = self._ckpt_future, None
        err_job = fut.result()
        if err_job is not None:
            if self._ckpt_failed is None:
                self._ckpt_failed = err_job
            else:
                self._ckpt_failed.merge(err_job)

    def _final_checkpoint(self) -> None:
        if self._ckpt_future is not None:
            concurrent.futures.wait([self._ckpt_future])
        self._collect_checkpoint_result()
        job = self._take_job()
        if job is not None and job.segments and self._checkpoint(job) is not None:
            log.error("final checkpoint failed; the WAL is kept and replayed at next start")

    def _checkpoint(self, job: _Checkpoint) -> _Checkpoint | None:
        """Make `job.files` durable, then delete `job.segments`. Returns the job on failure."""
        t0 = time.perf_counter()
        try:
            layout.make_durable(self.root, job.files, job.dirs)
            for seg in job.segments:
                try:
                    seg.unlink()
                except FileNotFoundError:
                    pass
        except OSError as e:
            log.error("spool checkpoint failed", extra={"error": str(e)})
            self._metrics.inc("spool_checkpoint_errors_total", help="Failed spool checkpoints")
            return job
        self._metrics.observe("spool_checkpoint_seconds", time.perf_counter() - t0,
                              help="Duration of spool checkpoints (file sync + WAL deletion)")
        return None


def _chunks(items: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    """Split a batch into chunks, one directory per chunk where possible (ext4 serialises
    creations within a directory, not across directories)."""
    by_dir: dict[str, list[tuple[str, bytes]]] = {}
    for item in items:
        by_dir.setdefault(os.path.dirname(item[0]), []).append(item)
    return [group[i:i + _CHUNK] for group in by_dir.values()
            for i in range(0, len(group), _CHUNK)]


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} ({e.filename})" if e.filename else e.strerror
    return str(e) or type(e).__name__


def _set_results(results: list[tuple[asyncio.Future, BaseException | None]]) -> None:
    for fut, err in results:
        if fut.done():
            continue  # the waiting request was cancelled (client went away)
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)
