"""ChdbDatabase: chdb in this process (what the owner and offline jobs use)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator

import pytest

from oonibackend.storage import DatabaseError, QueryLimitExceeded, migrate
from oonibackend.storage.chdb_local import ChdbDatabase

LATEST = max(m.version for m in migrate.available())
ALL = sorted(m.version for m in migrate.available())

SLOW = "SELECT sum(number) AS s FROM numbers(100000000000)"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbDatabase]:
    d = ChdbDatabase(str(tmp_path_factory.mktemp("chdb") / "db"), workers=3)
    d.open()
    yield d
    d.close_sync()


async def test_migrate_and_seed(db):
    assert await migrate.migrate(db) == ALL
    assert await migrate.migrate(db) == []
    assert await migrate.current_version(db) == LATEST
    assert await db.query("SELECT joinGet('test_groups', 'test_group', 'ndt') AS g") == \
        [{"g": "performance"}]
    n = await db.query_one("SELECT count() AS n FROM test_groups")
    assert n == {"n": 23}


async def test_round_trip_and_stats(db):
    await migrate.migrate(db)
    t = dt.datetime(2024, 5, 6, 7, 8, 9)
    await db.insert("fastpath", [
        {"measurement_uid": f"uid{i}", "report_id": "r", "input": f"https://{i}.example/",
         "probe_cc": "IT", "probe_asn": 30722, "test_name": "web_connectivity",
         "measurement_start_time": t, "test_start_time": t, "is_ssl_expected": i % 2 == 0,
         "ooni_run_link_id": i or None}
        for i in range(5)])
    rows, stats = await db.query_with_stats(
        "SELECT measurement_uid, measurement_start_time, ooni_run_link_id, is_ssl_expected "
        "FROM fastpath WHERE probe_cc = %(cc)s ORDER BY measurement_uid", {"cc": "IT"})
    assert [r["measurement_uid"] for r in rows] == [f"uid{i}" for i in range(5)]
    assert rows[0] == {"measurement_uid": "uid0", "measurement_start_time": t,
                       "ooni_run_link_id": None, "is_ssl_expected": 1}
    assert rows[3]["ooni_run_link_id"] == 3
    assert stats["rows_read"] >= 5 and stats["bytes_read"] > 0
    assert await db.query("SELECT 1 AS x WHERE 0") == []


async def test_hostile_string(db):
    v = "it's \\' \\\\' %(x)s ünï 🌍 \n\t\x00 end"
    assert await db.query("SELECT %(v)s AS v", {"v": v}) == [{"v": v}]
    await db.execute("CREATE TABLE IF NOT EXISTS h (s String) ENGINE = MergeTree ORDER BY s")
    await db.insert("h", [{"s": v}])
    assert await db.query("SELECT s FROM h WHERE s = %(v)s", {"v": v}) == [{"s": v}]


async def test_errors(db):
    with pytest.raises(DatabaseError, match="Syntax error"):
        await db.query("SELEC 1")
    with pytest.raises(DatabaseError, match="(?i)unknown table"):
        await db.query("SELECT * FROM does_not_exist")
    with pytest.raises(DatabaseError, match="No such column"):
        await db.insert("h", [{"nope": 1}])
    with pytest.raises(QueryLimitExceeded):
        await db.query(SLOW, settings={"max_execution_time": 1})


async def test_failed_query_does_not_leak_into_next_result(db):
    """chdb leaves a failed query's partial output on the session: it must be drained."""
    for _ in range(2):
        with pytest.raises(DatabaseError):
            await db.query("SELECT throwIf(number = 300000) AS x FROM numbers(1000000) "
                           "SETTINGS max_block_size = 1000")
        assert await db.query("SELECT 1 AS ok") == [{"ok": 1}]
        assert db.raw("SELECT 2", "CSV") == b"2\n"


async def test_sessions_run_in_parallel(db):
    t = time.monotonic()
    out = await asyncio.gather(*(db.query("SELECT sleep(1) AS s, %(i)s AS i", {"i": i})
                                 for i in range(3)))
    assert [r[0]["i"] for r in out] == [0, 1, 2]
    assert time.monotonic() - t < 2.5


async def test_max_execution_time_default():
    d = ChdbDatabase("unused", max_execution_time=1)
    assert d._read_settings(None) == {"max_execution_time": 1}
    assert d._read_settings({"max_execution_time": 5}) == {"max_execution_time": 5}
    d.executor.shutdown()


async def test_raw_formats(db):
    assert db.raw("SELECT 1 AS a FORMAT JSONEachRow") == b'{"a":1}\n'
    assert db.raw("SELECT 1 AS a", "TabSeparated") == b"1\n"
    assert db.raw_insert("INSERT INTO h (s)", "JSONEachRow", b'{"s":"raw"}\n') == 1
    assert await db.query("SELECT s FROM h WHERE s = 'raw'") == [{"s": "raw"}]
