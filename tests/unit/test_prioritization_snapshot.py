"""The in-memory snapshot: same lists as the pure pipeline, cached, and refreshed safely."""

from __future__ import annotations

import asyncio
import json
import random

from oonibackend.metrics import Metrics
from oonibackend.prioritization import snapshot as snapshot_mod
from oonibackend.prioritization.rules import Candidate, generate_test_list, net_rules
from oonibackend.prioritization.snapshot import Snapshot, URLListStore
from oonibackend.storage import DatabaseUnavailable
from tests.conftest import FIXTURES

RULES = [
    {"category_code": "NEWS", "cc": "*", "domain": "*", "url": "*", "priority": 100, "sign": 1},
    {"category_code": "MISC", "cc": "*", "domain": "*", "url": "*", "priority": 20, "sign": 1},
    {"category_code": "MISC", "cc": "it", "domain": "*", "url": "*", "priority": -200, "sign": 1},
    {"category_code": "GRP", "cc": "*", "domain": "*", "url": "*", "priority": 80, "sign": 1},
]
CITIZENLAB = [
    {"domain": "n.org", "url": "https://n.org/", "cc": "ZZ", "category_code": "NEWS"},
    {"domain": "m.org", "url": "https://m.org/", "cc": "ZZ", "category_code": "MISC"},
    {"domain": "it.it", "url": "https://it.it/", "cc": "it" + "\x00" * 30,
     "category_code": "NEWS"},
    {"domain": "br.br", "url": "http://br.br/", "cc": "BR", "category_code": "GRP"},
    {"domain": "g.org", "url": "https://g.org/", "cc": "ZZ", "category_code": "GRP"},
]
COUNTERS = [
    {"probe_cc": "IT", "probe_asn": 12874, "input": "https://n.org/", "msmt_cnt": 1000},
    {"probe_cc": "IT", "probe_asn": 3269, "input": "https://it.it/", "msmt_cnt": 500},
    {"probe_cc": "IT", "probe_asn": 3269, "input": "https://gone.org/", "msmt_cnt": 5},
]


def make() -> Snapshot:
    return Snapshot.build(CITIZENLAB, RULES, COUNTERS)


def urls(items):
    return [i["url"] for i in items]


def test_candidates_per_country():
    snap = make()
    assert urls(snap.test_list("ZZ", 0, None, 100)) == ["https://n.org/", "https://g.org/",
                                                        "https://m.org/"]
    # Italy: the it list (stored padded, lowercase) plus global; the `it` rule kills MISC.
    it = snap.test_list("IT", 0, None, 100)
    assert {i["url"] for i in it} == {"https://n.org/", "https://it.it/", "https://g.org/"}
    assert {i["country_code"] for i in it} == {"XX", "IT"}
    # An upper-case list cc in the table is still the BR list.
    assert "http://br.br/" in urls(snap.test_list("br", 0, None, 100))


def test_counts_per_network_and_country():
    snap = make()
    # AS12874 measured n.org a lot: it drops below the other NEWS entry.
    assert urls(snap.test_list("IT", 12874, ["NEWS"], 10)) == ["https://it.it/",
                                                               "https://n.org/"]
    # AS3269 measured it.it: the reverse.
    assert urls(snap.test_list("IT", 3269, ["NEWS"], 10)) == ["https://n.org/",
                                                              "https://it.it/"]
    # Country-wide (asn 0): 1000 vs 500.
    assert urls(snap.test_list("IT", 0, ["NEWS"], 10)) == ["https://it.it/", "https://n.org/"]
    # Unknown network: no counts, table order among equal weights.
    assert urls(snap.test_list("IT", 999, ["NEWS"], 10)) == ["https://n.org/", "https://it.it/"]


def test_limit_and_categories():
    snap = make()
    assert snap.test_list("IT", 0, None, 0) == []
    assert len(snap.test_list("IT", 0, None, 2)) == 2
    assert urls(snap.test_list("IT", 0, ["GRP"], 5)) == ["https://g.org/"]
    assert snap.test_list("IT", 0, ["HUMR"], 5) == []


def test_cache_is_reused_and_bounded(monkeypatch):
    snap = make()
    first = snap._ordering("IT", 12874)
    assert snap._ordering("it", 12874) is first
    # Networks without counters share one ordering.
    assert snap._ordering("IT", 1) is snap._ordering("IT", 2)
    monkeypatch.setattr(snapshot_mod, "ORDERING_CACHE_SIZE", 2)
    for cc in ("US", "DE", "FR"):
        snap._ordering(cc, 0)
    assert len(snap._orderings) == 2


def test_matches_pure_pipeline_on_us_fixture():
    rows = json.loads((FIXTURES / "citizenlab_counters_us.json").read_text())
    rules = json.loads((FIXTURES / "url_priorities_us.json").read_text())
    counters = [{"probe_cc": "US", "probe_asn": 7922, "input": r["url"],
                 "msmt_cnt": r["msmt_cnt"]} for r in rows]
    snap = Snapshot.build(rows, [dict(r, sign=1) for r in rules], counters)
    candidates = [c for c in snap.candidates]
    counts = [r["msmt_cnt"] for r in rows]
    for cats, limit in [(None, 20), (None, 9999), (["NEWS", "GRP"], 100), (["MISC"], 5)]:
        expected = generate_test_list(candidates, counts, net_rules(dict(r, sign=1) for r in rules),
                                      "US", cats, limit)
        assert snap.test_list("US", 7922, cats, limit) == expected
        assert snap.test_list("US", 0, cats, limit) == expected
    debug = snap.debug_test_list("US", 7922, None, 5)
    assert set(debug[0]) == {"category_code", "url", "country_code", "msmt_cnt", "priority",
                             "weight"}


def test_debug_info():
    info = make().debug_info("IT", 3269, None, 10)
    assert set(info) == {"test_items", "entries", "prio_rules"}
    assert len(info["entries"]) == 4  # 3 global + 1 it
    assert {e["url"]: e["msmt_cnt"] for e in info["entries"]}["https://it.it/"] == 500
    assert {r["cc"] for r in info["prio_rules"]} == {"*", "it"}
    assert all("weight" in i for i in info["test_items"])


def test_big_snapshot_is_fast():
    rng = random.Random(1)
    cats = ["NEWS", "MISC", "GRP", "HUMR", "POLR"]
    rows = [{"domain": f"d{i}.org", "url": f"https://d{i}.org/", "cc": rng.choice(["ZZ", "it"]),
             "category_code": rng.choice(cats)} for i in range(5000)]
    rules = [{"category_code": c, "cc": "*", "domain": "*", "url": "*", "priority": 50,
              "sign": 1} for c in cats]
    counters = [{"probe_cc": "IT", "probe_asn": rng.randrange(1, 50), "input": r["url"],
                 "msmt_cnt": rng.randrange(1, 100)} for r in rows for _ in range(2)]
    snap = Snapshot.build(rows, rules, counters)
    import time

    snap.test_list("IT", 5, None, 100)
    t0 = time.perf_counter()
    for _ in range(1000):
        snap.test_list("IT", 5, ["NEWS"], 100)
    assert time.perf_counter() - t0 < 1.0  # cached: well under 1 ms per request


class FakeDB:
    def __init__(self):
        self.fail = False
        self.queries = 0

    async def query(self, sql, params=None, settings=None):
        self.queries += 1
        if self.fail:
            raise DatabaseUnavailable("down")
        if "citizenlab" in sql:
            return CITIZENLAB
        if "url_priorities" in sql:
            return RULES
        return COUNTERS


async def test_store_keeps_previous_snapshot_on_failure():
    db = FakeDB()
    db.fail = True
    metrics = Metrics()
    store = URLListStore(db, 60, metrics)
    assert not await store.refresh()
    assert len(store.snapshot) == 0 and store.snapshot.test_list("IT", 0, None, 10) == []
    db.fail = False
    assert await store.refresh()
    good = store.snapshot
    assert len(good) == 5
    db.fail = True
    assert not await store.refresh()
    assert store.snapshot is good
    assert metrics.value("test_list_refresh_failures_total") == 2
    assert "test_list_snapshot_urls 5" in metrics.render()


async def test_store_run_refreshes_periodically():
    db = FakeDB()
    store = URLListStore(db, 0.05)
    task = asyncio.create_task(store.run())
    await asyncio.sleep(0.3)
    task.cancel()
    assert db.queries >= 6  # 3 queries per refresh, several refreshes
    assert len(store.snapshot) == 5


def test_candidate_model():
    assert Candidate("NEWS", "a", "u", "ZZ").country_code == "XX"
    assert Candidate("NEWS", "a", "u", "it").country_code == "IT"
