"""The embedded owner as a real subprocess, reached with HTTPDatabase."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
from collections.abc import Iterator

import pytest

from oonibackend.storage import DatabaseError, DatabaseUnavailable, QueryLimitExceeded, migrate
from oonibackend.storage.http import HTTPDatabase
from oonibackend.storage.owner import EXIT_LOCKED
from tests.clickhouse_server import OwnerProcess

LATEST = max(m.version for m in migrate.available())
ALL = sorted(m.version for m in migrate.available())

HOSTILE = "it's a \\'hostile\\' string; DROP TABLE fastpath; -- %(uid)s ünï ☃ \t\n\"q\""


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnerProcess]:
    o = OwnerProcess(tmp_path_factory.mktemp("owner")).start()
    yield o
    rc = o.stop()
    assert rc == 0, o.output()


@pytest.fixture
async def db(owner: OwnerProcess):
    d = HTTPDatabase(owner.config())
    yield d
    await d.close()


def fastpath_row(uid: str, **kw) -> dict:
    row = {
        "measurement_uid": uid, "report_id": "20240102T030405Z_webconnectivity_IT_1234_n1_x",
        "input": "https://example.org/", "probe_cc": "IT", "probe_asn": 4294967295,
        "test_name": "web_connectivity",
        "test_start_time": dt.datetime(2024, 1, 2, 3, 4, 0),
        "measurement_start_time": dt.datetime(2024, 1, 2, 3, 4, 5),
        "anomaly": "f", "confirmed": "f", "msm_failure": "f", "blocking_general": 0.25,
        "is_ssl_expected": True, "test_runtime": 1.5, "ooni_run_link_id": None,
    }
    row.update(kw)
    return row


def http_get(owner: OwnerProcess, path: str, **params) -> tuple[int, bytes]:
    return owner.request("GET", path, **params)


async def test_ping(owner, db):
    assert http_get(owner, "/") == (200, b"Ok.\n")
    assert http_get(owner, "/ping") == (200, b"Ok.\n")
    assert await db.ping()


async def test_clickhouse_http_semantics(owner):
    status, body = http_get(owner, "/", query="SELECT 1 + 1")
    assert (status, body) == (200, b"2\n")  # TabSeparated by default, like ClickHouse
    status, body = http_get(owner, "/", query="SELECT 'a' AS x FORMAT JSONEachRow")
    assert (status, body) == (200, b'{"x":"a"}\n')
    status, body = http_get(owner, "/", query="SELECT 1", default_format="CSV",
                            max_execution_time="5", not_a_setting="ignored")
    assert (status, body) == (200, b"1\n")
    status, body = http_get(owner, "/", query="SELEC 1")
    assert status >= 400 and body.startswith(b"Code: 62.")
    # query param first, then the body appended (ClickHouse semantics)
    assert owner.request("POST", "/", b"2", query="SELECT 40 +") == (200, b"42\n")


async def test_migrate_twice(db):
    first = await migrate.migrate(db)
    assert first == ALL or first == []  # another test module may have migrated first
    assert await migrate.migrate(db) == []
    assert await migrate.current_version(db) == LATEST
    rows = await db.query("SELECT test_group, count() AS n FROM test_groups "
                          "GROUP BY test_group ORDER BY test_group")
    assert {r["test_group"]: r["n"] for r in rows}["circumvention"] == 8
    assert sum(r["n"] for r in rows) == 23
    tables = {r["name"] for r in await db.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase()")}
    for t in ("fastpath", "jsonl", "url_priorities", "citizenlab", "citizenlab_flip",
              "test_groups", "accounts", "session_expunge", "counters_test_list",
              "counters_asn_test_list", "msmt_feedback", "fingerprints_dns",
              "fingerprints_http", "fingerprints_dns_tmp", "fingerprints_http_tmp", "asnmeta",
              "asnmeta_tmp", "incidents", "oonirun", "obs_openvpn", "test_helper_instances",
              "schema_migrations"):
        assert t in tables


async def test_fastpath_round_trip(db):
    await migrate.migrate(db)
    rows = [fastpath_row("20240102030405.000000_IT_webconnectivity_a"),
            fastpath_row("20240102030405.000000_IT_webconnectivity_b", ooni_run_link_id=2**63,
                         input=HOSTILE,
                         measurement_start_time=dt.datetime(2024, 1, 2, 4, 4, 5,
                                                            tzinfo=dt.UTC))]
    await db.insert("fastpath", rows)
    got, stats = await db.query_with_stats(
        "SELECT measurement_uid, input, probe_asn, measurement_start_time, test_start_time, "
        "ooni_run_link_id, is_ssl_expected, blocking_general, is_verified, update_time "
        "FROM fastpath FINAL WHERE measurement_uid IN %(uids)s ORDER BY measurement_uid",
        {"uids": [r["measurement_uid"] for r in rows]})
    assert [r["measurement_uid"] for r in got] == [r["measurement_uid"] for r in rows]
    a, b = got
    assert a["input"] == "https://example.org/" and b["input"] == HOSTILE
    assert a["probe_asn"] == 4294967295
    assert a["measurement_start_time"] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert b["measurement_start_time"] == dt.datetime(2024, 1, 2, 4, 4, 5)
    assert a["ooni_run_link_id"] is None and b["ooni_run_link_id"] == 2**63
    assert a["is_ssl_expected"] == 1 and a["blocking_general"] == 0.25
    assert a["is_verified"] == "u"
    assert isinstance(a["update_time"], dt.datetime) and a["update_time"].tzinfo is None
    assert stats["rows_read"] >= 2 and stats["elapsed"] >= 0
    # the hostile string works as a parameter too
    hit = await db.query("SELECT count() AS n FROM fastpath WHERE input = %(i)s", {"i": HOSTILE})
    assert hit == [{"n": 1}]
    # re-inserting the same uid is deduplicated by ReplacingMergeTree (FINAL)
    await db.insert("fastpath", rows[:1])
    n = await db.query_one("SELECT count() AS n FROM fastpath FINAL WHERE measurement_uid = %(u)s",
                           {"u": rows[0]["measurement_uid"]})
    assert n == {"n": 1}


async def test_types_round_trip(db):
    await migrate.migrate(db)
    await db.insert("incidents", [{
        "id": "inc1", "title": "t", "CCs": ["IT", "DE"], "ASNs": [1, 4294967295],
        "end_time": None, "creator_account_id": "a" * 32, "published": False,
        "start_time": dt.datetime(2024, 1, 1, 0, 0, 0)}])
    row = await db.query_one("SELECT * FROM incidents FINAL WHERE id = 'inc1'")
    assert row["CCs"] == ["IT", "DE"] and row["ASNs"] == [1, 4294967295]
    assert row["end_time"] is None and row["creator_account_id"] == "a" * 32
    assert row["start_time"] == dt.datetime(2024, 1, 1) and row["published"] == 0
    assert isinstance(row["create_time"], dt.datetime)
    await db.insert("oonirun", [{
        "ooni_run_link_id": 10, "descriptor_creation_time": dt.datetime(2024, 1, 1, 0, 0, 0, 5000),
        "translation_creation_time": dt.datetime(2024, 1, 1), "creator_account_id": "abc",
        "name": "n", "descriptor": "{}"}])
    row = await db.query_one("SELECT * FROM oonirun WHERE ooni_run_link_id = 10")
    assert row["descriptor_creation_time"] == dt.datetime(2024, 1, 1, 0, 0, 0, 5000)
    assert row["creator_account_id"] == "abc"  # FixedString padding removed
    await db.insert("fingerprints_http", [{"name": "fp1", "scope": "injb",
                                           "pattern_type": "regexp", "pattern": "a.*"}])
    row = await db.query_one("SELECT name, scope, pattern_type FROM fingerprints_http")
    assert row == {"name": "fp1", "scope": "injb", "pattern_type": "regexp"}
    row = await db.query_one("SELECT toDate('2024-02-29') AS d, [[1, 2], [3]] AS a, "
                             "toUInt64(18446744073709551615) AS big, "
                             "CAST(NULL AS Nullable(DateTime)) AS nd, 1.5 AS f")
    assert row == {"d": dt.date(2024, 2, 29), "a": [[1, 2], [3]], "big": 2**64 - 1,
                   "nd": None, "f": 1.5}


async def test_hostile_strings_round_trip(db):
    await db.execute("CREATE TABLE IF NOT EXISTS hostile (k UInt32, s String) "
                     "ENGINE = MergeTree ORDER BY k")
    values = ["it's", "back\\slash", "\\'", "'; DROP TABLE hostile; --", "%(x)s",
              "ünïcødé ☃ 🌍", "tab\tnew\nline\r", "", "\\", "''", "nul\x00byte", '"dq"']
    await db.insert("hostile", [{"k": i, "s": v} for i, v in enumerate(values)])
    got = await db.query("SELECT k, s FROM hostile ORDER BY k")
    assert [r["s"] for r in got] == values
    for v in values:  # through sql.render
        r = await db.query_one("SELECT %(v)s AS v, count() AS n FROM hostile WHERE s = %(v)s",
                               {"v": v})
        assert r == {"v": v, "n": 1}


async def test_error_mapping(owner, db):
    with pytest.raises(DatabaseError) as ei:
        await db.query("SELEC 1")
    assert type(ei.value) is DatabaseError
    assert "Syntax error" in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(DatabaseError, match="nope"):
        await db.query("SELECT * FROM nope")
    with pytest.raises(QueryLimitExceeded):
        await db.query("SELECT sum(number) AS s FROM numbers(100000000000)",
                       settings={"max_execution_time": 1})
    with pytest.raises(QueryLimitExceeded):
        await db.query("SELECT count() AS n FROM numbers(100000)",
                       settings={"max_rows_to_read": 10})
    assert await db.query("SELECT 1 AS ok") == [{"ok": 1}]  # still usable afterwards


async def test_max_execution_time_from_config(owner):
    cfg = owner.config()
    cfg.database.max_execution_time = 1
    d = HTTPDatabase(cfg)
    try:
        with pytest.raises(QueryLimitExceeded):
            await d.query("SELECT sum(number) AS s FROM numbers(100000000000)")
    finally:
        await d.close()


async def test_unavailable(tmp_path):
    from oonibackend import config

    cfg = config.load(None, data_dir=str(tmp_path), **{"database.connect_timeout": 2.0})
    d = HTTPDatabase(cfg)
    try:
        with pytest.raises(DatabaseUnavailable):
            await d.query("SELECT 1")
        with pytest.raises(DatabaseUnavailable):
            await d.insert("t", [{"a": 1}])
        assert not await d.ping()
    finally:
        await d.close()


def test_second_owner_fails_clearly(owner):
    other = OwnerProcess(owner.data_dir)
    proc = other.spawn()
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        raise
    assert rc == EXIT_LOCKED
    assert "in use by another owner" in other.output()


async def test_password(tmp_path):
    o = OwnerProcess(tmp_path, password="s3cret'\"").start()
    try:
        good = HTTPDatabase(o.config())
        assert await good.query("SELECT 1 AS x") == [{"x": 1}]
        await good.close()
        cfg = o.config()
        cfg.database.password = "wrong"
        bad = HTTPDatabase(cfg)
        with pytest.raises(DatabaseError, match="516"):
            await bad.query("SELECT 1")
        await bad.close()
    finally:
        assert o.stop() == 0


async def test_owner_down_then_up(tmp_path):
    o = OwnerProcess(tmp_path).start()
    d = HTTPDatabase(o.config())
    try:
        await d.execute("CREATE TABLE IF NOT EXISTS kv (k String, v UInt32) "
                        "ENGINE = MergeTree ORDER BY k")
        await d.insert("kv", [{"k": "a", "v": 1}])
        assert o.stop() == 0
        with pytest.raises(DatabaseUnavailable):
            await d.query("SELECT * FROM kv")
        o.start()
        # data persisted; same client object works again
        assert await d.query("SELECT k, v FROM kv") == [{"k": "a", "v": 1}]
    finally:
        await d.close()
        o.stop()


def test_strangers_are_refused(owner):
    """Only the instance may query its database: the socket is its user's alone, and a
    request without the instance's key (or with another one) runs no SQL."""
    import os
    import stat

    sock = owner.socket
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
    for key in ("", "not-the-key", owner.key[:-1]):
        for method, body, params in (("GET", None, {"query": "SELECT 1"}),
                                     ("POST", b"SELECT count() FROM system.tables", {}),
                                     ("POST", b"SELECT * FROM file('/etc/passwd')", {})):
            status, text = owner.request(method, "/", body, key=key, **params)
            assert status == 403 and b"AUTHENTICATION_FAILED" in text, (key, method, text)
    # Liveness needs no key and runs no SQL.
    assert owner.request("GET", "/ping", key="") == (200, b"Ok.\n")
    assert owner.request("POST", "/", b"SELECT 1", query="") == (200, b"1\n")
