"""The reprocessing writer: batches, retries, rejected rows, resume keys (no database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oonibackend.storage import DatabaseError, DatabaseUnavailable
from workers.reprocess import BatchWriter, Stats, _split_by_columns
from workers.sources.state import DoneLog


class FakeDB:
    def __init__(self, unavailable: int = 0, permanent: int = 0) -> None:
        self.unavailable = unavailable
        self.permanent = permanent
        self.inserted: list[tuple[str, list[dict]]] = []
        self.calls = 0

    async def insert(self, table, rows, columns=None, settings=None):
        self.calls += 1
        if self.unavailable:
            self.unavailable -= 1
            raise DatabaseUnavailable("connection refused")
        if self.permanent:
            self.permanent -= 1
            raise DatabaseError("Code: 60. unknown table")
        if any(r.get("bad") for r in rows):
            e = DatabaseError("Code: 27. cannot parse input")
            e.code = 27  # type: ignore[attr-defined]
            raise e
        assert columns == list(rows[0])
        self.inserted.append((table, list(rows)))


def rows(n: int, start: int = 0, **kw) -> list[dict]:
    return [{"measurement_uid": f"u{i}", "x": i, **kw} for i in range(start, start + n)]


async def test_batches_then_keys(tmp_path: Path):
    db = FakeDB(unavailable=2)
    done = DoneLog(tmp_path / "r.done")
    messages: list[str] = []
    w = BatchWriter(db, done, batch_size=3, retry_max=0.01, stats=Stats(), say=messages.append)
    w.add({"fastpath": rows(2)})
    w.object_done("k1")
    assert not w.full
    w.add({"fastpath": rows(2, 2), "obs_openvpn": rows(1)})
    assert w.full
    await w.flush()  # in the background, with the key of the object finished before it
    w.object_done("k2")
    await w.close()
    assert [(t, len(r)) for t, r in db.inserted] == [("fastpath", 3), ("fastpath", 1),
                                                      ("obs_openvpn", 1)]
    assert sum("database unavailable" in m for m in messages) == 2
    assert (tmp_path / "r.done").read_text() == "k1\nk2\n"
    assert w.stats.rows == {"fastpath": 4, "obs_openvpn": 1}


async def test_rejected_rows_are_isolated_and_kept(tmp_path: Path):
    db = FakeDB()
    rejected = tmp_path / "r.rejected.jsonl"
    w = BatchWriter(db, None, batch_size=100, retry_max=0.01, stats=Stats(),
                    rejected_path=rejected)
    batch = rows(7) + rows(1, 7, bad=True) + rows(4, 8)
    w.add({"fastpath": batch})
    await w.close()
    assert sorted(r["x"] for _, part in db.inserted for r in part) == \
        [i for i in range(12) if i != 7]
    lines = [json.loads(x) for x in rejected.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["row"]["x"] == 7 and "Code: 27" in lines[0]["error"]
    assert w.stats.rejected == 1


async def test_permanent_error_fails_the_run():
    db = FakeDB(permanent=100)
    w = BatchWriter(db, None, batch_size=1, retry_max=0.01, stats=Stats())
    w.add({"fastpath": rows(1)})
    with pytest.raises(DatabaseError, match="unknown table"):
        await w.close()
    assert db.calls == 5


async def test_dry_run_writes_nothing():
    w = BatchWriter(None, None, batch_size=1, retry_max=0.01, stats=Stats())
    w.add({"fastpath": rows(3)})
    w.object_done("k")
    await w.close()
    assert w.stats.rows == {"fastpath": 3}


def test_split_by_columns():
    parts = list(_split_by_columns([{"a": 1}, {"a": 2, "b": 1}, {"a": 3}]))
    assert parts == [[{"a": 1}, {"a": 3}], [{"a": 2, "b": 1}]]
