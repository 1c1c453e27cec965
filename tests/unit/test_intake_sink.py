"""The fastpath sink: batches by size and by time, commits only after a successful insert,
retries failed inserts with back-off without dropping anything, and isolates rows the
database rejects as invalid data."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from oonibackend.metrics import Metrics
from oonibackend.storage import Database, DatabaseError, DatabaseUnavailable, types
from workers.intake.sink import Sink, uid_time


@dataclass(eq=False)
class Item:
    uid: str


class FakeDB(Database):
    """Records inserts; fails the next `fail` inserts with `error`; rejects rows whose
    `bad` key is set with a data error (ClickHouse code 27)."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[dict], list[str]]] = []
        self.attempts = 0
        self.fail = 0
        self.error: DatabaseError = DatabaseUnavailable("down")
        self.times: list[float] = []

    async def query(self, sql, params=None, settings=None):
        return []

    async def execute(self, sql, params=None, settings=None):
        return None

    async def insert(self, table, rows, columns=None, settings=None):
        self.attempts += 1
        self.times.append(time.monotonic())
        if self.fail:
            self.fail -= 1
            raise self.error
        types.json_each_row(rows, list(columns or rows[0]))  # as the real drivers encode
        if any(r.get("bad") for r in rows):
            e = DatabaseError("Cannot parse input")
            e.code = 27  # type: ignore[attr-defined]
            raise e
        self.inserts.append((table, list(rows), list(columns or rows[0])))

    def rows(self, table: str = "fastpath") -> list[dict]:
        return [r for t, rows, _ in self.inserts if t == table for r in rows]


def item(i: int) -> Item:
    return Item(f"20240101120000.{i:06d}_IT_webconnectivity_{i:016x}")


def make(db: FakeDB, committed: list, rejected: list | None = None, **kw) -> Sink:
    async def on_rejected(it, reason):
        assert rejected is not None
        rejected.append((it, reason))

    opts = {"batch_size": 10, "batch_interval": 60.0, "retry_max": 0.05, "retry_min": 0.01}
    opts.update(kw)
    s = Sink(db, metrics=Metrics("t"), on_committed=committed.extend,
             on_rejected=on_rejected, **opts)
    s.start()
    return s


async def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_batch_size_triggers_an_insert():
    db, committed = FakeDB(), []
    s = make(db, committed)
    items = [item(i) for i in range(25)]
    for i, it in enumerate(items):
        s.add(it, {"fastpath": [{"measurement_uid": it.uid, "n": i}]})
    await wait_until(lambda: len(committed) == 20)
    await asyncio.sleep(0.05)
    assert [len(rows) for _, rows, _ in db.inserts] == [10, 10]  # 5 wait for more or time
    assert len(committed) == 20
    await s.close()
    assert committed == items and len(db.rows()) == 25


async def test_interval_triggers_a_small_batch():
    db, committed = FakeDB(), []
    s = make(db, committed, batch_size=1000, batch_interval=0.2)
    t0 = time.monotonic()
    s.add(item(1), {"fastpath": [{"a": 1}]})
    await wait_until(lambda: committed)
    assert 0.15 < time.monotonic() - t0 < 2.0
    await s.close()


async def test_rows_of_several_tables_and_empty_items():
    db, committed = FakeDB(), []
    s = make(db, committed, batch_size=3)
    a, b, c = item(1), item(2), item(3)
    s.add(a, {"fastpath": [{"x": 1}], "obs_openvpn": [{"y": 1}]})
    s.add(b, {})  # discarded measurement: no rows, committed at once
    assert committed == [b]
    s.add(c, {"fastpath": [{"x": 2, "z": 3}]})
    await wait_until(lambda: len(committed) == 3)
    tables = {t: (rows, cols) for t, rows, cols in db.inserts}
    assert tables["fastpath"][1] == ["x", "z"]  # union of the rows' keys
    assert tables["obs_openvpn"][0] == [{"y": 1}]
    await s.close()


async def test_failed_insert_is_retried_with_backoff_and_never_dropped():
    db, committed = FakeDB(), []
    db.fail = 6
    s = make(db, committed, batch_size=2, retry_min=0.01, retry_max=0.04)
    s.add(item(1), {"fastpath": [{"a": 1}]})
    s.add(item(2), {"fastpath": [{"a": 2}]})
    await asyncio.sleep(0.05)
    assert committed == []  # not committed while the database is down
    await wait_until(lambda: len(committed) == 2)
    assert db.attempts == 7 and len(db.rows()) == 2
    gaps = [b - a for a, b in zip(db.times, db.times[1:], strict=False)]
    assert gaps[0] < gaps[3]  # exponential back-off ...
    assert max(gaps) < 0.2  # ... capped by retry_max
    await s.close()


async def test_other_database_errors_are_retried_too():
    db, committed = FakeDB(), []
    db.fail, db.error = 2, DatabaseError("Code: 60. Table default.fastpath doesn't exist")
    s = make(db, committed, batch_size=1)
    s.add(item(1), {"fastpath": [{"a": 1}]})
    await wait_until(lambda: committed)
    assert db.attempts == 3
    await s.close()


async def test_pool_waits_while_the_database_is_down():
    db, committed = FakeDB(), []
    db.fail = 10 ** 9
    s = make(db, committed, batch_size=2, max_buffered=4)
    for i in range(4):
        await asyncio.wait_for(s.wait_for_room(), 1)
        s.add(item(i), {"fastpath": [{"a": i}]})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(s.wait_for_room(), 0.2)
    db.fail = 0
    await asyncio.wait_for(s.wait_for_room(), 2)
    await wait_until(lambda: len(committed) == 4)
    await s.close()


async def test_data_error_isolates_the_bad_measurement():
    db, committed, rejected = FakeDB(), [], []
    s = make(db, committed, rejected, batch_size=8)
    items = [item(i) for i in range(8)]
    for i, it in enumerate(items):
        s.add(it, {"fastpath": [{"a": i, "bad": i == 5}]})
    await wait_until(lambda: len(committed) + len(rejected) == 8)
    assert [it for it, _ in rejected] == [items[5]]
    assert "rejected by the database" in rejected[0][1]
    assert sorted(r["a"] for r in db.rows()) == [0, 1, 2, 3, 4, 6, 7]
    await s.close()


async def test_unencodable_row_is_isolated_too():
    db, committed, rejected = FakeDB(), [], []
    s = make(db, committed, rejected, batch_size=4)
    items = [item(i) for i in range(4)]
    for i, it in enumerate(items):
        s.add(it, {"fastpath": [{"a": object() if i == 2 else i}]})
    await wait_until(lambda: len(committed) + len(rejected) == 4)
    assert [it for it, _ in rejected] == [items[2]]
    await s.close()


async def test_close_flushes_what_is_buffered():
    db, committed = FakeDB(), []
    s = make(db, committed, batch_size=1000, batch_interval=3600)
    s.add(item(1), {"fastpath": [{"a": 1}]})
    assert await s.close(2.0) is True
    assert len(committed) == 1


async def test_close_gives_up_when_the_database_stays_down():
    db, committed = FakeDB(), []
    db.fail = 10 ** 9
    s = make(db, committed, batch_size=1000, batch_interval=3600)
    s.add(item(1), {"fastpath": [{"a": 1}]})
    assert await s.close(0.2) is False
    assert committed == []  # left in the durable queue


def test_uid_time():
    assert uid_time("20240101120000.500000_IT_ndt_0123456789abcdef") == 1704110400.5
    assert uid_time("bogus") is None
