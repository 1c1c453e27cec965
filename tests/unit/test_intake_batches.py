"""No duplicates across a crash: the sink records each batch (entries + deduplication token)
before inserting it, and after a "crash" between the insert and the commit a new sink
inserts the same entries with the same token, which the (fake) database drops."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from oonibackend.metrics import Metrics
from oonibackend.storage import DatabaseError
from tests.unit.test_intake_sink import FakeDB, Item, item, wait_until
from workers.intake.batches import BatchJournal, Group, Manifest
from workers.intake.queue import IntakeQueue
from workers.intake.sink import Sink


class DedupDB(FakeDB):
    """FakeDB that records each insert's token and, like ClickHouse with
    non_replicated_deduplication_window, drops an insert whose token the table has seen.
    `hang_after`: inserts after that many hang forever once stored (the answer is lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[tuple[str, str | None]] = []  # (table, token) of every attempt
        self.seen: set[tuple[str, str]] = set()
        self.dropped: list[tuple[str, str]] = []
        self.hang_after: int | None = None
        self.stored = 0

    async def insert(self, table, rows, columns=None, settings=None):
        token = (settings or {}).get("insert_deduplication_token")
        self.tokens.append((table, token))
        if token is not None and (table, token) in self.seen:
            self.attempts += 1
            self.dropped.append((table, token))
            return
        await super().insert(table, rows, columns, settings)
        if token is not None:
            self.seen.add((table, token))
        self.stored += 1
        if self.hang_after is not None and self.stored > self.hang_after:
            await asyncio.Event().wait()  # stored, then the process dies before the answer

    def uids(self, table: str = "fastpath") -> list[str]:
        return [r["measurement_uid"] for r in self.rows(table)]


def rows_of(it: Item, **extra) -> dict[str, list[dict]]:
    return {"fastpath": [{"measurement_uid": it.uid, **extra}]}


def make(db: FakeDB, journal: BatchJournal | None, committed: list, rejected: list | None = None,
         **kw) -> Sink:
    async def on_rejected(it, reason):
        assert rejected is not None
        rejected.append(it)
        committed.append(it)  # the service quarantines, then commits

    opts = {"batch_size": 4, "batch_interval": 60.0, "retry_max": 0.05, "retry_min": 0.01}
    opts.update(kw)
    return Sink(db, metrics=Metrics("t"), on_committed=committed.extend,
                on_rejected=on_rejected, journal=journal, **opts)


def journal(tmp_path: Path, sync: bool = False) -> BatchJournal:
    return BatchJournal(tmp_path / "batches", sync=sync)


async def crash(sink: Sink) -> None:
    """The process dies: nothing after this point happens (no commit, no cleanup)."""
    assert sink._task is not None
    sink._task.cancel()
    await asyncio.gather(sink._task, return_exceptions=True)


async def test_every_insert_carries_a_recorded_token_removed_after_commit(tmp_path):
    db, committed, j = DedupDB(), [], journal(tmp_path)
    seen_during_insert: list[list[Manifest]] = []
    real_insert = db.insert

    async def insert(table, rows, columns=None, settings=None):
        seen_during_insert.append(j.load())
        await real_insert(table, rows, columns, settings)

    db.insert = insert  # type: ignore[method-assign]
    s = make(db, j, committed)
    s.start()
    items = [item(i) for i in range(8)]
    for it in items:
        s.add(it, rows_of(it))
    await wait_until(lambda: len(committed) == 8)
    tokens = [t for _, t in db.tokens]
    assert len(tokens) == 2 and len(set(tokens)) == 2 and all(tokens)
    # While inserting, the journal held exactly that batch: its token and entries.
    for (m,), token, batch in zip(seen_during_insert, tokens, (items[:4], items[4:]),
                                  strict=True):
        assert [(g.token, g.uids) for g in m.groups] == [(token, [i.uid for i in batch])]
    assert list(j.names()) == []  # committed: forgotten
    await s.close()


@pytest.mark.parametrize("sync", [False, True])
async def test_crash_between_insert_and_commit_replays_the_same_batch(tmp_path, sync):
    db, committed, j = DedupDB(), [], journal(tmp_path, sync)
    db.hang_after = 1  # the second batch is stored, then the process "dies"
    s = make(db, j, committed)
    s.start()
    items = [item(i) for i in range(8)]
    for it in items:
        s.add(it, rows_of(it))
    await wait_until(lambda: db.stored == 2)
    await crash(s)
    assert committed == items[:4]  # the second batch is in the database, not committed
    (m,) = j.load()
    token = m.groups[0].token
    assert m.groups[0].uids == [i.uid for i in items[4:]]
    assert db.tokens[-1] == ("fastpath", token)

    # Restart: the queue hands back the uncommitted entries (new objects), plus new ones.
    db.hang_after = None
    again = {i.uid: Item(i.uid) for i in items[4:]}
    committed2: list = []
    s2 = make(db, j, committed2)
    todo = s2.recover(j.load(), again.get)
    assert [i.uid for i in todo] == [i.uid for i in items[4:]]
    s2.start()
    fresh = [item(100 + i) for i in range(3)]
    order = list(todo) + fresh
    random.Random(1).shuffle(order)  # scored in any order, mixed with new measurements
    for it in order:
        s2.add(it, rows_of(it))
    await wait_until(lambda: len(committed2) == 4)
    # Replayed with the same token and the same entries, in the recorded order ...
    assert db.dropped == [("fastpath", token)]
    assert sorted(committed2, key=lambda i: i.uid) == sorted(todo, key=lambda i: i.uid)
    # ... and dropped by the database: every uid once.
    assert sorted(db.uids()) == sorted(i.uid for i in items)
    assert list(j.names()) == []
    await s2.close()
    assert sorted(db.uids()) == sorted(i.uid for i in items + fresh)


async def test_replay_of_a_batch_never_inserted_inserts_it(tmp_path):
    db, committed, j = DedupDB(), [], journal(tmp_path)
    db.fail = 10 ** 9  # database down: recorded, never inserted
    s = make(db, j, committed)
    s.start()
    items = [item(i) for i in range(4)]
    for it in items:
        s.add(it, rows_of(it))
    await wait_until(lambda: db.attempts >= 1)
    await crash(s)
    (m,) = j.load()
    db.fail = 0
    committed2: list = []
    s2 = make(db, j, committed2)
    todo = s2.recover(j.load(), {i.uid: i for i in items}.get)
    s2.start()
    for it in reversed(todo):
        s2.add(it, rows_of(it))
    await wait_until(lambda: len(committed2) == 4)
    assert db.uids() == [i.uid for i in items]  # the recorded order
    assert db.tokens[-1] == ("fastpath", m.groups[0].token) and not db.dropped
    await s2.close()


async def test_retry_after_a_lost_answer_is_dropped_by_the_token(tmp_path):
    """The insert succeeds but its answer is lost (owner killed, timeout): the retry carries
    the same token, so the database keeps one copy."""
    db, committed = DedupDB(), []
    real = DedupDB.insert
    lost = [True]

    async def insert(table, rows, columns=None, settings=None):
        await real(db, table, rows, columns, settings)
        if lost.pop() if lost else False:
            from oonibackend.storage import DatabaseUnavailable
            raise DatabaseUnavailable("connection reset")

    db.insert = insert  # type: ignore[method-assign]
    s = make(db, None, committed, batch_size=2)  # no journal: tokens still protect retries
    s.start()
    a, b = item(1), item(2)
    s.add(a, rows_of(a))
    s.add(b, rows_of(b))
    await wait_until(lambda: len(committed) == 2)
    assert len(db.tokens) == 2 and db.tokens[0] == db.tokens[1] and len(db.dropped) == 1
    assert db.uids() == [a.uid, b.uid]
    await s.close()


async def test_entries_committed_since_are_left_out_of_the_replay(tmp_path):
    """A crash in the middle of the queue's commit: some entries of the batch are marked.
    The rest is replayed with the batch's token (the batch is in the database: dropped)."""
    j = journal(tmp_path)
    items = [item(i) for i in range(4)]
    j.write(Manifest("t1", [Group("t1", [i.uid for i in items])]))
    db, committed = DedupDB(), []
    db.seen.add(("fastpath", "t1"))
    s = make(db, j, committed)
    left = {i.uid: i for i in items[2:]}
    todo = s.recover(j.load(), left.get)
    assert todo == items[2:]
    s.start()
    for it in todo:
        s.add(it, rows_of(it))
    await wait_until(lambda: len(committed) == 2)
    assert db.dropped == [("fastpath", "t1")] and db.uids() == []
    assert list(j.names()) == []
    await s.close()


async def test_a_manifest_whose_entries_are_all_committed_is_removed(tmp_path):
    j = journal(tmp_path)
    j.write(Manifest("t1", [Group("t1", ["a", "b"])]))
    s = make(DedupDB(), j, [])
    assert s.recover(j.load(), lambda uid: None) == []
    assert list(j.names()) == []


async def test_replayed_entry_that_fails_scoring_is_recorded_out_first(tmp_path):
    j = journal(tmp_path)
    items = [item(i) for i in range(3)]
    j.write(Manifest("t1", [Group("t1", [i.uid for i in items])]))
    db, committed = DedupDB(), []
    s = make(db, j, committed)
    recorded: list[list[str]] = []
    real_write = j.write

    def write(m, *, sync=True, sync_dir=False):
        recorded.append(list(m.groups[0].uids))
        real_write(m, sync=sync, sync_dir=sync_dir)

    j.write = write  # type: ignore[method-assign]
    todo = s.recover(j.load(), {i.uid: i for i in items}.get)
    s.start()
    s.add(todo[0], rows_of(todo[0]))
    s.discard(todo[1])  # quarantined by the service (the worker died on it twice)
    await asyncio.sleep(0.05)
    assert db.tokens == []  # still waiting for the last one
    s.add(todo[2], rows_of(todo[2]))
    await wait_until(lambda: len(committed) == 2)
    # The group was rewritten without the quarantined entry before the insert (same token).
    assert recorded[0] == [items[0].uid, items[2].uid]
    assert db.tokens == [("fastpath", "t1")] and db.uids() == [items[0].uid, items[2].uid]
    await s.close()


async def test_pool_is_never_blocked_while_recorded_batches_wait(tmp_path):
    j = journal(tmp_path)
    items = [item(i) for i in range(3)]
    j.write(Manifest("t1", [Group("t1", [i.uid for i in items])]))
    db, committed = DedupDB(), []
    db.fail = 10 ** 9
    s = make(db, j, committed, batch_size=1, max_buffered=1)
    todo = s.recover(j.load(), {i.uid: i for i in items}.get)
    s.start()
    other = item(50)
    s.add(other, rows_of(other))  # fills the buffer; the database is down
    for it in todo:
        await asyncio.wait_for(s.wait_for_room(), 1)  # the replay's items must get through
        s.add(it, rows_of(it))
    db.fail = 0
    await wait_until(lambda: len(committed) == 4)
    await s.close()


async def test_split_batches_get_deterministic_tokens_and_keep_what_is_inserted(tmp_path):
    """obs_openvpn rejects one row: the fastpath rows (inserted by the whole batch) are not
    inserted again by the halves; each half has a token derived from the batch's."""
    db, committed, rejected, j = DedupDB(), [], [], journal(tmp_path)
    s = make(db, j, committed, rejected, batch_size=8)  # one batch (2 rows per item)
    s.start()
    items = [item(i) for i in range(4)]
    for i, it in enumerate(items):
        s.add(it, {"fastpath": [{"measurement_uid": it.uid}],
                   "obs_openvpn": [{"measurement_uid": it.uid, "bad": i == 3}]})
    await wait_until(lambda: len(committed) == 4)
    assert rejected == [items[3]]
    assert sorted(db.uids()) == sorted(i.uid for i in items)  # once each
    assert sorted(db.uids("obs_openvpn")) == sorted(i.uid for i in items[:3])
    token = db.tokens[0][1]
    assert token is not None
    derived = [t for table, t in db.tokens if table == "obs_openvpn" and t != token]
    assert derived and all(t.startswith(token + ".") for t in derived)
    assert {t for table, t in db.tokens if table == "fastpath"} == {token}
    assert list(j.names()) == []
    await s.close()


async def test_crash_after_a_split_replays_the_recorded_halves(tmp_path):
    j = journal(tmp_path)
    a, b, c = item(1), item(2), item(3)
    # The batch "t" was split; its first half "t.0" is done (left the file); "t.1" was
    # recorded with obs_openvpn already inserted by "t".
    j.write(Manifest("t", [Group("t.1", [b.uid, c.uid], frozenset({"fastpath"}))]))
    db, committed = DedupDB(), []
    s = make(db, j, committed)
    todo = s.recover(j.load(), {b.uid: b, c.uid: c}.get)
    s.start()
    for it in todo:
        s.add(it, {"fastpath": [{"measurement_uid": it.uid}],
                   "obs_openvpn": [{"measurement_uid": it.uid}]})
    await wait_until(lambda: len(committed) == 2)
    assert db.tokens == [("obs_openvpn", "t.1")]  # fastpath skipped: it has them
    assert list(j.names()) == []
    await s.close()
    del a


async def test_server_without_deduplication_tokens(tmp_path):
    class OldServer(FakeDB):
        async def insert(self, table, rows, columns=None, settings=None):
            if settings:
                self.attempts += 1
                e = DatabaseError("Code: 115. DB::Exception: Unknown setting "
                                  "insert_deduplication_token")
                e.code = 115  # type: ignore[attr-defined]
                raise e
            await super().insert(table, rows, columns, settings)

    db, committed = OldServer(), []
    s = make(db, journal(tmp_path), committed, batch_size=1)
    s.start()
    s.add(item(1), rows_of(item(1)))
    await wait_until(lambda: committed)
    assert s.dedup is False and db.attempts == 2 and len(db.rows()) == 1
    await s.close()


async def test_journal_failure_inserts_anyway(tmp_path):
    j = journal(tmp_path)

    def broken(m, *, sync=True, sync_dir=False):
        raise OSError(28, "No space left on device")

    j.write = broken  # type: ignore[method-assign]
    db, committed = DedupDB(), []
    s = make(db, j, committed, batch_size=2)
    s.start()
    s.add(item(1), rows_of(item(1)))
    s.add(item(2), rows_of(item(2)))
    await wait_until(lambda: len(committed) == 2)
    assert len(db.rows()) == 2 and db.tokens[0][1]
    await s.close()


def test_journal_files(tmp_path):
    j = BatchJournal(tmp_path / "b")
    assert j.load() == []
    m = Manifest("x", [Group("x.0", ["u1", "u2"], frozenset({"fastpath"})),
                       Group("x.1", ["u3"])])
    j.write(m)
    (tmp_path / "b" / "y.batch.tmp").write_bytes(b'{"gro')  # never renamed into place
    (tmp_path / "b" / "z.batch").write_bytes(b"garbage")
    loaded = j.load()
    assert [(g.token, g.uids, g.skip) for g in loaded[0].groups] == [
        ("x.0", ["u1", "u2"], frozenset({"fastpath"})), ("x.1", ["u3"], frozenset())]
    assert len(loaded) == 1 and not (tmp_path / "b" / "y.batch.tmp").exists()
    assert json.loads((tmp_path / "b" / "x.batch").read_bytes())["groups"][1]["uids"] == ["u3"]
    j.remove(m)
    j.remove(m)
    assert list(j.names()) == ["z"]


async def test_queue_hands_out_the_recorded_entries_first(tmp_path):
    """With the real intake queue: a restart re-queues everything uncommitted, the sink
    claims the recorded batch's entries, and the queue hands those out first."""
    q = IntakeQueue(tmp_path / "q", 100, sync=False)
    await q.open()
    uids = [item(i).uid for i in range(10)]
    for u in uids:
        await q.put(u, b"{}")
    got = [await q.get() for _ in range(10)]
    q.commit(got[:2])
    await q.close()

    j = journal(tmp_path)
    j.write(Manifest("t", [Group("t", [uids[1], uids[7], uids[8]])]))  # 1 committed since
    q2 = IntakeQueue(tmp_path / "q", 100, sync=False)
    assert await q2.open() == 8
    s = make(DedupDB(), j, [])
    todo = s.recover(j.load(), q2.entry)
    assert [e.uid for e in todo] == [uids[7], uids[8]]
    q2.prioritize(todo)
    order = [(await q2.get()).uid for _ in range(8)]
    assert order == [uids[7], uids[8]] + [u for u in uids[2:] if u not in (uids[7], uids[8])]
    await q2.close()


@pytest.mark.parametrize("seed", range(5))
async def test_random_crashes_never_duplicate_nor_lose(tmp_path, seed):
    """Random batches, random crashes during or after inserts; every run restarts from the
    uncommitted entries and the journal. In the end: every item exactly once."""
    rnd = random.Random(seed)
    j = journal(tmp_path)
    db = DedupDB()
    pending = {i.uid: i for i in (item(n) for n in range(60))}
    for _ in range(20):
        if not pending:
            break
        committed: list = []
        db.hang_after = db.stored + rnd.randint(0, 3) if rnd.random() < 0.7 else None
        s = make(db, j, committed, batch_size=rnd.randint(1, 7))
        todo = s.recover(j.load(), pending.get)
        s.start()
        rest = [i for u, i in pending.items() if i not in todo]
        order = list(todo) + rest
        for it in order:
            s.add(it, rows_of(it))
        await asyncio.sleep(0.02)
        await crash(s)
        for it in committed:
            pending.pop(it.uid, None)
    db.hang_after = None
    committed = []
    s = make(db, j, committed, batch_size=5, batch_interval=0.01)
    todo = s.recover(j.load(), pending.get)
    s.start()
    for it in list(todo) + [i for i in pending.values() if i not in todo]:
        s.add(it, rows_of(it))
    await wait_until(lambda: len(committed) == len(pending))
    await s.close()
    assert sorted(db.uids()) == sorted(item(n).uid for n in range(60))


# ---- re-deliveries of committed measurements ---------------------------------------------------


async def test_a_committed_uid_delivered_again_is_not_queued_again(tmp_path):
    """The API lost its "delivered" marks in a crash and delivers again: the queue answers
    for what it committed lately (even across its own restart) without queueing it."""
    q = IntakeQueue(tmp_path / "q", 100, sync=False)
    await q.open()
    await q.put("u1", b"{}")
    await q.put("u2", b"{}")
    e1 = await q.get()
    q.commit([e1])
    await q.put("u1", b"{}")  # delivered again: already in the database
    assert q.depth == 1 and q.pending == 1
    await q.close()
    q2 = IntakeQueue(tmp_path / "q", 100, sync=False)
    assert await q2.open() == 1  # u2
    await q2.put("u1", b"{}")
    assert q2.depth == 1
    e2 = await q2.get()
    assert e2.uid == "u2"
    q2.commit([e2])
    await q2.put("u2", b"{}")
    assert q2.depth == 0
    await q2.close()


def test_committed_log_keeps_two_generations(tmp_path):
    from workers.intake.recent import CommittedLog

    log = CommittedLog(tmp_path, keep=3)
    assert log.open() == 0
    log.add(["a", "b"])
    log.add(["c"])  # rotates: a b c are the older generation
    log.add(["d", "e", "f"])  # rotates again: a b c forgotten
    log.add(["g"])
    assert "a" not in log and all(u in log for u in "defg")
    log.close()
    with open(tmp_path / "committed.1", "ab") as f:
        f.write(b"tor")  # a torn line
    again = CommittedLog(tmp_path, keep=3)
    assert again.open() == 4 and "tor" not in again and "g" in again
    again.close()
