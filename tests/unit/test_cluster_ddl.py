"""The DDL a cluster gets (`[database] cluster`, oonibackend/storage/cluster.py): every statement
of every migration, rewritten and checked: ON CLUSTER right after the object's name, MergeTree
engines replicated with their arguments, everything else (columns, ORDER BY, SETTINGS, a view's
SELECT) byte for byte; and ClickHouse's own parser (chdb's formatQuery) accepts the result.
Without a cluster nothing changes. The driver `storage.connect` gives with a cluster rewrites
every `execute` (migrations and the jobs' swaps). The embedded driver refuses a cluster with a
config error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from oonibackend import config, storage
from oonibackend.exitcodes import EXIT_CONFIG
from oonibackend.storage import Database, migrate
from oonibackend.storage.cluster import (
    REPLICA_NAME,
    REPLICA_PATH,
    ClusterDatabase,
    on_cluster,
)

CLUSTER = "oonicluster"
ON = f" ON CLUSTER {CLUSTER}"
PATH_ARGS = f"'{REPLICA_PATH}', '{REPLICA_NAME}'"

STATEMENTS = [(f"{m.path.name}#{i}", s) for m in migrate.available()
              for i, s in enumerate(m.statements())]
STATEMENTS.append(("schema_migrations", migrate.CREATE_TABLE.strip()))
IDS = [name for name, _ in STATEMENTS]

_HEAD = re.compile(r"^(CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS|ALTER TABLE) (\w+)")
_ENGINE = re.compile(r"\bENGINE = (\w*MergeTree)(\(([^()]*)\))?")


def test_every_migration_file_is_covered():
    files = {m.path.name for m in migrate.available()}
    assert files == {name.split("#")[0] for name in IDS if "#" in name}
    assert len(files) >= 11


@pytest.mark.parametrize("name, stmt", STATEMENTS, ids=IDS)
def test_without_a_cluster_statements_are_unchanged(name, stmt):
    assert on_cluster(stmt, "") == stmt


@pytest.mark.parametrize("name, stmt", STATEMENTS, ids=IDS)
def test_cluster_ddl_of_every_migration_statement(name, stmt):
    out = on_cluster(stmt, CLUSTER)
    if stmt.startswith("INSERT"):  # data, not DDL: the one host that migrates seeds it
        assert out == stmt
        return
    head = _HEAD.match(stmt)
    assert head, f"a statement kind this test does not know: {stmt[:80]}"
    # ON CLUSTER right after the object's name, once.
    assert out.startswith(head.group(0) + ON)
    assert out.count("ON CLUSTER") == 1
    engine = _ENGINE.search(stmt)
    if engine:  # replicated, with the original arguments after the path and replica
        args = engine.group(3)
        want = f"ENGINE = Replicated{engine.group(1)}({PATH_ARGS}{', ' + args if args else ''})"
        assert want in out
        restored = out.replace(want, engine.group(0))
    else:  # other engines (EmbeddedRocksDB, Join, a copy with AS) as written
        assert "Replicated" not in out
        restored = out
    # Undoing the two edits gives the statement back byte for byte: ORDER BY, PARTITION BY,
    # SETTINGS, column defaults and a view's SELECT are kept.
    assert restored.replace(ON, "", 1) == stmt


def test_materialized_views_get_a_replicated_inner_table():
    views = [s for _, s in STATEMENTS
             if s.startswith("CREATE MATERIALIZED VIEW") and "ENGINE" in s]
    assert len(views) == 2
    for v in views:
        out = on_cluster(v, CLUSTER)
        assert f"ENGINE = ReplicatedSummingMergeTree({PATH_ARGS})" in out
        assert out.split("\nAS SELECT", 1)[1] == v.split("\nAS SELECT", 1)[1]


def test_views_into_a_table_are_created_on_every_host():
    """The rollups' views (0012) write into their own replicated tables: no inner engine."""
    views = {_HEAD.match(s).group(2): on_cluster(s, CLUSTER) for _, s in STATEMENTS
             if s.startswith("CREATE MATERIALIZED VIEW") and "ENGINE" not in s}
    assert set(views) == {"fastpath_daily_mv", "fastpath_daily_domain_mv"}
    for name, out in views.items():
        assert out.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name}{ON} TO fastpath_")
        assert "Replicated" not in out


def test_copies_and_local_engines_are_created_on_every_host():
    by_table = {_HEAD.match(s).group(2): on_cluster(s, CLUSTER)
                for _, s in STATEMENTS if s.startswith("CREATE")}
    assert by_table["citizenlab_flip"] == f"CREATE TABLE IF NOT EXISTS citizenlab_flip{ON} AS citizenlab"
    assert "ENGINE = EmbeddedRocksDB" in by_table["accounts"]
    assert "ENGINE = Join(ANY, LEFT, test_name)" in by_table["test_groups"]
    assert f"ReplicatedReplacingMergeTree({PATH_ARGS}, update_time)" in by_table["fastpath"]
    assert f"ReplicatedCollapsingMergeTree({PATH_ARGS}, sign)" in by_table["url_priorities"]
    assert (f"ReplicatedMergeTree({PATH_ARGS}) PARTITION BY toYYYYMM(ts)"
            in " ".join(by_table["event_detector_changepoints"].split()))


@pytest.mark.parametrize("stmt, want", [
    ("DROP TABLE IF EXISTS db.t", f"DROP TABLE IF EXISTS db.t{ON}"),
    ("DROP VIEW `odd name`", f"DROP VIEW `odd name`{ON}"),
    ("TRUNCATE TABLE citizenlab_flip", f"TRUNCATE TABLE citizenlab_flip{ON}"),
    ("TRUNCATE t", f"TRUNCATE t{ON}"),
    ("OPTIMIZE TABLE t FINAL", f"OPTIMIZE TABLE t{ON} FINAL"),
    ("EXCHANGE TABLES citizenlab AND citizenlab_flip",
     f"EXCHANGE TABLES citizenlab AND citizenlab_flip{ON}"),
    ("RENAME TABLE a TO b, c TO d", f"RENAME TABLE a TO b, c TO d{ON}"),
    ("ALTER TABLE default.t DELETE WHERE x = 'ENGINE = MergeTree'",
     f"ALTER TABLE default.t{ON} DELETE WHERE x = 'ENGINE = MergeTree'"),
    ("CREATE TABLE t (engine String) ENGINE MergeTree ORDER BY engine",
     f"CREATE TABLE t{ON} (engine String) ENGINE Replicated"
     f"MergeTree({PATH_ARGS}) ORDER BY engine"),
    ("CREATE TABLE t (a Int8) ENGINE = ReplacingMergeTree() ORDER BY a",
     f"CREATE TABLE t{ON} (a Int8) ENGINE = ReplicatedReplacingMergeTree({PATH_ARGS}) ORDER BY a"),
    ("create or replace table t (a Int8) engine = SummingMergeTree((a)) order by a",
     f"create or replace table t{ON} (a Int8) engine = ReplicatedSummingMergeTree({PATH_ARGS}, "
     "(a)) order by a"),
    ("CREATE TABLE t (a Int8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a",
     f"CREATE TABLE t{ON} (a Int8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a"),
    ("CREATE TABLE t ON CLUSTER other (a Int8) ENGINE = Memory",
     "CREATE TABLE t ON CLUSTER other (a Int8) ENGINE = Memory"),
    ("CREATE DATABASE IF NOT EXISTS ooni", f"CREATE DATABASE IF NOT EXISTS ooni{ON}"),
    ("SELECT 1", "SELECT 1"),
    ("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"),
])
def test_other_statements(stmt, want):
    assert on_cluster(stmt, CLUSTER) == want


def test_cluster_names():
    assert on_cluster("DROP TABLE t", "{cluster}") == "DROP TABLE t ON CLUSTER '{cluster}'"
    assert on_cluster("DROP TABLE t", "ooni-prod") == "DROP TABLE t ON CLUSTER 'ooni-prod'"
    with pytest.raises(ValueError, match="invalid cluster name"):
        on_cluster("DROP TABLE t", "a'; DROP TABLE x")


@pytest.mark.parametrize("stmt", ["GRANT SELECT ON t TO u", "CREATE USER u", "ALTER USER u",
                                  "DROP USER u"])
def test_ddl_it_cannot_place_is_refused(stmt):
    with pytest.raises(ValueError, match="cannot run on a cluster|no object name"):
        on_cluster(stmt, CLUSTER)


_FORMAT = """
import json, sys
import chdb
out = []
for s in json.load(sys.stdin):
    lit = "'" + s.replace("\\\\", "\\\\\\\\").replace("'", "\\\\'") + "'"
    out.append(chdb.query(f"SELECT formatQuery({lit}) AS q", "JSONEachRow").data())
print(json.dumps([json.loads(o)["q"] for o in out]))
"""


def test_clickhouse_parses_the_cluster_ddl():
    """ClickHouse's parser (chdb, in a child: chdb must not be imported by a process that
    forks) reads every rewritten statement with ON CLUSTER and the replicated engine."""
    ddl = [on_cluster(s, CLUSTER) for _, s in STATEMENTS if not s.startswith("INSERT")]
    r = subprocess.run([sys.executable, "-c", _FORMAT], input=json.dumps(ddl),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    formatted = json.loads(r.stdout)
    assert len(formatted) == len(ddl)
    for src, f in zip(ddl, formatted, strict=True):
        name = _HEAD.match(src).group(2)
        assert re.search(rf"\b{name} ON CLUSTER {CLUSTER}\b", f), f
        if "ENGINE = Replicated" in src:
            assert re.search(r"ENGINE = Replicated\w+\('/clickhouse/tables/\{uuid\}/\{shard\}', "
                             r"'\{replica\}'", f), f


class Recorder(Database):
    """A driver that records what it is sent; knows no table yet."""

    def __init__(self) -> None:
        self.executed: list[str] = []
        self.inserted: list[tuple[str, list[Mapping[str, Any]]]] = []

    async def query(self, sql, params=None, settings=None):
        return []

    async def execute(self, sql, params=None, settings=None):
        assert params is None  # rendered before the rewrite
        self.executed.append(sql)

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]], columns=None,
                     settings=None):
        self.inserted.append((table, list(rows)))


async def test_migrate_runs_every_ddl_statement_on_the_cluster():
    driver = Recorder()
    applied = await migrate.migrate(ClusterDatabase(driver, CLUSTER))
    assert applied == [m.version for m in migrate.available()]
    ddl = [s for s in driver.executed if not s.startswith("INSERT")]
    assert ddl[0].strip().startswith(f"CREATE TABLE IF NOT EXISTS schema_migrations{ON}")
    assert all(ON in s for s in ddl)
    # the test_groups seed and the rollups' backfill (0012)
    assert sum(s.startswith("INSERT") for s in driver.executed) == 3
    assert not any("ENGINE = MergeTree" in s or "ENGINE = ReplacingMergeTree" in s for s in ddl)
    assert {t for t, _ in driver.inserted} == {"schema_migrations"}


async def test_migrate_without_a_cluster_sends_the_files_as_written():
    driver = Recorder()
    await migrate.migrate(driver)
    want = [migrate.CREATE_TABLE] + [s for m in migrate.available() for s in m.statements()]
    assert driver.executed == want


async def test_jobs_ddl_runs_on_the_cluster_too():
    """The swaps and scratch tables of the jobs go through the same driver: a swap made on
    one replica only would leave the others reading the old table."""
    driver = Recorder()
    db = ClusterDatabase(driver, CLUSTER)
    await db.execute("TRUNCATE TABLE citizenlab_flip")
    await db.execute("EXCHANGE TABLES citizenlab AND citizenlab_flip")
    await db.execute("ALTER TABLE incidents DELETE WHERE id = %(id)s", {"id": "it's (x)"})
    await db.execute("SYSTEM STOP MERGES asnmeta_restore")
    await db.execute("INSERT INTO t SELECT 1")
    assert driver.executed == [
        f"TRUNCATE TABLE citizenlab_flip{ON}",
        f"EXCHANGE TABLES citizenlab AND citizenlab_flip{ON}",
        f"ALTER TABLE incidents{ON} DELETE WHERE id = 'it\\'s (x)'",
        "SYSTEM STOP MERGES asnmeta_restore",
        "INSERT INTO t SELECT 1",
    ]
    with pytest.raises(storage.DatabaseError, match="cannot run on a cluster"):
        await db.execute("GRANT SELECT ON t TO u")
    await db.insert("fastpath", [{"a": 1}])
    assert driver.inserted == [("fastpath", [{"a": 1}])]


def _write(tmp_path, text: str) -> str:
    f = tmp_path / "c.toml"
    f.write_text(text)
    return str(f)


def test_the_configured_cluster_reaches_the_database(tmp_path):
    f = _write(tmp_path, '[database]\ndriver = "native"\nurl = "clickhouse://db:9000/default"\n'
                         'cluster = "oonicluster"\n')
    cfg = config.load(f, data_dir=str(tmp_path))
    db = storage.connect(cfg)
    assert isinstance(db, ClusterDatabase) and db.cluster == CLUSTER
    assert storage.connect(cfg, breaker=True).cluster == CLUSTER  # behind the breaker
    assert not isinstance(storage.connect(config.load(None, data_dir=str(tmp_path))),
                          ClusterDatabase)


def test_embedded_database_refuses_a_cluster(tmp_path):
    f = _write(tmp_path, '[database]\ncluster = "oonicluster"\n')
    with pytest.raises(config.ConfigError, match="embedded chdb is one process"):
        config.load(f)
    bad = _write(tmp_path, '[database]\ndriver = "http"\nurl = "http://db:8123"\n'
                           'cluster = "a b"\n')
    with pytest.raises(config.ConfigError, match="not a cluster name"):
        config.load(bad)


def test_a_cluster_with_the_embedded_database_is_a_clear_error_at_start(tmp_path):
    f = _write(tmp_path, '[database]\ncluster = "oonicluster"\n')
    r = subprocess.run([sys.executable, "-m", "oonibackend", "db", "migrate", "--config", f,
                        "--data-dir", str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == EXIT_CONFIG
    assert "database.cluster needs a ClickHouse server" in r.stderr
    assert "Traceback" not in r.stderr
