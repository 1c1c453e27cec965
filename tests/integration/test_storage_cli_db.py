"""`oonibackend db migrate|exec`: direct chdb when the owner lock is free, HTTP otherwise."""

from __future__ import annotations

import argparse
import json

from oonibackend import cli_db, config
from oonibackend.storage import migrate
from oonibackend.storage import owner as owner_mod
from tests.clickhouse_server import OwnerProcess

LATEST = max(m.version for m in migrate.available())

SQL = """
-- a comment; with a semicolon
CREATE TABLE IF NOT EXISTS notes (k UInt32, v String) ENGINE = MergeTree ORDER BY k;
INSERT INTO notes (k, v) VALUES (1, 'it''s; here'), (2, 'two');
SELECT k, v FROM notes ORDER BY k;
SELECT count() AS n FROM test_groups;
"""


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    cli_db.add_parser(sub, [])
    return p.parse_args(list(argv))


def cfg_for(data_dir) -> config.Config:
    return config.load(None, data_dir=str(data_dir), **{"database.connect_timeout": 2.0})


def test_parser():
    a = parse("db", "migrate")
    assert a.db_command == "migrate" and a.func is cli_db.run_db
    a = parse("db", "exec", "x.sql")
    assert a.db_command == "exec" and a.file == "x.sql"


async def test_direct_then_through_owner(tmp_path, capsys):
    data = tmp_path / "data"
    sql_file = tmp_path / "q.sql"
    sql_file.write_text(SQL)
    cfg = cfg_for(data)

    # no owner running: chdb opened in-process under the owner lock
    assert await cli_db.run_db(parse("db", "migrate"), cfg) == 0
    out = capsys.readouterr().out
    assert "applied 0001" in out and f"schema version {LATEST}" in out
    assert await cli_db.run_db(parse("db", "exec", str(sql_file)), cfg) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines == [{"k": 1, "v": "it's; here"}, {"k": 2, "v": "two"}, {"n": 23}]
    fd = owner_mod.try_lock(cfg)  # the job released the lock
    assert fd is not None
    owner_mod.release_lock(fd)

    # owner running on the same directory: the job goes through its HTTP interface
    o = OwnerProcess(data).start()
    try:
        assert owner_mod.try_lock(cfg) is None
        assert await cli_db.run_db(parse("db", "migrate"), cfg) == 0
        assert f"schema version {LATEST} (up to date)" in capsys.readouterr().out
        sql_file.write_text("SELECT k FROM notes ORDER BY k")
        assert await cli_db.run_db(parse("db", "exec", str(sql_file)), cfg) == 0
        assert capsys.readouterr().out.splitlines() == ['{"k":1}', '{"k":2}']
        sql_file.write_text("SELECT 1;\nSELECT * FROM;\nSELECT 3")
        assert await cli_db.run_db(parse("db", "exec", str(sql_file)), cfg) == 1
        cap = capsys.readouterr()
        assert cap.out.splitlines() == ['{"1":1}']
        assert "statement 2 failed" in cap.err and "Syntax error" in cap.err
    finally:
        assert o.stop() == 0


async def test_unreachable_owner(tmp_path, capsys):
    cfg = cfg_for(tmp_path)
    fd = owner_mod.try_lock(cfg)  # as if an owner held the lock but did not answer
    try:
        assert await cli_db.run_db(parse("db", "migrate"), cfg) == 1
        err = capsys.readouterr().err
        assert "database unavailable" in err
    finally:
        owner_mod.release_lock(fd)


async def test_missing_file(tmp_path, capsys):
    cfg = cfg_for(tmp_path)
    assert await cli_db.run_db(parse("db", "exec", str(tmp_path / "none.sql")), cfg) == 2
    assert "no such file" in capsys.readouterr().err
