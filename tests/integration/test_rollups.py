"""The rollups of migration 0012 against fastpath, on the real server and embedded ClickHouse:
every request the planner (queries/aggregation.py `plan`) sends to a rollup is answered by the
route exactly as fastpath alone answers it (`build(rollups=False)`, run on the same database),
and so are Explorer's full-table statistics (queries/overview.py),
on the fixture rows and on rows made by bench/gen_fastpath.py; the migration's backfill of
existing rows, its re-run, and the fastpath's replayed batches count each row once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from multidict import MultiDict

from oonibackend import jsonutil
from oonibackend.queries import aggregation as aq
from oonibackend.queries import overview as oq
from oonibackend.routes import aggregation as route
from oonibackend.storage.http import HTTPDatabase
from oonibackend.storage.migrate import MIGRATIONS_DIR
from tests.conftest import Backend, write_config
from tests.readdata import CITIZENLAB_SQL, FASTPATH_SQL, RECENT_DAY, batched, db_exec

ROOT = Path(__file__).resolve().parents[2]
AXES = [None, "measurement_start_day", "probe_cc", "probe_asn", "test_name", "domain"]


def requests(windows: list[dict[str, str]], cc: str, asn: int, domain: str
             ) -> list[dict[str, str]]:
    """Query strings over every pair of rollup axes, every day-or-longer grain, the filters
    the rollups hold, and the given windows (whole days, partial days, open-ended)."""
    filters = [{}, {"probe_cc": cc}, {"probe_asn": f"AS{asn}"},
               {"test_name": "web_connectivity"}, {"domain": domain},
               {"probe_cc": cc, "test_name": "web_connectivity,dnscheck"}]
    out = []
    for (x, y), f, w in itertools.product(itertools.permutations(AXES, 2), filters, windows):
        if x is None and y is not None:
            continue
        if "measurement_start_day" in (x, y) and not ("since" in w and "until" in w):
            continue
        q = {**f, **w}
        if x:
            q["axis_x"] = x
        if y:
            q["axis_y"] = y
        if "measurement_start_day" in (x, y):
            since = dt.datetime.fromisoformat(w["since"])
            until = dt.datetime.fromisoformat(w["until"])
            allowed, _ = aq.allowed_time_grains(since, until)
            for grain in [g for g in allowed if g != "hour"]:
                out.append({**q, "time_grain": grain})
        else:
            out.append(q)
    return out


async def compare(backend: Backend, queries: list[dict[str, str]]) -> int:
    """Every query answered from a rollup, equal to fastpath's answer; returns how many."""
    db = HTTPDatabase(backend.cfg())
    checked = 0
    try:
        for q in queries:
            a, _, _ = route.parse(MultiDict(q))
            assert aq.plan(a).rollup is not None, q
            with urllib.request.urlopen(f"{backend.url}/api/v1/aggregation?{urlencode(q)}",
                                        timeout=30) as r:
                got = json.loads(r.read())["result"]
            rows = json.loads(jsonutil.dumps(await db.query(*aq.build(a, rollups=False))))
            want = (rows[0] if rows else {m: 0 for m in aq.MEASURES}) if not a.axes else rows
            assert got == want, q
            checked += 1
    finally:
        await db.close()
    return checked


def test_fixture_rows_rollup_answers_equal_fastpaths(read_backend):
    recent = RECENT_DAY.isoformat()
    tomorrow = (RECENT_DAY + dt.timedelta(days=2)).isoformat()
    windows = [
        {},
        {"since": "2021-07-01", "until": "2021-07-31"},
        {"since": "2021-07-07T05:30:00", "until": "2021-07-09T12:00:00"},
        {"since": "2023-12-31T23:00:00", "until": "2024-02-01T00:30:00"},
        {"since": "2020-01-01", "until": tomorrow},
        {"until": "2024-01-31T00:30:00"},
        {"since": f"{recent}T00:10:00"},
    ]
    queries = requests(windows, "US", 5650, "twitter.com")
    assert asyncio.run(compare(read_backend, queries)) == len(queries) > 1000


async def compare_overview(backend: Backend) -> None:
    """Explorer's full-table statistics: the rollups' rows equal fastpath's."""
    db = HTTPDatabase(backend.cfg())
    today = RECENT_DAY + dt.timedelta(days=1)
    try:
        for build in (oq.global_counts, oq.network_counts, oq.domain_counts,
                      lambda rollups: oq.monthly_counts(today, 60, rollups)):
            settings = {"join_use_nulls": 0}
            got = await db.query(*build(True), settings)
            want = await db.query(*build(False), settings)
            assert got == want and got
    finally:
        await db.close()


def test_fixture_rows_overview_statistics_equal_fastpaths(read_backend):
    asyncio.run(compare_overview(read_backend))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Backend, dt.datetime]]:
    """A backend whose fastpath holds 40,000 rows of bench/gen_fastpath.py over 20 days,
    inserted through the running database owner (the views see INSERT ... SELECT blocks)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import gen_fastpath

    b = Backend(tmp_path_factory.mktemp("rollups"), {"fastpath": {"enabled": False},
                                                     "quotas": {"enabled": False}})
    b.start()
    end = dt.datetime(2025, 3, 20, 17, 45)
    try:
        asyncio.run(gen_fastpath.generate(b.cfg(), 40_000, 20, end, seed=7, batch=15_000))
        yield b, end
    finally:
        b.stop()


def test_generated_rows_rollup_answers_equal_fastpaths(generated):
    b, end = generated
    fmt = "%Y-%m-%dT%H:%M:%S"
    windows = [{}]
    for days, shift in ((30, dt.timedelta(0)), (7, dt.timedelta(hours=5, minutes=3)),
                        (10, dt.timedelta(days=3, hours=20))):
        until = end - shift
        windows.append({"since": (until - dt.timedelta(days=days)).strftime(fmt),
                        "until": until.strftime(fmt)})
    windows.append({"since": "2025-03-01", "until": "2025-03-15"})
    queries = requests(windows, "IT", 5650, "twitter.com")
    assert asyncio.run(compare(b, queries)) == len(queries)
    asyncio.run(compare_overview(b))


# ---- the backfill and replayed inserts (chdb, through `oonibackend db`) ----

def _select(config: Path, data: Path, sql: str) -> list[dict]:
    f = data / "select.sql"
    f.write_text(sql, encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "oonibackend", "db", "exec", "--config",
                          str(config), "--data-dir", str(data), str(f)],
                         check=True, capture_output=True, timeout=300, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def _exec(config: Path, data: Path, sql: str) -> None:
    f = data / "exec.sql"
    f.write_text(sql, encoding="utf-8")
    db_exec(config, data, f)


TOTALS = """SELECT 'raw' AS t, count() AS n, countIf(msm_failure = 't') AS f FROM fastpath
UNION ALL SELECT 'daily', sum(n_measurement), sum(n_failure) FROM fastpath_daily
UNION ALL SELECT 'domain', sum(n_measurement), sum(n_failure) FROM fastpath_daily_domain"""


def totals(config: Path, data: Path) -> dict[str, tuple[int, int]]:
    return {r["t"]: (int(r["n"]), int(r["f"])) for r in _select(config, data, TOTALS)}


def test_backfill_of_existing_rows_once_and_replays_counted_once(tmp_path):
    config = write_config(tmp_path / "t.toml", {})
    sql_dir = tmp_path / "m"
    sql_dir.mkdir()
    # A database at schema version 11 holding rows: 0012 must bring them into the rollups.
    subprocess.run([sys.executable, "-m", "oonibackend", "db", "migrate", "--config",
                    str(config), "--data-dir", str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    _exec(config, tmp_path, """DROP VIEW fastpath_daily_mv;
DROP VIEW fastpath_daily_domain_mv;
DROP TABLE fastpath_daily;
DROP TABLE fastpath_daily_domain;
ALTER TABLE schema_migrations DELETE WHERE version = 12 SETTINGS mutations_sync = 1;
""" + batched(CITIZENLAB_SQL) + batched(FASTPATH_SQL))
    subprocess.run([sys.executable, "-m", "oonibackend", "db", "migrate", "--config",
                    str(config), "--data-dir", str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    t = totals(config, tmp_path)
    assert t["raw"][0] == 1080 and t["daily"] == t["domain"] == t["raw"]
    # The migration run again (interrupted after its backfill): nothing counted twice.
    db_exec(config, tmp_path, MIGRATIONS_DIR / "0012_rollups.sql")
    assert totals(config, tmp_path) == t
    # The fastpath's sink replays a batch with the same token after a crash: fastpath drops
    # it and so do the rollups; different batches with equal counts are both counted.
    row = ("INSERT INTO fastpath (measurement_uid, report_id, input, probe_cc, probe_asn, "
           "test_name, measurement_start_time, anomaly, confirmed, msm_failure, domain) "
           "SETTINGS insert_deduplication_token = '{tok}' VALUES ('{uid}', 'r', 'i', 'IT', 1, "
           "'web_connectivity', '2024-01-05 10:00:00', 'f', 'f', 't', 'a.org');\n")
    _exec(config, tmp_path, row.format(tok="b1", uid="u1") + row.format(tok="b1", uid="u1")
          + row.format(tok="b2", uid="u2") + row.format(tok="b3", uid="u3"))
    n, f = t["raw"]
    assert totals(config, tmp_path) == {k: (n + 3, f + 3) for k in t}
    # A re-processed measurement (same sort key, new scores): the rollups count it twice
    # until its days are rebuilt, then once, with the new scores, like fastpath FINAL.
    _exec(config, tmp_path, row.format(tok="b4", uid="u3").replace("'f', 'f', 't'",
                                                                    "'t', 'f', 'f'"))
    assert totals(config, tmp_path)["daily"] == (n + 4, f + 3)
    subprocess.run([sys.executable, "-m", "oonibackend", "db", "rebuild-rollups",
                    "--start-day", "2024-01-05", "--end-day", "2024-01-06", "--config",
                    str(config), "--data-dir", str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    _exec(config, tmp_path, "OPTIMIZE TABLE fastpath FINAL")
    assert totals(config, tmp_path) == {k: (n + 3, f + 2) for k in t}
    by_day = _select(config, tmp_path, """SELECT day, sum(n_anomaly) AS a FROM fastpath_daily
WHERE day = '2024-01-05' GROUP BY day""")
    assert by_day == [{"day": "2024-01-05", "a": 1}]
