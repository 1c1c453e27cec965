"""A circuit breaker on the database client: reads fail fast while the database is known down.

Without it, a read sent to a database that stopped answering (a stopped owner process, a hung
server) waits for `database.read_timeout` (60 s) before its 503. With it:

* **closed** (normal): reads go to the database, each raced against the breaker opening;
* **open** (known down): reads raise `DatabaseUnavailable` at once, nothing is sent;
* **probing**: open, with a probe in flight; its outcome decides.

A *probe* is a cheap query limited to `database.probe_timeout` seconds (`Breaker.probe`). In
the API process the health monitor's database check is that probe (`Database.probe`, every
second), so /health and the breaker are one mechanism: a probe that times out or cannot reach
the database opens the breaker, any answer closes it. A read or write that fails with
`DatabaseUnavailable` opens it too. When it opens, reads in flight are failed at once (their
tasks are cancelled and the cancellation turned into `DatabaseUnavailable`, as
`asyncio.timeout` does), so no read waits out the read timeout behind a failed probe.

Writes (`insert`, `execute`, `insert_raw`) are never refused or cut short: they keep their own
semantics (the fastpath's sink retries forever); their outcome only counts as evidence.

Evidence of life wins over a failed probe: if any operation got an answer after a probe was
sent, the probe's timeout only means the database is busy (the embedded owner runs four
queries at a time, so long aggregations can delay a probe), and the breaker stays closed.

Nobody probing (no health monitor running): a refused read starts a probe itself when none was
sent within `self_probe_after` seconds, so the breaker closes by itself once the database
answers again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from oonibackend.storage import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Params,
    Row,
    Settings,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED, OPEN, PROBING = "closed", "open", "probing"
PROBE_SQL = "SELECT 1 AS ok"


class CircuitOpen(DatabaseUnavailable):
    """A read refused, or cut short, because the database is known down. The breaker logs
    the outage when it opens and when it closes; callers need not log each of these."""


class Breaker:
    """The state machine, independent of any driver (`GuardedDatabase` applies it).

    `clock` only dates events (for logs and `open_for`); the order of answers and probes is
    kept by a sequence number, so a fake clock in tests cannot blur it.
    """

    def __init__(self, probe_timeout: float = 1.0, *,
                 ping: Callable[[], Awaitable[Any]] | None = None,
                 self_probe_after: float = 3.0, name: str = "database",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe_timeout = probe_timeout
        self.ping = ping
        self.self_probe_after = self_probe_after
        self.name = name
        self.clock = clock
        self.is_open = False
        self.reason = ""
        self.opened_at = 0.0
        self.fast_failures = 0  # reads refused while open, and in-flight reads cut short
        self.trips = 0
        self._seq = itertools.count(1)
        self._alive_seq = 0  # sequence number of the latest answer from the database
        self._probes = 0  # probes in flight
        self._last_probe = float("-inf")
        self._inflight: set[_Read] = set()
        self._background: set[asyncio.Task[Any]] = set()

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if not self.is_open:
            return CLOSED
        return PROBING if self._probes else OPEN

    def open_for(self) -> float:
        """Seconds since the breaker opened (0 while closed)."""
        return self.clock() - self.opened_at if self.is_open else 0.0

    def mark(self) -> int:
        """A point in the order of events: an answer after it is evidence of life."""
        return next(self._seq)

    def alive(self) -> None:
        """The database answered (a result or an error of its own): close."""
        self._alive_seq = next(self._seq)
        if self.is_open:
            down = self.open_for()
            self.is_open = False
            self.reason = ""
            log.info("%s answers again: reads go through (they were refused for %.1f s)",
                     self.name, down, extra={"down_seconds": round(down, 3),
                                             "refused": self.fast_failures})

    def failed(self, since: int, reason: str) -> bool:
        """The database did not answer something sent at `since` (`mark()`): open, unless it
        answered anything after that. True if the breaker is open afterwards."""
        if self._alive_seq > since:
            return self.is_open  # busy, not down: something sent later was answered
        self.trip(reason)
        return True

    def observe(self, since: int, error: BaseException | None, what: str) -> None:
        """The outcome of `what` sent at `since`: a result or an error of the database's own
        (syntax, limits) is an answer and closes; `DatabaseUnavailable` opens (`failed`).
        Anything else says nothing about the database."""
        if isinstance(error, DatabaseUnavailable):
            self.failed(since, f"{what} failed: {str(error)[:160]}")
        elif error is None or isinstance(error, DatabaseError):
            self.alive()

    def trip(self, reason: str) -> None:
        """Open now and fail the reads in flight."""
        if not self.is_open:
            self.is_open = True
            self.reason = reason
            self.opened_at = self.clock()
            self.trips += 1
            log.warning("%s does not answer: reads are refused at once until it does (%s)",
                        self.name, reason, extra={"in_flight": len(self._inflight)})
        for read in list(self._inflight):
            read.fire(reason)

    # -- reads -------------------------------------------------------------------------------

    def read(self) -> _Read:
        """`async with breaker.read():` around one read: refused at once while open, cut
        short (`DatabaseUnavailable`) if the breaker opens while it waits."""
        return _Read(self)

    def refuse(self) -> DatabaseUnavailable:
        self.fast_failures += 1
        self._maybe_self_probe()
        return CircuitOpen(
            f"{self.name} known down for {self.open_for():.1f} s ({self.reason}); "
            "read refused without waiting")

    def _maybe_self_probe(self) -> None:
        if (self.ping is None or self._probes
                or self.clock() - self._last_probe < self.self_probe_after):
            return
        ping = self.ping

        async def run() -> None:
            try:
                await self.probe(ping)
            except (DatabaseError, TimeoutError):
                pass  # recorded by probe()

        task = asyncio.get_running_loop().create_task(run(), name=f"{self.name}-probe")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- probes ------------------------------------------------------------------------------

    async def probe(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run `fn` (a cheap query) within `timeout` (default `probe_timeout`) seconds, even
        while open. No answer in time, or `DatabaseUnavailable`: open (unless something else
        was answered meanwhile) and re-raise; any answer, even an error: close."""
        timeout = self.probe_timeout if timeout is None else timeout
        since = self.mark()
        self._probes += 1
        self._last_probe = self.clock()
        try:
            result = await asyncio.wait_for(fn(), timeout)
        except TimeoutError:
            self.failed(since, f"probe unanswered after {timeout:g} s")
            raise
        except DatabaseError as e:
            self.observe(since, e, "probe")
            raise
        finally:
            self._probes -= 1
        self.alive()
        return result

    async def close(self) -> None:
        tasks, self._background = list(self._background), set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Read:
    """One guarded read; fails the task's await with DatabaseUnavailable when fired."""

    __slots__ = ("breaker", "since", "task", "cancelling", "fired")

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.fired: str | None = None

    async def __aenter__(self) -> _Read:
        b = self.breaker
        if b.is_open:
            raise b.refuse()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.cancelling = task.cancelling()
        self.since = b.mark()
        b._inflight.add(self)
        return self

    def fire(self, reason: str) -> None:
        if self.fired is None:
            self.fired = reason
            self.task.cancel(msg=f"database breaker opened: {reason}")

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: Any) -> None:
        b = self.breaker
        b._inflight.discard(self)
        if self.fired is not None:
            # Ours unless someone else cancelled the task too (then their cancel wins).
            if self.task.uncancel() <= self.cancelling and et is asyncio.CancelledError:
                b.fast_failures += 1
                raise CircuitOpen(
                    f"{b.name} stopped answering ({self.fired}); read given up") from None
            return
        b.observe(self.since, e, "read")


class GuardedDatabase(Database):
    """A driver behind a breaker: reads guarded, writes only observed. Other attributes
    (`last_stats`, `where`, ...) are the driver's."""

    def __init__(self, inner: Database, breaker: Breaker | None = None,
                 probe_timeout: float = 1.0) -> None:
        self.inner = inner
        self.breaker = breaker or Breaker(probe_timeout, ping=self._ping)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def _ping(self) -> Any:
        return await self.inner.query(PROBE_SQL)

    async def _write(self, op: Awaitable[T]) -> T:
        b = self.breaker
        since = b.mark()
        try:
            out = await op
        except DatabaseError as e:
            b.observe(since, e, "write")
            raise
        b.alive()
        return out

    # -- reads -------------------------------------------------------------------------------

    async def query(self, sql: str, params: Params = None, settings: Settings = None
                    ) -> list[Row]:
        async with self.breaker.read():
            return await self.inner.query(sql, params, settings)

    async def query_with_stats(self, sql: str, params: Params = None, settings: Settings = None
                               ) -> tuple[list[Row], dict[str, Any]]:
        async with self.breaker.read():
            return await self.inner.query_with_stats(sql, params, settings)

    async def stream(self, sql: str, params: Params = None,
                     fmt: str = "TabSeparatedWithNamesAndTypes", settings: Settings = None
                     ) -> AsyncIterator[bytes]:
        """Refused at once while open; once started, it runs at the driver's own pace (its
        consumers are exports and backups, which do not race the breaker)."""
        if self.breaker.is_open:
            raise self.breaker.refuse()
        async for piece in self.inner.stream(sql, params, fmt, settings):
            yield piece

    async def probe(self, sql: str = PROBE_SQL, timeout: float | None = None) -> list[Row]:
        """`sql` sent even while open, within `timeout` (default `probe_timeout`); its outcome
        opens or closes the breaker (see `Breaker.probe`)."""
        return await self.breaker.probe(lambda: self.inner.query(sql), timeout)

    # -- writes ------------------------------------------------------------------------------

    async def execute(self, sql: str, params: Params = None, settings: Settings = None) -> None:
        await self._write(self.inner.execute(sql, params, settings))

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, settings: Settings = None) -> None:
        await self._write(self.inner.insert(table, rows, columns, settings))

    async def insert_raw(self, table: str, fmt: str, chunks: Any,
                         columns: Sequence[str] | None = None, settings: Settings = None
                         ) -> None:
        await self._write(self.inner.insert_raw(table, fmt, chunks, columns, settings))

    async def close(self) -> None:
        await self.breaker.close()
        await self.inner.close()
