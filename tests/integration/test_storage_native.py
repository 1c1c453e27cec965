"""NativeDatabase (asynch) and HTTPDatabase against a real clickhouse-server (Debian 18.16).

18.16 is too old for the OONI schema, so these tests use their own simple tables; they
prove the native driver (including recovery after a server restart) and the HTTP driver
against a real server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator

import pytest

from oonibackend import config
from oonibackend.storage import DatabaseError, DatabaseUnavailable, QueryLimitExceeded
from oonibackend.storage.http import HTTPDatabase
from oonibackend.storage.native import NativeDatabase, connection_kwargs
from tests.clickhouse_server import ClickHouseServer, find_binary

pytestmark = [
    pytest.mark.clickhouse_server,
    pytest.mark.skipif(find_binary() is None, reason="clickhouse-server binary not installed"),
]

HOSTILE = "it's \\' \\\\' %(x)s ünï 🌍 \n\t end; DROP TABLE t --"
TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    uid String, cc FixedString(2), asn UInt32, big UInt64, t DateTime, d Date,
    n Nullable(Int32), f Float32, flag UInt8, tags Array(String), body String
) ENGINE = MergeTree ORDER BY uid
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    s = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"))
    s.start()
    yield s
    s.stop()


def make_cfg(driver: str, url: str, **db) -> config.Config:
    over = {"database.driver": driver, "database.url": url, "database.connect_timeout": 2.0,
            "database.read_timeout": 30.0}
    over.update({f"database.{k}": v for k, v in db.items()})
    return config.load(None, **over)


@pytest.fixture
async def native(server):
    d = NativeDatabase(make_cfg("native", server.native_url))
    yield d
    await d.close()


def rows(n: int, prefix: str = "u") -> list[dict]:
    return [{"uid": f"{prefix}{i}", "cc": "IT" if i % 2 else "D", "asn": 4294967295 - i,
             "big": 2**64 - 1 - i, "t": dt.datetime(2024, 1, 2, 3, 4, 5) + dt.timedelta(hours=i),
             "d": dt.date(2024, 1, 2), "n": None if i % 2 else i, "f": 0.5, "flag": i % 2 == 0,
             "tags": ["a", "b'"][: i % 3], "body": HOSTILE}
            for i in range(n)]


def test_connection_kwargs():
    cfg = make_cfg("native", "clickhouse://bob:p%40ss@db.example:9001/ooni")
    kw = connection_kwargs(cfg)
    assert (kw["host"], kw["port"], kw["user"], kw["password"], kw["database"]) == \
        ("db.example", 9001, "bob", "p@ss", "ooni")
    cfg = make_cfg("native", "clickhouse://db.example", user="u", password="pw",
                   database="x")
    kw = connection_kwargs(cfg)
    assert (kw["port"], kw["user"], kw["password"], kw["database"]) == (9000, "u", "pw", "x")


async def test_native_round_trip(native):
    await native.execute("DROP TABLE IF EXISTS nt")
    await native.execute(TABLE.format(name="nt"))
    data = rows(5)
    await native.insert("nt", data)
    got, stats = await native.query_with_stats("SELECT * FROM nt ORDER BY uid")
    assert len(got) == 5
    for want, have in zip(data, got, strict=True):
        exp = dict(want, flag=int(want["flag"]))
        assert have == exp
    assert stats["rows_read"] >= 5 and stats["elapsed"] > 0
    one = await native.query_one("SELECT count() AS n FROM nt WHERE body = %(b)s AND cc = %(cc)s",
                                 {"b": HOSTILE, "cc": "IT"})
    assert one == {"n": 2}
    assert await native.query("SELECT %(v)s AS v", {"v": HOSTILE}) == [{"v": HOSTILE}]
    assert await native.query("SELECT uid FROM nt WHERE 0") == []
    aware = dt.datetime(2024, 1, 2, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    r = await native.query_one("SELECT toDateTime(0) AS z, toDateTime('2024-01-02 03:00:00', "
                               "'Europe/Rome') AS rome, %(a)s AS a", {"a": aware})
    assert r == {"z": dt.datetime(1970, 1, 1), "rome": dt.datetime(2024, 1, 2, 2, 0),
                 "a": dt.datetime(2024, 1, 2, 3, 0)}


async def test_native_errors(native):
    with pytest.raises(DatabaseError, match="Syntax error") as ei:
        await native.query("SELEC 1")
    assert type(ei.value) is DatabaseError and "\n" not in str(ei.value)
    # the next query must not inherit the broken connection state
    assert await native.query("SELECT 1 AS ok") == [{"ok": 1}]
    with pytest.raises(DatabaseError, match="doesn't exist"):
        await native.query("SELECT * FROM nope")
    with pytest.raises(QueryLimitExceeded):
        await native.query("SELECT sum(number) AS s FROM numbers(100000000000)",
                           settings={"max_execution_time": 1})
    with pytest.raises(QueryLimitExceeded):
        await native.query("SELECT number FROM numbers(100000)",
                           settings={"max_result_rows": 10})
    assert await native.query("SELECT 2 AS ok") == [{"ok": 2}]
    # inline INSERT data cannot travel over the native protocol: refused at once, no hang
    with pytest.raises(DatabaseError, match="inline data"):
        await asyncio.wait_for(native.execute("INSERT INTO nt (uid) VALUES ('x')"), 5)


async def test_native_max_execution_time_from_config(server):
    d = NativeDatabase(make_cfg("native", server.native_url, max_execution_time=1))
    try:
        with pytest.raises(QueryLimitExceeded):
            await d.query("SELECT sum(number) AS s FROM numbers(100000000000)")
    finally:
        await d.close()


async def test_native_concurrency(native):
    out = await asyncio.gather(*(native.query("SELECT %(i)s AS i", {"i": i}) for i in range(30)))
    assert [r[0]["i"] for r in out] == list(range(30))


async def test_http_against_real_server(server):
    d = HTTPDatabase(make_cfg("http", server.http_url))
    try:
        await d.execute("DROP TABLE IF EXISTS ht")
        await d.execute(TABLE.format(name="ht"))
        data = rows(4, "h")
        await d.insert("ht", data)
        got, stats = await d.query_with_stats("SELECT * FROM ht ORDER BY uid")
        assert got == [dict(r, flag=int(r["flag"])) for r in data]
        assert stats["rows_read"] >= 4
        assert await d.query("SELECT %(v)s AS v", {"v": HOSTILE}) == [{"v": HOSTILE}]
        with pytest.raises(DatabaseError, match="Syntax error") as ei:
            await d.query("SELEC 1")
        assert "e.what()" not in str(ei.value)
        with pytest.raises(QueryLimitExceeded):
            await d.query("SELECT sum(number) AS s FROM numbers(100000000000)",
                          settings={"max_execution_time": 1})
    finally:
        await d.close()


async def test_native_survives_server_restart(server):
    d = NativeDatabase(make_cfg("native", server.native_url))
    try:
        await d.execute(TABLE.format(name="rt"))
        await d.insert("rt", rows(2, "r"))
        assert await d.query_one("SELECT count() AS n FROM rt") == {"n": 2}
        server.stop(kill=True)
        with pytest.raises(DatabaseUnavailable):
            await d.query("SELECT count() AS n FROM rt")
        with pytest.raises(DatabaseUnavailable):
            await d.insert("rt", rows(1, "x"))
        assert not await d.ping()
        server.start()
        deadline = time.monotonic() + 10
        while True:  # "within a few seconds": a fresh connection is used after the outage
            try:
                n = await d.query_one("SELECT count() AS n FROM rt")
                break
            except DatabaseUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert n == {"n": 2}
        await d.insert("rt", rows(3, "s"))
        assert await d.query_one("SELECT count() AS n FROM rt") == {"n": 5}
    finally:
        await d.close()
