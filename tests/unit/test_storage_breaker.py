"""The database client's circuit breaker (storage.breaker): its state machine, with a fake
database and a fake clock, and the health monitor's database check as its probe."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from oonibackend import config
from oonibackend.health import Monitor
from oonibackend.storage import Database, DatabaseError, DatabaseUnavailable, connect
from oonibackend.storage.breaker import (
    CLOSED,
    OPEN,
    PROBING,
    Breaker,
    CircuitOpen,
    GuardedDatabase,
)

PROBE = 0.05  # probe timeout of these tests (seconds)


class FakeDB(Database):
    """`mode`: ok (answers), hang (never answers until released), down (unreachable),
    error (the database's own error)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def _answer(self, what: str) -> list[dict[str, Any]]:
        self.calls.append(what)
        mode = self.mode
        if mode == "hang":
            await self.release.wait()
        if mode == "down":
            raise DatabaseUnavailable("connection refused")
        if mode == "error":
            raise DatabaseError("Code: 62. Syntax error")
        return [{"ok": 1, "v": 9}]

    async def query(self, sql, params=None, settings=None):
        return await self._answer(sql)

    async def execute(self, sql, params=None, settings=None):
        await self._answer(sql)

    async def insert(self, table, rows, columns=None, settings=None):
        await self._answer(f"INSERT {table}")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake() -> FakeDB:
    return FakeDB()


@pytest.fixture
def db(fake: FakeDB, clock: Clock) -> GuardedDatabase:
    g = GuardedDatabase(fake)
    g.breaker = Breaker(PROBE, ping=g._ping, self_probe_after=3.0, clock=clock)
    return g


async def trip_by_probe(db: GuardedDatabase, fake: FakeDB) -> None:
    fake.mode = "hang"
    with pytest.raises(TimeoutError):
        await db.probe()
    assert db.breaker.state == OPEN


async def test_closed_reads_go_through(db, fake):
    assert await db.query("SELECT 1") == [{"ok": 1, "v": 9}]
    assert await db.query_one("SELECT 2") == {"ok": 1, "v": 9}
    assert (await db.query_with_stats("SELECT 3"))[0]
    assert db.breaker.state == CLOSED and fake.calls == ["SELECT 1", "SELECT 2", "SELECT 3"]


async def test_an_unanswered_probe_opens_and_reads_fail_at_once(db, fake):
    await trip_by_probe(db, fake)
    calls = len(fake.calls)
    fake.mode = "ok"  # it would answer now, but nobody asked: the breaker decides
    t0 = time.perf_counter()
    for _ in range(100):
        with pytest.raises(CircuitOpen, match="known down"):  # a DatabaseUnavailable: 503
            await db.query("SELECT 1")
    assert time.perf_counter() - t0 < 0.1
    assert len(fake.calls) == calls  # nothing was sent
    assert db.breaker.fast_failures == 100
    assert not await db.ping()


async def test_an_answered_probe_closes(db, fake, clock):
    await trip_by_probe(db, fake)
    clock.t += 7
    assert db.breaker.open_for() == 7
    fake.mode = "ok"
    assert await db.probe("SELECT max(version) AS v FROM schema_migrations") == [
        {"ok": 1, "v": 9}]
    assert db.breaker.state == CLOSED and db.breaker.open_for() == 0
    assert await db.query("SELECT 1")


async def test_a_probe_answered_with_an_error_closes(db, fake):
    """An error of the database's own (unknown table, wrong key) is an answer: it is up."""
    await trip_by_probe(db, fake)
    fake.mode = "error"
    with pytest.raises(DatabaseError):
        await db.probe()
    assert db.breaker.state == CLOSED


async def test_a_probe_that_cannot_connect_opens(db, fake):
    fake.mode = "down"
    with pytest.raises(DatabaseUnavailable):
        await db.probe()
    assert db.breaker.state == OPEN and "connection refused" in db.breaker.reason


async def test_reads_in_flight_fail_promptly_when_it_opens(db, fake):
    fake.mode = "hang"
    reads = [asyncio.create_task(db.query(f"SELECT {i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    assert not any(r.done() for r in reads)
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError):
        await db.probe()
    results = await asyncio.wait_for(asyncio.gather(*reads, return_exceptions=True), 1)
    assert time.perf_counter() - t0 < PROBE + 0.5
    assert all(isinstance(r, CircuitOpen) for r in results), results
    assert "stopped answering" in str(results[0])
    assert db.breaker.fast_failures == 3
    # The reads' tasks are not left cancelled: they raised and finished normally.
    assert not any(r.cancelled() for r in reads)


async def test_a_guarded_read_in_a_task_continues_after_being_cut_short(db, fake):
    """The task of a read cut short goes on (the handler answers 503): no cancellation left."""
    fake.mode = "hang"
    after: list[str] = []

    async def handler() -> str:
        try:
            await db.query("SELECT 1")
        except DatabaseUnavailable:
            await asyncio.sleep(0)  # would raise CancelledError if a cancel were left over
            after.append("503")
        return "done"

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await db.probe()
    assert await task == "done" and after == ["503"]
    assert task.cancelling() == 0


async def test_a_cancel_from_elsewhere_stays_a_cancel(db, fake):
    fake.mode = "hang"
    read = asyncio.create_task(db.query("SELECT 1"))
    await asyncio.sleep(0.01)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    assert db.breaker.state == CLOSED


async def test_a_cancel_from_elsewhere_and_the_breaker_together_stay_a_cancel(db, fake):
    fake.mode = "hang"
    read = asyncio.create_task(db.query("SELECT 1"))
    await asyncio.sleep(0.01)
    read.cancel()
    db.breaker.trip("test")
    with pytest.raises(asyncio.CancelledError):
        await read


async def test_a_read_that_cannot_reach_the_database_opens(db, fake):
    fake.mode = "down"
    with pytest.raises(DatabaseUnavailable, match="connection refused") as e:
        await db.query("SELECT 1")
    assert not isinstance(e.value, CircuitOpen)  # the driver's own error, logged as such
    assert db.breaker.state == OPEN
    with pytest.raises(DatabaseUnavailable, match="known down"):
        await db.query("SELECT 1")


async def test_a_query_error_does_not_open(db, fake):
    fake.mode = "error"
    with pytest.raises(DatabaseError):
        await db.query("SELEC 1")
    assert db.breaker.state == CLOSED


async def test_a_busy_database_is_not_down(db, fake):
    """The probe times out, but a read was answered after it was sent: busy, not down."""
    fake.mode = "hang"
    probe = asyncio.create_task(db.probe())
    await asyncio.sleep(0.01)
    fake.mode = "ok"
    assert await db.query("SELECT 1")  # answered while the probe waits
    with pytest.raises(TimeoutError):
        await probe
    assert db.breaker.state == CLOSED


async def test_writes_are_never_refused_nor_cut_short(db, fake):
    fake.mode = "hang"
    write = asyncio.create_task(db.insert("fastpath", [{"a": 1}]))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await db.probe()
    assert db.breaker.state == OPEN
    await asyncio.sleep(PROBE * 2)
    assert not write.done()  # still waiting, as the driver's own timeout decides
    fake.release.set()  # the database answers again: the write succeeds...
    await asyncio.wait_for(write, 1)
    assert db.breaker.state == CLOSED  # ...which proves it is up
    fake.mode, fake.release = "ok", asyncio.Event()
    await trip_by_probe(db, fake)
    fake.mode = "ok"
    await db.execute("OPTIMIZE TABLE fastpath")  # sent although open
    assert fake.calls[-1] == "OPTIMIZE TABLE fastpath"


async def test_a_write_that_cannot_reach_the_database_opens(db, fake):
    fake.mode = "down"
    with pytest.raises(DatabaseUnavailable):
        await db.insert("fastpath", [{"a": 1}])
    assert db.breaker.state == OPEN


async def test_probing_state_while_a_probe_is_in_flight(db, fake):
    await trip_by_probe(db, fake)
    fake.mode = "hang"
    probe = asyncio.create_task(db.probe(timeout=1))
    await asyncio.sleep(0.01)
    assert db.breaker.state == PROBING
    with pytest.raises(DatabaseUnavailable):  # reads still refused while it decides
        await db.query("SELECT 1")
    fake.release.set()
    await probe
    assert db.breaker.state == CLOSED


async def test_nobody_probing_a_refused_read_probes_by_itself(db, fake, clock):
    await trip_by_probe(db, fake)
    fake.mode = "ok"
    sent = len(fake.calls)
    with pytest.raises(DatabaseUnavailable):
        await db.query("SELECT 1")
    await asyncio.sleep(0.01)
    assert len(fake.calls) == sent  # the last probe is recent: no self-probe yet
    clock.t += 3.5
    with pytest.raises(DatabaseUnavailable):
        await db.query("SELECT 1")  # refused, but it starts a probe...
    await asyncio.sleep(0.01)
    assert fake.calls[-1] == "SELECT 1 AS ok"
    assert db.breaker.state == CLOSED  # ...which closed it
    assert await db.query("SELECT 1")


async def test_a_self_probe_that_fails_keeps_it_open(db, fake, clock):
    await trip_by_probe(db, fake)
    fake.mode = "down"
    clock.t += 3.5
    with pytest.raises(DatabaseUnavailable):
        await db.query("SELECT 1")
    await asyncio.sleep(0.01)
    assert db.breaker.state == OPEN
    await db.close()


async def test_streams_are_refused_while_open(db, fake):
    await trip_by_probe(db, fake)
    with pytest.raises(DatabaseUnavailable):
        async for _ in db.stream("SELECT 1"):
            pass


async def test_driver_attributes_pass_through(db, fake):
    fake.where = "somewhere"
    assert db.where == "somewhere"
    with pytest.raises(AttributeError):
        db.no_such_thing  # noqa: B018


def test_only_the_api_connects_through_a_breaker(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    assert not isinstance(connect(cfg), GuardedDatabase)
    guarded = connect(cfg, breaker=True)
    assert isinstance(guarded, GuardedDatabase)
    assert guarded.breaker.probe_timeout == cfg.database.probe_timeout == 1.0
    assert not isinstance(connect(cfg, direct=True, breaker=True), GuardedDatabase)


async def test_the_health_monitor_is_the_probe(tmp_path, fake):
    """One mechanism: the monitor's database check opens and closes the breaker."""
    cfg = config.load(None, data_dir=str(tmp_path))
    db = GuardedDatabase(fake, probe_timeout=PROBE)
    assert Monitor(cfg, db, schema_version=1).db_timeout == cfg.database.probe_timeout
    monitor = Monitor(cfg, db, schema_version=1, db_timeout=PROBE)
    errors, check = await monitor._database()
    assert errors == [] and check["ok"] and db.breaker.state == CLOSED
    fake.mode = "hang"
    t0 = time.perf_counter()
    errors, check = await monitor._database()
    assert time.perf_counter() - t0 < PROBE + 0.5
    assert errors == ["clickhouse_error"] and db.breaker.state == OPEN
    with pytest.raises(DatabaseUnavailable):
        await db.query("SELECT 1")
    fake.mode = "ok"
    errors, check = await monitor._database()  # sent although reads are refused
    assert errors == [] and db.breaker.state == CLOSED
    assert await db.query("SELECT 1")
    await monitor.close()
