"""The fastpath daemon: feeder + durable queue + worker pool + batching sink, one process.

    API --POST /<uid>--> Feeder --put (fdatasync)--> IntakeQueue --get--> Pool (N processes)
        --rows--> Sink --batched INSERT--> ClickHouse --then--> IntakeQueue.commit

Everything but scoring runs on one uvloop event loop in the main process; scoring runs in
spawned worker processes. A measurement is owned by the intake queue from the feeder's 200
until its rows are inserted (or it is quarantined), so a crash anywhere only replays work;
and the batch the sink was inserting is replayed first, with the same entries and
deduplication token (workers/intake/batches.py), so a replay never stores rows twice.

SIGTERM / SIGINT: stop accepting, let in-flight scoring and the last batch finish for a few
seconds, leave the rest in the durable queue, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from oonibackend import storage
from oonibackend.config import Config
from oonibackend.exitcodes import EXIT_CANNOT_LISTEN, EXIT_LOCKED
from oonibackend.metrics import Metrics
from workers.intake.batches import BatchJournal
from workers.intake.feeder import Feeder
from workers.intake.pool import FINGERPRINTS_REF, PROCESS_REF, Pool
from workers.intake.quarantine import Quarantine
from workers.intake.queue import Entry, IntakeQueue, QueueLocked
from workers.intake.refresh import FingerprintRefresher
from workers.intake.sink import Sink
from workers.intake.worker import resolve

log = logging.getLogger(__name__)

# Shutdown budget (seconds), well inside the supervisor's and systemd's 30 s.
FEEDER_GRACE = 3.0
DRAIN_GRACE = 8.0
FLUSH_GRACE = 8.0
# First fingerprint load: how long scoring waits for it at start-up.
FIRST_LOAD_WAIT = 10.0
QUARANTINE_RETRY = 5.0
# Distinct test_name label values in metrics (test names come from probes: bound them).
MAX_TEST_NAMES = 100
# Measurements in flight per scoring worker, sent in batches of half as many (pool.py).
PREFETCH = 32


def fastpath_dir(cfg: Config) -> Path:
    return cfg.path(cfg.fastpath.dir)


class Service:
    """The parts and the wiring between them; `run` until `stop` is set."""

    def __init__(self, cfg: Config, *, process_ref: str = PROCESS_REF,
                 fingerprints_ref: str | None = FINGERPRINTS_REF, sync: bool = True) -> None:
        fp = cfg.fastpath
        self.cfg = cfg
        self.metrics = Metrics(prefix="fastpath")
        root = fastpath_dir(cfg)
        self.queue = IntakeQueue(root / "queue", fp.max_queue, sync=sync)
        self.quarantine = Quarantine(root / "quarantine", sync=sync)
        self.db = storage.connect(cfg)
        self.journal = BatchJournal(root / "queue" / "batches", sync=sync)
        self.sink: Sink[Entry] = Sink(
            self.db, batch_size=fp.batch_size, batch_interval=fp.batch_interval,
            retry_max=fp.insert_retry_max, metrics=self.metrics,
            on_committed=self.queue.commit, on_rejected=self._rejected, journal=self.journal)
        self.pool: Pool[Entry] = Pool(
            fp.workers, on_done=self._done, on_error=self._failed, metrics=self.metrics,
            process_ref=process_ref, fingerprints_ref=fingerprints_ref, prefetch=PREFETCH,
            log_level=cfg.logging.level, log_format=cfg.logging.format)
        validate = None
        if fingerprints_ref:
            factory = resolve(fingerprints_ref)
            validate = factory.from_rows
        self.refresher = FingerprintRefresher(
            self.db, fp.fingerprint_refresh, self.pool.set_fingerprints, self.metrics,
            validate=validate, poll=fp.fingerprint_poll)
        self.feeder = Feeder(self.queue, self.metrics, cfg.server.max_body_size,
                             cfg.internal_key())
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._test_names: set[str] = set()
        q = self.queue
        self.metrics.set("queue_depth", lambda: q.depth,
                         help="Measurements accepted and not yet committed to the database")
        self.metrics.set("queue_waiting", lambda: q.pending,
                         help="Queued measurements waiting for a worker")
        self.metrics.set("queue_limit", fp.max_queue, help="Queue depth answered with 503")
        self.metrics.set("queue_segments", lambda: q.segments, help="Queue segment files")

    # -- results -------------------------------------------------------------------------------

    def _label(self, rows: dict[str, list[dict]]) -> str:
        fast = rows.get("fastpath") or []
        name = fast[0].get("test_name") if fast else None
        if not isinstance(name, str) or not name:
            return "unknown"
        if name not in self._test_names:
            if len(self._test_names) >= MAX_TEST_NAMES:
                return "other"
            self._test_names.add(name)
        return name

    def _done(self, entry: Entry, rows: dict[str, list[dict]], seconds: float) -> None:
        test_name = self._label(rows)
        self.metrics.observe("score_duration_seconds", seconds,
                             help="Time a worker spent on one measurement")
        if not any(rows.values()):
            self.metrics.inc("discarded_total", help="Measurements without rows (no report "
                             "id, ZZ, AS0)", test_name=test_name)
        else:
            self.metrics.inc("scored_total", help="Measurements scored", test_name=test_name)
        self.sink.add(entry, rows)

    def _failed(self, entry: Entry, body: bytes, kind: str, message: str) -> None:
        self.metrics.inc("failures_total", help="Measurements that could not be scored",
                         kind=kind)
        log.warning("measurement quarantined", extra={"uid": entry.uid, "kind": kind,
                                                      "reason": (message.splitlines() or [""])[0][:500]})
        self.sink.discard(entry)
        self._spawn(self._quarantine(entry, body, f"{kind}: {message}"))

    async def _rejected(self, entry: Entry, reason: str) -> None:
        self.metrics.inc("failures_total", help="Measurements that could not be scored",
                         kind="rejected")
        body = await self.queue.body_of(entry)
        await self._quarantine(entry, body, f"rejected: {reason}")

    async def _quarantine(self, entry: Entry, body: bytes, reason: str) -> None:
        while True:
            try:
                await self.quarantine.put(entry.uid, body, reason)
                break
            except (OSError, ValueError) as e:
                log.error("cannot quarantine", extra={"uid": entry.uid, "error": str(e)})
                await asyncio.sleep(QUARANTINE_RETRY)
        self.metrics.inc("quarantined_total", help="Measurements moved to quarantine")
        self.queue.commit([entry])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Queue -> workers, as fast as workers take items and the sink has room."""
        while True:
            await self.sink.wait_for_room()
            await self.pool.wait_for_slot()
            entry = await self.queue.get()
            body, entry.body = entry.body, None
            assert body is not None
            self.pool.send(entry, body)

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        fp = self.cfg.fastpath
        try:
            recovered = await self.queue.open()
        except QueueLocked as e:
            log.error(str(e))
            await self.db.close()
            return EXIT_LOCKED
        runner: web.AppRunner | None = None
        background: list[asyncio.Task[Any]] = []
        try:
            # Batches the previous run was inserting: their entries are scored first.
            try:
                manifests = await asyncio.to_thread(self.journal.load)
            except OSError as e:  # duplicates until merged are possible, losses are not
                log.error("cannot read the batch journal; its batches are inserted as new "
                          "ones", extra={"error": str(e)})
                manifests = []
            self.queue.prioritize(self.sink.recover(manifests, self.queue.entry))
            await self.pool.start()
            self.sink.start()
            try:
                loaded = await asyncio.wait_for(self.refresher.load(), FIRST_LOAD_WAIT)
            except TimeoutError:
                loaded = False
            background.append(asyncio.create_task(self._refresh_later(loaded)))
            background.append(asyncio.create_task(self._dispatch(), name="fastpath-dispatch"))
            runner = web.AppRunner(self.feeder.app(), access_log=None,
                                   shutdown_timeout=FEEDER_GRACE)
            await runner.setup()
            site = web.TCPSite(runner, fp.host, fp.port, reuse_address=True)
            try:
                await site.start()
            except OSError as e:
                log.error("fastpath cannot listen on %s:%s: %s", fp.host, fp.port,
                          e.strerror or e)
                return EXIT_CANNOT_LISTEN
            log.info("fastpath listening", extra={"host": fp.host, "port": fp.port,
                                                  "workers": self.pool.size,
                                                  "recovered": recovered})
            await self.stop.wait()
            log.info("fastpath stopping", extra={"queued": self.queue.depth})
        except Exception:
            log.exception("fastpath failed")
            return 1
        finally:
            await self._shutdown(runner, background)
        return 0

    async def _refresh_later(self, loaded: bool) -> None:
        fp = self.cfg.fastpath
        await self.refresher.run(
            first_delay=fp.fingerprint_refresh if loaded else self.refresher.retry)

    async def _shutdown(self, runner: web.AppRunner | None,
                        background: list[asyncio.Task[Any]]) -> None:
        t0 = time.monotonic()
        if runner is not None:
            await runner.cleanup()  # no new requests; in-flight puts complete
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        drained = await self.pool.drain(DRAIN_GRACE)
        flushed = await self.sink.close(FLUSH_GRACE)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        await self.pool.close()
        await self.queue.close()
        await self.db.close()
        log.info("fastpath stopped", extra={"drained": drained, "flushed": flushed,
                                            "left_in_queue": self.queue.depth,
                                            "seconds": round(time.monotonic() - t0, 2)})


async def serve(cfg: Config, **kwargs: Any) -> int:
    """Run the fastpath until SIGTERM / SIGINT."""
    service = Service(cfg, **kwargs)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    try:
        return await service.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(cfg: Config) -> int:
    import uvloop

    return uvloop.run(serve(cfg))
