"""QuotaStore against a real LMDB environment in a temporary directory."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import lmdb
import pytest

from oonibackend.clientip import network_key
from oonibackend.config import load
from oonibackend.quotas.keys import account_key, key_label
from oonibackend.quotas.store import PERIODS, REPLENISH_EVERY, Budgets, QuotaStore

BUDGETS = Budgets(daily=4000, weekly=20000, monthly=60000)
TOKEN = Budgets(daily=500, weekly=2000, monthly=6000)
NET = network_key("1.2.3.4")
T0 = 1_700_000_000.0


def store(path: Path, **kw) -> QuotaStore:
    kw.setdefault("cache_ttl", 0.0)  # read LMDB on every check; the cache has its own test
    return QuotaStore(path, BUDGETS, TOKEN, **kw)


@pytest.fixture
def qs(tmp_path: Path):
    s = store(tmp_path / "q")
    yield s
    s.close()


def test_absent_key_has_full_budget(qs: QuotaStore):
    assert qs.remaining(NET) == {"daily": 4000.0, "weekly": 20000.0, "monthly": 60000.0}
    assert qs.remaining(account_key("abc")) == {"daily": 500.0, "weekly": 2000.0,
                                                "monthly": 6000.0}


def test_pending_charges_count_before_flush(qs: QuotaStore):
    qs.charge(NET, 1.5)
    qs.charge(NET, 0.25)
    assert qs.remaining(NET)["daily"] == pytest.approx(3998.25)
    assert qs.has_pending()
    qs.flush(T0)
    assert not qs.has_pending()
    assert qs.remaining(NET) == {"daily": 3998.25, "weekly": 19998.25, "monthly": 59998.25}


def test_charges_accumulate_across_flushes(qs: QuotaStore):
    for _ in range(3):
        qs.charge(NET, 1.0)
        qs.flush(T0)
    assert qs.remaining(NET)["daily"] == pytest.approx(3997.0)


def test_in_flight_batch_still_counted(qs: QuotaStore):
    qs.charge(NET, 2.0)
    batch = qs.begin_flush()
    assert qs.remaining(NET)["daily"] == pytest.approx(3998.0)  # not yet written
    qs.write(batch, T0)
    # Written but end_flush not run yet (the event loop is busy): counted once, not twice.
    assert qs.remaining(NET)["daily"] == pytest.approx(3998.0)
    assert qs.lowest(1) == [("1.2.3.0/24", 3998.0)]
    qs.end_flush(batch, ok=True)
    assert qs.remaining(NET)["daily"] == pytest.approx(3998.0)
    qs.charge(NET, 1.0)
    qs.begin_flush()
    with pytest.raises(RuntimeError):  # one batch in flight at a time
        qs.begin_flush()


def test_failed_write_is_retried(qs: QuotaStore):
    qs.charge(NET, 2.0)
    batch = qs.begin_flush()
    qs.end_flush(batch, ok=False)
    assert qs.has_pending()
    qs.flush(T0)
    assert qs.remaining(NET)["daily"] == pytest.approx(3998.0)


def test_sub_millisecond_charges_count_on_average(qs: QuotaStore):
    for _ in range(2000):
        qs.charge(NET, 0.0003)  # 0.3 ms, written alone in each flush
        qs.flush(T0)
    spent_ms = (4000 - qs.remaining(NET)["daily"]) * 1000
    assert 450 < spent_ms < 750  # 600 expected; binomial sd ~20


def test_floor_at_zero(qs: QuotaStore):
    qs.charge(NET, 5000)
    qs.flush(T0)
    assert qs.remaining(NET) == {"daily": 0.0, "weekly": 15000.0, "monthly": 55000.0}


def test_token_budgets(qs: QuotaStore):
    k = account_key("71e398652ecfb1be6a2359923c7df008")
    qs.charge(k, 10)
    qs.flush(T0)
    assert qs.remaining(k) == {"daily": 490.0, "weekly": 1990.0, "monthly": 5990.0}
    assert key_label(k) == "account:71e398652ecfb1be6a2359923c7df008"


def test_two_stores_on_one_env_add_up(tmp_path: Path):
    """Two QuotaStore objects stand for two API processes sharing the directory."""
    a = store(tmp_path / "q")
    b = a.sibling()
    try:
        a.charge(NET, 3.0)
        b.charge(NET, 4.0)
        assert a.remaining(NET)["daily"] == pytest.approx(3997.0)
        assert b.remaining(NET)["daily"] == pytest.approx(3996.0)
        a.flush(T0)
        assert b.remaining(NET)["daily"] == pytest.approx(3993.0)  # a's write + b's pending
        b.flush(T0)
        assert a.remaining(NET)["daily"] == pytest.approx(3993.0)
        assert b.remaining(NET)["daily"] == pytest.approx(3993.0)
    finally:
        a.close()
        b.close()


def _spend(path: str, n: int) -> None:
    s = store(Path(path))
    for _ in range(n):
        s.charge(NET, 0.5)
        s.flush()
    s.close()


def test_two_processes_add_up_exactly(tmp_path: Path):
    path = tmp_path / "q"
    store(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spend, args=(str(path), 200)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = store(path)
    assert s.remaining(NET)["daily"] == pytest.approx(4000 - 2 * 200 * 0.5)
    s.close()


def test_replenish_once_for_all_stores(tmp_path: Path):
    a = store(tmp_path / "q")
    b = a.sibling()
    try:
        assert a.replenish(T0) is False  # first use: starts the clock
        a.charge(NET, 1000)
        a.flush(T0)
        assert a.remaining(NET)["daily"] == 3000
        assert not a.replenish_due(T0 + 3599)
        assert a.replenish_due(T0 + 3600)
        # Both processes notice the hour has passed; only the first one credits.
        assert a.replenish(T0 + 3600) is True
        assert b.replenish(T0 + 3600) is False
        assert b.replenish(T0 + 3601) is False
        day = 4000 * 3600 / PERIODS["daily"]  # 166.67 s per hour
        week = 20000 * 3600 / PERIODS["weekly"]
        month = 60000 * 3600 / PERIODS["monthly"]
        got = b.remaining(NET)
        assert got["daily"] == pytest.approx(3000 + day, abs=0.001)
        assert got["weekly"] == pytest.approx(19000 + week, abs=0.001)
        assert got["monthly"] == pytest.approx(59000 + month, abs=0.001)
        assert b.last_replenish() == T0 + 3600
    finally:
        a.close()
        b.close()


def test_replenish_during_flush(qs: QuotaStore):
    qs.charge(NET, 1000)
    qs.flush(T0)
    qs.charge(NET, 10)
    assert qs.flush(T0 + 2 * 3600) is True  # credit first, then this batch's charges
    day = 4000 * 7200 / PERIODS["daily"]
    assert qs.remaining(NET)["daily"] == pytest.approx(3000 + day - 10, abs=0.001)


def test_keys_back_at_full_budget_are_deleted(qs: QuotaStore):
    qs.replenish(T0)
    qs.charge(NET, 100)  # under one hour's daily credit (166 s) but not the monthly one (83 s)
    qs.flush(T0)
    qs.replenish(T0 + 3600)
    with qs.env.begin() as txn:
        assert txn.get(NET, db=qs._dbs["daily"]) is None
        assert txn.get(NET, db=qs._dbs["weekly"]) is None  # 119 s credit
        assert txn.get(NET, db=qs._dbs["monthly"]) is not None
    assert qs.remaining(NET)["daily"] == 4000
    qs.replenish(T0 + 2 * 3600)
    with qs.env.begin() as txn:
        assert txn.get(NET, db=qs._dbs["monthly"]) is None
    assert qs.lowest(5) == []


def test_clock_going_back_restarts_the_count(qs: QuotaStore):
    qs.replenish(T0)
    assert qs.replenish(T0 - 10_000) is False
    assert qs.last_replenish() == T0 - 10_000
    assert qs.replenish(T0 - 10_000 + 3600) is True


def test_retry_after(qs: QuotaStore):
    assert qs.retry_after(T0) == 3600  # never replenished yet
    qs.replenish(T0)
    assert qs.retry_after(T0 + 100) == 3500
    assert qs.retry_after(T0 + 3599.5) == 1
    assert qs.retry_after(T0 + 7200) == 1


def test_lowest(qs: QuotaStore):
    nets = {"1.2.3.4": 30, "5.6.7.8": 10, "2001:db8:1::5": 20, "9.9.9.9": 1}
    for ip, spent in nets.items():
        qs.charge(network_key(ip), spent)
    qs.charge(account_key("acc"), 499)
    qs.flush(T0)
    qs.charge(network_key("8.8.8.8"), 3000)  # pending only
    assert qs.lowest(3) == [("account:acc", 1.0), ("8.8.8.0/24", 1000.0),
                            ("1.2.3.0/24", 3970.0)]
    got = qs.lowest(20)
    assert [label for label, _ in got] == [
        "account:acc", "8.8.8.0/24", "1.2.3.0/24", "2001:db8:1::/48", "5.6.7.0/24", "9.9.9.0/24"]
    assert got[3][1] == 3980.0


def test_map_full_grows_the_map(tmp_path: Path):
    s = store(tmp_path / "q", map_size=64 * 1024)
    try:
        for i in range(5000):
            s.charge(network_key(f"10.{i // 256}.{i % 256}.1"), 1)
        s.flush(T0)
        assert s.env.info()["map_size"] > 64 * 1024
        assert s.remaining(network_key("10.19.135.1"))["daily"] == 3999
        assert len(s.lowest(10_000)) == 5000
    finally:
        s.close()


def _grow(path: str) -> None:
    s = store(Path(path), map_size=64 * 1024)
    for i in range(5000):
        s.charge(network_key(f"10.{i // 256}.{i % 256}.1"), 1)
    s.flush(T0)
    s.close()


def test_other_process_growing_the_map_is_adopted(tmp_path: Path):
    path = tmp_path / "q"
    a = store(path, map_size=64 * 1024)
    try:
        p = multiprocessing.get_context("spawn").Process(target=_grow, args=(str(path),))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        key = network_key("10.19.135.1")
        try:
            assert a.remaining(key)["daily"] == 3999
        except lmdb.MapResizedError:
            assert a.has_pending()  # the flusher will come and adopt the new size
        a.charge(key, 1)
        a.flush(T0)
        assert a.remaining(key)["daily"] == 3998
        assert len(a.lowest(10_000)) == 5000
    finally:
        a.close()


def test_from_config(tmp_path: Path):
    cfg = load(None, data_dir=str(tmp_path), **{"quotas.daily": 7, "quotas.token_daily": 3})
    s = QuotaStore.from_config(cfg)
    try:
        assert s.path == tmp_path / "quotas"
        assert s.remaining(NET)["daily"] == 7
        assert s.remaining(account_key("x"))["daily"] == 3
    finally:
        s.close()


def test_hot_path_is_fast(qs: QuotaStore):
    qs.charge(NET, 1)
    qs.flush(T0)
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        qs.remaining(NET)
        qs.charge(NET, 0.001)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 100e-6, per_call


def test_replenish_every_hour_constant():
    assert REPLENISH_EVERY == 3600


def test_reads_are_cached_until_the_ttl_or_a_flush(tmp_path, monkeypatch):
    """The hot path reads LMDB once per key per TTL; another process's charges show up after
    it, this process's own writes at once (its flush clears the cache)."""
    clock = [1000.0]
    monkeypatch.setattr("oonibackend.quotas.store.time.monotonic", lambda: clock[0])
    a = store(tmp_path / "q", cache_ttl=1.0)
    b = a.sibling()
    assert b.remaining(NET)["daily"] == pytest.approx(4000.0)
    a.charge(NET, 5)
    a.flush(T0)
    assert b.remaining(NET)["daily"] == pytest.approx(4000.0)  # cached
    clock[0] += 1.5
    assert b.remaining(NET)["daily"] == pytest.approx(3995.0)  # TTL passed
    b.charge(NET, 1)
    b.flush(T0)
    assert b.remaining(NET)["daily"] == pytest.approx(3994.0)  # own flush clears the cache
