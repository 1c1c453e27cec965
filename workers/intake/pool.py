"""`Pool`: scoring in separate processes, driven from the asyncio loop without threads.

Why processes: scoring is CPU-bound pure Python; one process per core scales it while the
main process only does I/O. Why spawn: the main process has an event loop, sockets and
threads (the queue writer); forking that is unsafe, and spawned workers start clean.

Each worker has its own task queue (mp.Queue: its feeder thread keeps `put` from blocking
the loop on big bodies) and its own result pipe, read with `loop.add_reader`; the process
sentinel is watched the same way. At most `prefetch` items are in flight per worker, so the
pool always knows which items a worker holds. Items go out in batches, one message per
worker and loop iteration, and a worker is refilled once it is down to half its prefetch:
one message (a pickle, a thread hand-off, a pipe write) per item cost the main process about
40 µs per measurement at 1,000/s (py-spy, 2026-12-06). Answers stay one per item, so the
item a dying worker was scoring is always known. When a worker dies (segfault, OOM kill,
SIGKILL) or hangs past `item_timeout`, it is replaced; the item it was scoring is retried
once and then reported as failed (`on_error(kind="died")`), which keeps a poison pill from
killing workers forever. Its other items are simply sent again.

Fingerprint rows are broadcast as a message whenever the main process (re)loads them, and
sent first to every new worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Generic, Protocol, TypeVar

from oonibackend.metrics import Metrics
from workers.intake import worker

log = logging.getLogger(__name__)

PROCESS_REF = "workers.process:process"
FINGERPRINTS_REF = "workers.fingerprints:Fingerprints"


class Item(Protocol):
    uid: str
    attempts: int


T = TypeVar("T", bound=Item)


@dataclass(eq=False, slots=True)
class _Task(Generic[T]):
    item: T
    body: bytes


@dataclass(eq=False)
class _Worker(Generic[T]):
    index: int
    proc: Any  # multiprocessing.context.SpawnProcess
    tasks: Any  # multiprocessing.Queue
    conn: Connection
    started: float
    inflight: deque[_Task[T]] = field(default_factory=deque)
    head_since: float = 0.0  # when the item being scored reached the head
    ready: bool = False
    dead: bool = False
    eof: bool = False  # its pipe is closed; the sentinel tells when it has exited
    timed_out: bool = False


OnDone = Callable[[T, dict[str, list[dict]], float], None]
OnError = Callable[[T, bytes, str, str], None]


class Pool(Generic[T]):
    def __init__(self, size: int, *, on_done: OnDone, on_error: OnError, metrics: Metrics,
                 process_ref: str = PROCESS_REF, fingerprints_ref: str | None = FINGERPRINTS_REF,
                 prefetch: int = 2, item_timeout: float = 300.0, max_attempts: int = 2,
                 log_level: str = "INFO", log_format: str = "json") -> None:
        self.size = size if size > 0 else (os.cpu_count() or 1)
        self._on_done = on_done
        self._on_error = on_error
        self._metrics = metrics
        self._process_ref = process_ref
        self._fingerprints_ref = fingerprints_ref
        self._prefetch = max(1, prefetch)
        self._item_timeout = item_timeout
        self._max_attempts = max(1, max_attempts)
        self._log = (log_level, log_format)
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker[T] | None] = [None] * self.size
        self._restart_delay = [0.0] * self.size
        self._backlog: deque[_Task[T]] = deque()
        self._fingerprints: tuple[list[dict], list[dict]] | None = None
        self._slot: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._pump_soon = False
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        metrics.set("workers_alive", lambda: sum(1 for w in self._workers if w and not w.dead),
                    help="Scoring worker processes running")
        metrics.set("inflight", lambda: self.inflight, help="Measurements sent to workers "
                    "and not answered yet")

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slot = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        for i in range(self.size):
            self._spawn(i)
        self._keep(asyncio.create_task(self._watchdog(), name="pool-watchdog"))

    async def drain(self, timeout: float) -> bool:
        """Wait (at most `timeout`) until every item sent to a worker has been answered."""
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (politely, then SIGKILL). Unanswered items are dropped here:
        they are still uncommitted in the durable queue."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = [w for w in self._workers if w is not None and not w.dead]
        for w in live:
            try:
                w.tasks.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        while any(w.proc.is_alive() for w in live) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for w in live:
            if w.proc.is_alive():
                w.proc.kill()
            self._discard(w)
        for w in live:
            await asyncio.to_thread(w.proc.join, 5)
        self._backlog.clear()

    # -- sending -------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._backlog) + sum(len(w.inflight) for w in self._workers
                                        if w is not None and not w.dead)

    def _free(self) -> _Worker[T] | None:
        best = None
        for w in self._workers:
            if w is None or w.dead or len(w.inflight) >= self._prefetch:
                continue
            if best is None or len(w.inflight) < len(best.inflight):
                best = w
        return best

    def room(self) -> int:
        """Items the pool takes now: the free places of workers down to half their prefetch
        (refilled in one message), less what waits to be sent."""
        low = self._prefetch // 2
        free = sum(self._prefetch - len(w.inflight) for w in self._workers
                   if w is not None and not w.dead and len(w.inflight) <= low)
        return free - len(self._backlog)

    async def wait_for_slot(self) -> None:
        """Wait until a worker can take one more item (beyond what is waiting to be sent)."""
        assert self._slot is not None
        while self.room() <= 0:
            self._slot.clear()
            await self._slot.wait()

    def send(self, item: T, body: bytes) -> None:
        """Score `item`; the answer comes through on_done / on_error. Sent with the other
        items given in the same loop iteration."""
        self._backlog.append(_Task(item, body))
        self._schedule_pump()
        self._signal()

    def _schedule_pump(self) -> None:
        if not self._pump_soon and self._loop is not None:
            self._pump_soon = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_soon = False
        out: dict[int, tuple[_Worker[T], list[_Task[T]]]] = {}
        while self._backlog:
            w = self._free()
            if w is None:
                break
            task = self._backlog.popleft()
            if not w.inflight:
                w.head_since = time.monotonic()
            w.inflight.append(task)
            out.setdefault(w.index, (w, []))[1].append(task)
        for w, tasks in out.values():
            try:
                w.tasks.put(("tasks", [(t.item.uid, t.body) for t in tasks]))
            except (OSError, ValueError):  # its queue is closed: the worker is going away
                for t in tasks:
                    w.inflight.remove(t)
                self._backlog.extendleft(reversed(tasks))
        self._signal()

    def _signal(self) -> None:
        if self._slot is not None and self.room() > 0:
            self._slot.set()
        if self._idle is not None:
            if self.inflight == 0:
                self._idle.set()
            else:
                self._idle.clear()

    def set_fingerprints(self, dns: list[dict], http: list[dict]) -> None:
        """New fingerprint rows for every worker (and every worker started later)."""
        self._fingerprints = (dns, http)
        for w in self._workers:
            if w is not None and not w.dead:
                try:
                    w.tasks.put(("fingerprints", dns, http))
                except (OSError, ValueError):
                    pass

    # -- workers -------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        assert self._loop is not None
        if self._closing:
            return
        tasks = self._ctx.Queue()
        reader, writer = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=worker.main, name=f"fastpath-worker-{index}", daemon=True,
            args=(index, self._process_ref, self._fingerprints_ref, tasks, writer, *self._log))
        try:
            proc.start()
        except OSError as e:
            log.error("cannot start a worker", extra={"worker": index, "error": str(e)})
            writer.close()
            reader.close()
            tasks.close()
            self._schedule_restart(index, None)
            return
        writer.close()  # the child has its copy: EOF on our end once it dies
        w: _Worker[T] = _Worker(index, proc, tasks, reader, time.monotonic())
        self._workers[index] = w
        if self._fingerprints is not None:
            tasks.put(("fingerprints", *self._fingerprints))
        self._loop.add_reader(reader.fileno(), self._readable, w)
        self._loop.add_reader(proc.sentinel, self._exited, w)
        log.info("worker started", extra={"worker": index, "worker_pid": proc.pid})
        self._pump()

    def _readable(self, w: _Worker[T]) -> None:
        """One message per call: the loop calls again while the pipe stays readable (level
        triggered), which spares a poll() per message."""
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            if not w.eof:
                w.eof = True
                assert self._loop is not None
                self._loop.remove_reader(w.conn.fileno())
            return
        except Exception:  # an answer that does not unpickle: treat the worker as broken
            log.exception("unreadable answer, killing the worker", extra={"worker": w.index})
            w.proc.kill()
            return
        self._handle(w, msg)

    def _drain_pipe(self, w: _Worker[T]) -> bool:
        """Handle every complete message waiting; False at EOF (the worker is gone)."""
        try:
            while not w.dead and w.conn.poll():
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, w: _Worker[T], msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            w.ready = True
            self._restart_delay[w.index] = 0.0
            return
        uid = msg[1]
        task = self._pop(w, uid)
        if task is None:
            log.error("answer for an unknown item", extra={"uid": uid, "worker": w.index})
            return
        try:
            if kind == "ok":
                self._on_done(task.item, msg[2], msg[3])
            else:
                self._on_error(task.item, task.body, msg[2], msg[3])
        except Exception:
            log.exception("result handler failed", extra={"uid": uid})
        self._schedule_pump()
        self._signal()

    def _pop(self, w: _Worker[T], uid: str) -> _Task[T] | None:
        for i, task in enumerate(w.inflight):
            if task.item.uid == uid:
                del w.inflight[i]
                if i == 0:
                    w.head_since = time.monotonic()
                return task
        return None

    def _exited(self, w: _Worker[T]) -> None:
        if w.dead:
            return
        if not w.eof:
            self._drain_pipe(w)  # answers sent just before dying still count
        w.proc.join(0)  # the sentinel fired: this reaps it without waiting
        code = w.proc.exitcode
        self._discard(w)
        if self._closing:
            return
        self._metrics.inc("worker_deaths_total", help="Scoring workers that died and were "
                          "replaced")
        log.error("worker died", extra={"worker": w.index, "worker_pid": w.proc.pid,
                                        "exitcode": code, "inflight": len(w.inflight)})
        tasks = list(w.inflight)
        w.inflight.clear()
        if tasks and not w.ready:
            # Died while starting (e.g. process() does not import): not the items' fault.
            self._backlog.extendleft(reversed(tasks))
        elif tasks:
            head, rest = tasks[0], tasks[1:]
            head.item.attempts += 1
            self._backlog.extendleft(reversed(rest))
            if head.item.attempts >= self._max_attempts:
                what = "timed out" if w.timed_out else f"died (exit code {code})"
                reason = (f"worker lost {head.item.attempts} times while scoring it; "
                          f"last: {what}")
                try:
                    self._on_error(head.item, head.body, "died", reason)
                except Exception:
                    log.exception("result handler failed", extra={"uid": head.item.uid})
            else:
                self._backlog.appendleft(head)
        self._schedule_restart(w.index, w)
        self._signal()

    def _discard(self, w: _Worker[T]) -> None:
        """Forget a dead (or stopping) worker's channels."""
        w.dead = True
        assert self._loop is not None
        if not w.conn.closed and not w.eof:
            self._loop.remove_reader(w.conn.fileno())
        self._loop.remove_reader(w.proc.sentinel)
        w.conn.close()
        w.tasks.cancel_join_thread()  # its pipe may be broken: never wait on its feeder
        w.tasks.close()

    def _schedule_restart(self, index: int, w: _Worker[T] | None) -> None:
        """Restart at once after a crash mid-work; back off when workers die at start-up
        (e.g. process() does not import)."""
        assert self._loop is not None
        if w is not None and w.ready:
            delay = 0.0
        else:
            delay = min(max(self._restart_delay[index] * 2, 0.5), 30.0)
        self._restart_delay[index] = delay
        if delay:
            log.warning("worker restart delayed", extra={"worker": index, "in_seconds": delay})
        self._loop.call_later(delay, self._spawn, index)

    async def _watchdog(self) -> None:
        """Kill workers stuck on one item for longer than `item_timeout`."""
        while True:
            await asyncio.sleep(min(1.0, self._item_timeout / 4))
            now = time.monotonic()
            for w in self._workers:
                if w is None or w.dead or not w.inflight:
                    continue
                if now - w.head_since > self._item_timeout:
                    log.error("worker stuck, killing it",
                              extra={"worker": w.index, "uid": w.inflight[0].item.uid})
                    w.timed_out = True
                    w.head_since = now  # kill once; the sentinel does the rest
                    try:
                        os.kill(w.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
