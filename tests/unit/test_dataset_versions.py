"""Dataset versions: bump/current, and the refreshers reloading at once on a version change
(check-in's URL snapshot, the fastpath's fingerprints), without waiting for their period."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from oonibackend.metrics import Metrics
from oonibackend.prioritization.snapshot import URLListStore
from oonibackend.storage import DatabaseUnavailable, versions
from workers.intake.refresh import FingerprintRefresher

URL = {"domain": "n.org", "url": "https://n.org/", "cc": "ZZ", "category_code": "NEWS"}
RULE = {"category_code": "NEWS", "cc": "*", "domain": "*", "url": "*", "priority": 10,
        "sign": 1}
FP = {"name": "x", "scope": "nat", "other_names": "", "location_found": "dns",
      "pattern_type": "full", "pattern": "1.2.3.4", "confidence_no_fp": 5,
      "expected_countries": ""}


class FakeDB:
    """Just enough SQL: dataset_versions rows, the snapshot's three queries, fingerprints."""

    def __init__(self) -> None:
        self.rows: list[dict] = []  # dataset_versions
        self.citizenlab: list[dict] = []
        self.fingerprints: list[dict] = []
        self.loads = 0
        self.polls = 0
        self.fail_polls = False

    async def query(self, sql, params=None, settings=None):
        if "dataset_versions" in sql:
            self.polls += 1
            if self.fail_polls:
                raise DatabaseUnavailable("down")
            out: dict[str, int] = {}
            for r in self.rows:
                out[r["name"]] = max(out.get(r["name"], 0), r["version"])
            return [{"name": n, "v": v} for n, v in out.items()]
        if "FROM citizenlab" in sql:
            self.loads += 1
            return list(self.citizenlab)
        if "url_priorities" in sql:
            return [RULE]
        if "fingerprints_dns" in sql:
            self.loads += 1
            return list(self.fingerprints)
        if "fingerprints_http" in sql:
            return []
        return []  # counters

    async def insert(self, table, rows, columns=None, settings=None):
        assert table == "dataset_versions" and tuple(columns) == ("name", "version")
        self.rows.extend(dict(r) for r in rows)


async def test_bump_and_current():
    db = FakeDB()
    assert await versions.current(db) == {}
    before = time.time_ns()
    v1 = await versions.bump(db, versions.CITIZENLAB)
    assert v1 is not None and v1 >= before
    # A clock behind the stored version (another host, a step back) still moves it forward.
    db.rows.append({"name": versions.URL_PRIORITIES, "version": 2 * v1})
    v2 = await versions.bump(db, versions.URL_PRIORITIES)
    assert v2 == 2 * v1 + 1
    assert await versions.current(db) == {"citizenlab": v1, "url_priorities": v2}


async def test_bump_failure_does_not_fail_the_job(caplog):
    db = FakeDB()
    db.fail_polls = True
    with caplog.at_level(logging.WARNING):
        assert await versions.bump(db, versions.ASNMETA) is None
    assert "cannot record the new dataset version" in caplog.text


async def test_watcher_logs_a_failure_streak_once(caplog):
    db = FakeDB()
    w = versions.Watcher(db, (versions.CITIZENLAB,), "test")
    await w.seen()
    assert w.loaded == {} and not await w.changed()
    db.fail_polls = True
    with caplog.at_level(logging.DEBUG, logger="oonibackend.storage.versions"):
        for _ in range(5):
            assert not await w.changed()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and w.failures == 5
    db.fail_polls = False
    await versions.bump(db, versions.FINGERPRINTS)  # not watched
    assert not await w.changed() and w.failures == 0
    await versions.bump(db, versions.CITIZENLAB)
    assert await w.changed()


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def run_for(coro, seconds: float) -> None:
    task = asyncio.create_task(coro)
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_url_store_reloads_on_a_version_change():
    db = FakeDB()
    store = URLListStore(db, 3600, poll=0.02)
    assert await store.refresh()
    assert len(store.snapshot) == 0 and db.loads == 1
    task = asyncio.create_task(store.run(first_delay=store.interval))
    try:
        await asyncio.sleep(0.1)
        assert db.loads == 1 and db.polls >= 3  # polled, nothing changed: no reload
        db.citizenlab = [URL]
        await versions.bump(db, versions.FINGERPRINTS)  # not a check-in input
        await asyncio.sleep(0.1)
        assert db.loads == 1 and len(store.snapshot) == 0
        await versions.bump(db, versions.CITIZENLAB)
        await until(lambda: len(store.snapshot) == 1)
        assert db.loads == 2
        await versions.bump(db, versions.URL_PRIORITIES)
        await until(lambda: db.loads == 3)
    finally:
        task.cancel()


async def test_url_store_without_polling_never_queries_versions():
    db = FakeDB()
    store = URLListStore(db, 0.05)
    await run_for(store.run(), 0.2)
    assert db.polls == 0 and db.loads >= 2  # interval is at least 0.1 s


async def test_url_store_catches_up_once_the_poll_works_again():
    """Versions unknown at the last load (poll failed): reload once the poll succeeds."""
    db = FakeDB()
    db.fail_polls = True
    store = URLListStore(db, 3600, poll=0.02)
    assert await store.refresh() and db.loads == 1
    task = asyncio.create_task(store.run(first_delay=store.interval))
    try:
        await asyncio.sleep(0.1)
        assert db.loads == 1
        db.fail_polls = False
        await until(lambda: db.loads == 2)
        await asyncio.sleep(0.1)
        assert db.loads == 2  # once, not at every poll
    finally:
        task.cancel()


async def test_fingerprint_refresher_reloads_on_a_version_change():
    db = FakeDB()
    loaded: list[int] = []
    ref = FingerprintRefresher(db, 3600, lambda dns, http: loaded.append(len(dns)),
                               Metrics(), poll=0.02)
    assert await ref.load() and loaded == [0]
    task = asyncio.create_task(ref.run(first_delay=ref.interval))
    try:
        await asyncio.sleep(0.1)
        assert loaded == [0]
        db.fingerprints = [FP]
        await versions.bump(db, versions.CITIZENLAB)  # not the fastpath's
        await asyncio.sleep(0.1)
        assert loaded == [0]
        await versions.bump(db, versions.FINGERPRINTS)
        await until(lambda: ref.count == 1)
        assert loaded == [0, 1]
    finally:
        task.cancel()
