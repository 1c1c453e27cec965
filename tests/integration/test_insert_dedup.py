"""Insert deduplication on the real engine (migration 0007 + insert_deduplication_token), through
the embedded owner (HTTPDatabase, settings inlined) and chdb in-process: a batch inserted
again with the same token is dropped, counts without FINAL stay exact."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from oonibackend.storage import Database, migrate
from oonibackend.storage.chdb_local import ChdbDatabase
from oonibackend.storage.http import HTTPDatabase
from tests.clickhouse_server import OwnerProcess


def row(uid: str, table: str) -> dict:
    t = dt.datetime(2024, 1, 2, 3, 4, 5)
    if table == "obs_openvpn":
        # (its sorting key has no uid: distinct inputs, or a merge collapses the rows)
        return {"measurement_uid": uid, "report_id": "r", "input": f"vpn://{uid}",
                "measurement_start_time": t, "test_start_time": t}
    return {"measurement_uid": uid, "report_id": "r", "input": "https://example.org/",
            "probe_cc": "IT", "probe_asn": 1, "test_name": "web_connectivity",
            "test_start_time": t, "measurement_start_time": t, "anomaly": "f",
            "confirmed": "f", "msm_failure": "f"}


async def check(db: Database, prefix: str) -> None:
    await migrate.migrate(db)
    for table in ("fastpath", "obs_openvpn"):
        create = (await db.query(f"SHOW CREATE TABLE {table}"))[0]
        assert "non_replicated_deduplication_window = 1000" in next(iter(create.values()))
        rows = [row(f"{prefix}-{table}-{i}", table) for i in range(5)]
        token = {"insert_deduplication_token": f"{prefix}-{table}-batch"}
        await db.insert(table, rows, settings=token)
        await db.insert(table, rows, settings=token)  # a replay: dropped
        await db.insert(table, rows[:2], settings=token)  # a replay of part of it: dropped
        q = (f"SELECT count() AS n, uniqExact(measurement_uid) AS u FROM {table} "
             f"WHERE startsWith(measurement_uid, %(p)s)")
        assert await db.query_one(q, {"p": f"{prefix}-{table}-"}) == {"n": 5, "u": 5}
        # Another token is another batch (the same rows really are inserted again).
        await db.insert(table, rows[:1], settings={"insert_deduplication_token": "other"})
        assert await db.query_one(q, {"p": f"{prefix}-{table}-"}) == {"n": 6, "u": 5}


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnerProcess]:
    o = OwnerProcess(tmp_path_factory.mktemp("owner-dedup")).start()
    yield o
    assert o.stop() == 0, o.output()


async def test_dedup_through_the_owner(owner):
    db = HTTPDatabase(owner.config())
    try:
        await check(db, "http")
    finally:
        await db.close()


async def test_dedup_in_process(tmp_path):
    db = ChdbDatabase(str(tmp_path / "db"))
    db.open()
    try:
        await check(db, "chdb")
    finally:
        db.close_sync()


# ---- a server without insert_deduplication_token (Debian's 18.16) ---------------------------


@pytest.fixture(scope="module")
def old_server(tmp_path_factory: pytest.TempPathFactory):
    from tests.clickhouse_server import ClickHouseServer, find_binary

    if find_binary() is None:
        pytest.skip("clickhouse-server binary not installed")
    s = ClickHouseServer(tmp_path_factory.mktemp("clickhouse-old"))
    s.start()
    yield s
    s.stop()


@pytest.mark.clickhouse_server
@pytest.mark.parametrize("driver", ["native", "http"])
async def test_sink_goes_on_without_tokens_on_an_old_server(old_server, driver):
    """The sink sends its token; a server that does not know the setting (code 115) gets the
    batch without it (at-least-once, as before), instead of a retry loop forever. (18.16 is
    too old for the OONI schema, hence a table of its own.)"""
    from oonibackend import config, storage
    from oonibackend.metrics import Metrics
    from tests.unit.test_intake_sink import item, wait_until
    from workers.intake.sink import Sink

    url = old_server.native_url if driver == "native" else old_server.http_url
    cfg = config.load(None, **{"database.driver": driver, "database.url": url,
                               "database.connect_timeout": 2.0, "database.read_timeout": 30.0})
    db = storage.connect(cfg)
    table = f"dedup_{driver}"
    try:
        await db.execute(f"CREATE TABLE IF NOT EXISTS {table} (measurement_uid String) "
                         "ENGINE = MergeTree ORDER BY measurement_uid")
        committed: list = []
        sink = Sink(db, batch_size=2, batch_interval=0.05, retry_max=0.05, retry_min=0.01,
                    metrics=Metrics("t"), on_committed=committed.extend)
        sink.start()
        items = [item(1), item(2)]
        for it in items:
            sink.add(it, {table: [{"measurement_uid": it.uid}]})
        await wait_until(lambda: len(committed) == 2, timeout=20)
        await sink.close()
        # http: refused with code 115, then sent without. native: asynch itself leaves out a
        # setting it has no type for when the server is too old for settings as strings.
        assert sink.dedup is (driver == "native")
        assert await db.query_one(f"SELECT count() AS n FROM {table}") == {"n": 2}
    finally:
        await db.close()
