"""The in-memory inputs of URL prioritization, refreshed in the background.

Check-in is the busiest probe call, so it must not touch the database: a background task
loads every citizenlab row, the net url_priorities rules and the last two weeks of
counters_asn_test_list every `probe.test_list_refresh` seconds into an immutable `Snapshot`.
The same task polls the dataset versions (storage/versions.py) every `probe.version_poll`
seconds and reloads at once when update-citizenlab or a URL-priority edit bumped theirs, so
a new list reaches check-in about a second after the import. A failed refresh is logged and
the previous snapshot kept (an empty one if the database was never reachable: check-in still
answers, with no URLs).

Computing a list is CPU only and cached for the snapshot's lifetime: priorities per country
(they do not depend on the network) and the weight ordering per (country, network). Requests
then only filter categories and cut at the limit.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from oonibackend.appkeys import CONFIG, DB, METRICS
from oonibackend.background import refreshing
from oonibackend.prioritization.rules import (
    GLOBAL_CC,
    Candidate,
    Rule,
    RuleIndex,
    Scored,
    net_rules,
    rules_for_cc,
    select,
    weight,
)
from oonibackend.storage import versions

log = logging.getLogger(__name__)

CITIZENLAB_SQL = """
SELECT domain, url, cc, category_code
FROM citizenlab FINAL
ORDER BY domain, url, cc, category_code
"""

# Net rules: a deleted rule is a -1 row until CollapsingMergeTree merges it away.
RULES_SQL = """
SELECT category_code, cc, domain, url, priority, net AS sign
FROM (
    SELECT category_code, cc, domain, url, priority, sum(sign) AS net
    FROM url_priorities
    GROUP BY category_code, cc, domain, url, priority
)
WHERE net > 0
ORDER BY category_code, cc, domain, url, priority
"""

# Current and previous week (toStartOfWeek, Sunday-based, like the materialized view).
COUNTERS_SQL = """
SELECT probe_cc, probe_asn, input, sum(msmt_cnt) AS msmt_cnt
FROM counters_asn_test_list
WHERE week >= toDateTime(toStartOfWeek(now() - toIntervalWeek(1)))
GROUP BY probe_cc, probe_asn, input
"""

# Orderings kept per snapshot; each is a list of references to shared item dicts (~12 KB).
ORDERING_CACHE_SIZE = 4096
# How long start-up waits for the first load before serving with an empty snapshot.
FIRST_LOAD_WAIT = 5.0

_NO_COUNTS = -1  # cache key for networks without counters (they all order the same)
_EMPTY: Mapping[str, int] = {}


class Snapshot:
    """Immutable prioritization inputs plus lazily filled, per-snapshot caches."""

    def __init__(self, candidates: Sequence[Candidate], rules: Sequence[Rule],
                 counts_asn: dict[tuple[str, int], dict[str, int]],
                 counts_cc: dict[str, dict[str, int]], loaded_at: float | None = None) -> None:
        self.candidates = list(candidates)
        self.rules = list(rules)
        self.counts_asn = counts_asn
        self.counts_cc = counts_cc
        self.loaded_at = loaded_at if loaded_at is not None else time.time()
        # Global entries and per-country lists (upper-case cc), each in load order.
        self._global: list[int] = []
        self._by_cc: dict[str, list[int]] = {}
        for i, c in enumerate(self.candidates):
            if c.is_global:
                self._global.append(i)
            else:
                self._by_cc.setdefault(c.cc.upper(), []).append(i)
        # Output items, shared by every response (never mutated).
        self._items = [{"category_code": c.category_code, "url": c.url,
                        "country_code": c.country_code} for c in self.candidates]
        self._prio: dict[str, tuple[list[int], list[int]]] = {}
        self._orderings: OrderedDict[tuple[str, int], list[dict[str, Any]]] = OrderedDict()

    @classmethod
    def empty(cls) -> Snapshot:
        return cls([], [], {}, {}, loaded_at=0.0)

    @classmethod
    def build(cls, citizenlab_rows: Iterable[Mapping[str, Any]],
              rule_rows: Iterable[Mapping[str, Any]],
              counter_rows: Iterable[Mapping[str, Any]]) -> Snapshot:
        """Index query results (runs in a worker thread for large tables)."""
        candidates: list[Candidate] = []
        urls: dict[str, str] = {}
        for r in citizenlab_rows:
            cc = str(r.get("cc") or "").rstrip("\x00").strip()
            cc = GLOBAL_CC if cc.upper() == GLOBAL_CC else cc.lower()
            url = urls.setdefault(str(r["url"]), str(r["url"]))
            candidates.append(Candidate(category_code=str(r.get("category_code") or ""),
                                        domain=str(r.get("domain") or ""), url=url, cc=cc))
        counts_asn: dict[tuple[str, int], dict[str, int]] = {}
        counts_cc: dict[str, dict[str, int]] = {}
        for r in counter_rows:
            url = urls.get(str(r.get("input") or ""))
            if url is None:
                continue  # no longer in any list: cannot influence an ordering
            cc = str(r.get("probe_cc") or "").upper()
            n = int(r.get("msmt_cnt") or 0)
            per_asn = counts_asn.setdefault((cc, int(r.get("probe_asn") or 0)), {})
            per_asn[url] = per_asn.get(url, 0) + n
            per_cc = counts_cc.setdefault(cc, {})
            per_cc[url] = per_cc.get(url, 0) + n
        return cls(candidates, net_rules(rule_rows), counts_asn, counts_cc)

    # -- per-request API -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.candidates)

    def candidate_ids(self, cc: str) -> list[int]:
        """Global entries plus the country's list, in load (table) order."""
        cc = cc.upper()
        if cc == GLOBAL_CC:
            return self._global
        return list(heapq.merge(self._global, self._by_cc.get(cc, [])))

    def _priorities(self, cc: str) -> tuple[list[int], list[int]]:
        """(candidate ids, priorities) for a country; priorities do not depend on the ASN."""
        cc = cc.upper()
        hit = self._prio.get(cc)
        if hit is None:
            ids = self.candidate_ids(cc)
            index = RuleIndex(rules_for_cc(self.rules, cc))
            hit = (ids, [index.priority(self.candidates[i]) for i in ids])
            self._prio[cc] = hit
        return hit

    def _counts(self, cc: str, asn: int) -> tuple[int, Mapping[str, int]]:
        """Cache key and counts: per network when asn != 0, else country-wide."""
        cc = cc.upper()
        counts = self.counts_asn.get((cc, asn)) if asn else self.counts_cc.get(cc)
        if counts is None:
            return _NO_COUNTS, _EMPTY
        return asn, counts

    def scored(self, cc: str, asn: int) -> list[Scored]:
        """Every candidate with count, priority and weight, sorted (uncached; debug)."""
        ids, prios = self._priorities(cc)
        _, counts = self._counts(cc, asn)
        out = []
        for i, p in zip(ids, prios, strict=True):
            c = self.candidates[i]
            n = counts.get(c.url, 0)
            out.append(Scored(c, n, p, weight(p, n)))
        out.sort(key=lambda s: s.weight, reverse=True)
        return out

    def _ordering(self, cc: str, asn: int) -> list[dict[str, Any]]:
        cc = cc.upper()
        akey, counts = self._counts(cc, asn)
        key = (cc, akey)
        hit = self._orderings.get(key)
        if hit is not None:
            self._orderings.move_to_end(key)
            return hit
        ids, prios = self._priorities(cc)
        # Python's sort is stable with reverse=True too: ties keep the table order.
        ranked = sorted(
            ((weight(p, counts.get(self.candidates[i].url, 0)), i)
             for i, p in zip(ids, prios, strict=True) if p > 0),
            key=lambda t: t[0], reverse=True)
        hit = [self._items[i] for _, i in ranked]
        self._orderings[key] = hit
        if len(self._orderings) > ORDERING_CACHE_SIZE:
            self._orderings.popitem(last=False)
        return hit

    def test_list(self, cc: str, asn: int, category_codes: Iterable[str] | None,
                  limit: int) -> list[dict[str, Any]]:
        """The URL list for a probe: `{category_code, url, country_code}` (shared dicts)."""
        if limit <= 0:
            return []
        ordering = self._ordering(cc, asn)
        wanted = frozenset(category_codes or ())
        if not wanted:
            return ordering[:limit]
        out = []
        for item in ordering:
            if item["category_code"] in wanted:
                out.append(item)
                if len(out) >= limit:
                    break
        return out

    def debug_test_list(self, cc: str, asn: int, category_codes: Iterable[str] | None,
                        limit: int) -> list[dict[str, Any]]:
        """Like test_list, with msmt_cnt, priority and weight per item."""
        return select(self.scored(cc, asn), category_codes, limit, debug=True)

    def debug_info(self, cc: str, asn: int, category_codes: Iterable[str] | None,
                   limit: int) -> dict[str, Any]:
        """`/api/_/debug_prioritization`: the list, every candidate, the applicable rules."""
        _, counts = self._counts(cc, asn)
        entries = [{"category_code": self.candidates[i].category_code,
                    "domain": self.candidates[i].domain, "url": self.candidates[i].url,
                    "cc": self.candidates[i].cc,
                    "msmt_cnt": counts.get(self.candidates[i].url, 0)}
                   for i in self.candidate_ids(cc)]
        rules = [{"category_code": r.category_code, "cc": r.cc, "domain": r.domain,
                  "url": r.url, "priority": r.priority} for r in rules_for_cc(self.rules, cc)]
        return {"test_items": self.debug_test_list(cc, asn, category_codes, limit),
                "entries": entries, "prio_rules": rules}


async def load_snapshot(db: Any) -> Snapshot:
    """Query the three inputs and index them off the event loop."""
    citizenlab = await db.query(CITIZENLAB_SQL)
    rules = await db.query(RULES_SQL)
    counters = await db.query(COUNTERS_SQL)
    return await asyncio.to_thread(Snapshot.build, citizenlab, rules, counters)


# Datasets whose new version makes the snapshot reload at once.
WATCHED = (versions.CITIZENLAB, versions.URL_PRIORITIES)


class URLListStore:
    """Holds the current snapshot (app[TEST_LISTS]) and refreshes it.

    `poll` > 0: also reload as soon as a WATCHED dataset version moves (polled every `poll`
    seconds by `run`); 0: periodic refreshes only.
    """

    def __init__(self, db: Any, interval: float, metrics: Any = None,
                 poll: float = 0.0) -> None:
        self.db = db
        self.interval = max(float(interval), 0.1)
        self.poll = max(float(poll), 0.0)
        self.metrics = metrics
        self.snapshot = Snapshot.empty()
        self.failures = 0
        self.watcher = versions.Watcher(db, WATCHED, "test lists", log) if self.poll else None
        if metrics is not None:
            metrics.set("test_list_snapshot_age_seconds", self._age,
                        help="Seconds since the URL-list snapshot was loaded")
            metrics.set("test_list_snapshot_urls", lambda: float(len(self.snapshot)),
                        help="citizenlab rows in the URL-list snapshot")

    def _age(self) -> float:
        loaded = self.snapshot.loaded_at
        return time.time() - loaded if loaded else float("nan")

    async def refresh(self) -> bool:
        """Load a new snapshot; on failure keep the current one. True on success."""
        t0 = time.perf_counter()
        if self.watcher is not None:
            await self.watcher.seen()  # before the load: a bump racing with it is not missed
        try:
            snap = await load_snapshot(self.db)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.failures += 1
            if self.metrics is not None:
                self.metrics.inc("test_list_refresh_failures_total",
                                 help="Failed URL-list snapshot refreshes")
            # Full traceback only once in a row: a down database would flood the log.
            log.warning("test list refresh failed, keeping the previous snapshot",
                        extra={"error": str(e), "consecutive_failures": self.failures},
                        exc_info=self.failures == 1)
            return False
        self.snapshot = snap
        if self.failures:
            log.info("test list refresh recovered", extra={"after_failures": self.failures})
        self.failures = 0
        log.debug("test list snapshot loaded",
                  extra={"urls": len(snap), "rules": len(snap.rules),
                         "seconds": round(time.perf_counter() - t0, 3)})
        return True

    async def run(self, first_delay: float = 0.0) -> None:
        """Refresh forever, `interval` seconds apart (counted from the end of a load), the
        first one after `first_delay`; and, when polling, at once after a version change."""
        await versions.reload_forever(self.refresh, self.watcher, interval=self.interval,
                                      retry=self.interval, poll=self.poll,
                                      first_delay=first_delay)


TEST_LISTS = web.AppKey("test_lists", URLListStore)


async def url_lists_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: app[TEST_LISTS] and its refresh task.

    Start-up waits a little for the first load so that the first check-ins get URLs, but
    never fails: a database that is down only means empty lists until it comes back.
    """
    probe = app[CONFIG].probe
    store = URLListStore(app[DB], probe.test_list_refresh, app.get(METRICS),
                         poll=probe.version_poll)
    app[TEST_LISTS] = store

    async def run() -> None:
        await store.run(first_delay=store.interval)

    async with refreshing("test-list-refresh", store.refresh, run, FIRST_LOAD_WAIT):
        yield
