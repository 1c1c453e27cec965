"""The detector job's database side: read fastpath counts per series and bucket, apply them
to the series states of blocking_status, write states, events and the watermark.

Resumable and idempotent, batch by batch (`batch_buckets` buckets each):
1. events of the batch go to blocking_events (ReplacingMergeTree on the series and the
   change point: writing one twice leaves one row after FINAL);
2. then the updated states to blocking_status (each remembers its `last_time`, the last
   bucket applied, so a state already written is never advanced twice by the same bucket);
3. then the watermark (detector_state, name 'watermark'): every bucket before it is done.
A run killed anywhere restarts from the watermark and recomputes the same events: the same
data, the same states (float32-exact), the same change points.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oonibackend.jobs.detector import changepoint, series
from oonibackend.jobs.detector.changepoint import Change, Params, State
from oonibackend.jobs.detector.series import SeriesKey
from oonibackend.storage import Database

if TYPE_CHECKING:
    from oonibackend.config import DetectorConfig

log = logging.getLogger(__name__)

WATERMARK = "watermark"
INSERT_ROWS = 50_000
TABLES = ("blocking_status", "blocking_events", "detector_state")

# Outcome classes: confirmed first, then failures (no evidence either way), then anomalies.
COUNTS_SQL = """
SELECT test_name, input, probe_cc, toInt32(probe_asn) AS probe_asn,
    toDateTime(intDiv(toUInt32(measurement_start_time), %(secs)s) * %(secs)s, 'UTC') AS t,
    countIf(confirmed = 't') AS n_confirmed,
    countIf(confirmed != 't' AND msm_failure != 't' AND anomaly = 't') AS n_pure_anomaly,
    countIf(confirmed != 't' AND msm_failure != 't' AND anomaly != 't') AS n_accessible,
    countIf(confirmed != 't' AND msm_failure = 't') AS n_failure
FROM fastpath FINAL
WHERE measurement_start_time >= %(t0)s AND measurement_start_time < %(t1)s
    AND probe_cc NOT IN ('', 'ZZ') AND probe_asn != 0 {tests}
GROUP BY test_name, input, probe_cc, probe_asn, t
"""

STATES_SQL = f"SELECT {', '.join(series.STATUS_COLUMNS)} FROM blocking_status FINAL"


def params_of(c: DetectorConfig) -> Params:
    return Params(alpha=c.alpha, blocked_threshold=c.blocked_threshold,
                  confirmed_threshold=c.confirmed_threshold, ok_threshold=c.ok_threshold,
                  min_count=c.min_count)


def validate(c: DetectorConfig) -> None:
    """Raise ValueError for a [detector] section the job cannot run with."""
    params_of(c).validate()
    if not 1 <= c.bucket_minutes <= 7 * 24 * 60:
        raise ValueError("bucket_minutes must be within 1..10080")
    if c.window_hours < 1 or c.batch_buckets < 1 or c.delay_minutes < 0:
        raise ValueError("window_hours and batch_buckets must be positive, delay_minutes not "
                         "negative")
    if c.max_execution_time < 1:
        raise ValueError("max_execution_time must be positive")


@dataclass
class Event:
    key: SeriesKey
    change: Change

    def row(self) -> dict[str, Any]:
        test_name, input_, cc, asn = self.key
        return {"test_name": test_name, "input": input_, "probe_cc": cc, "probe_asn": asn,
                "status": self.change.status, "time": self.change.time}


@dataclass
class Stats:
    since: dt.datetime
    until: dt.datetime
    batches: int = 0
    rows: int = 0  # measurements counted
    series: int = 0  # series updated
    events: int = 0


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ")


async def existing_tables(db: Database) -> set[str]:
    rows = await db.query("SELECT name FROM system.tables WHERE database = currentDatabase() "
                          "AND has(%(names)s, name)", {"names": list(TABLES)})
    return {r["name"] for r in rows}


async def read_watermark(db: Database) -> dt.datetime | None:
    row = await db.query_one("SELECT max(value) AS v FROM detector_state FINAL "
                             "WHERE name = %(n)s", {"n": WATERMARK})
    v = row["v"] if row else None
    return None if v is None or v <= series.EPOCH else v.replace(tzinfo=None)


async def load_states(db: Database) -> dict[SeriesKey, State]:
    return {series.key_of(r): series.state_from_row(r) for r in await db.query(STATES_SQL)}


async def read_counts(db: Database, c: DetectorConfig, t0: dt.datetime, t1: dt.datetime
                      ) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"secs": c.bucket_minutes * 60, "t0": t0, "t1": t1}
    tests = ""
    if c.test_names:
        tests, params["tests"] = "AND has(%(tests)s, test_name)", list(c.test_names)
    return await db.query(COUNTS_SQL.format(tests=tests), params,
                          settings={"max_execution_time": c.max_execution_time})


async def _insert(db: Database, table: str, rows: Sequence[dict[str, Any]],
                  columns: Sequence[str]) -> None:
    for i in range(0, len(rows), INSERT_ROWS):
        await db.insert(table, rows[i:i + INSERT_ROWS], columns=columns)


def plan(c: DetectorConfig, now: dt.datetime, watermark: dt.datetime | None,
         since: dt.datetime | None = None, until: dt.datetime | None = None
         ) -> tuple[dt.datetime, dt.datetime]:
    """The [since, until) range of buckets to process: until defaults to (and is capped at)
    the end of the last bucket that ended `delay_minutes` ago, since to the watermark or,
    fresh, `window_hours` back. Buckets are never processed before they are complete: the
    watermark passes them for good."""
    secs = c.bucket_minutes * 60
    end = series.floor_time(now - dt.timedelta(minutes=c.delay_minutes), secs)
    if until is not None:
        end = min(end, series.floor_time(until, secs))
    if since is not None:
        start = series.floor_time(since, secs)
    elif watermark is not None:
        start = series.floor_time(watermark, secs)
    else:
        start = series.floor_time(end - dt.timedelta(hours=c.window_hours), secs)
    return start, end


async def detect(db: Database, c: DetectorConfig, start: dt.datetime, end: dt.datetime, *,
                 dry_run: bool = False, progress: Callable[[str], None] = lambda _: None,
                 on_event: Callable[[Event], None] = lambda _: None) -> Stats:
    """Process the buckets of [start, end) in batches; see the module docstring."""
    params = params_of(c)
    secs = c.bucket_minutes * 60
    present = await existing_tables(db) if dry_run else set(TABLES)
    states = await load_states(db) if "blocking_status" in present else {}
    watermark = await read_watermark(db) if "detector_state" in present else None
    stats = Stats(since=start, until=end)
    progress(f"{len(states)} series known; processing {_iso(start)} .. {_iso(end)}"
             + (" (dry run: nothing written)" if dry_run else ""))
    updated: set[SeriesKey] = set()
    t0 = start
    while t0 < end:
        t1 = min(t0 + dt.timedelta(seconds=secs * c.batch_buckets), end)
        counts = series.group_counts(await read_counts(db, c, t0, t1))
        changed: list[dict[str, Any]] = []
        events: list[Event] = []
        measurements = 0
        for key, buckets in counts.items():
            measurements += sum(b.useful + b.failure for b in buckets)
            before = states.get(key, State())
            after, changes = changepoint.run_series(before, buckets, params)
            if after != before:
                states[key] = after
                changed.append(series.state_to_row(key, after))
                updated.add(key)
            events.extend(Event(key, ch) for ch in changes)
        if not dry_run:
            await _insert(db, "blocking_events", [e.row() for e in events],
                          ("test_name", "input", "probe_cc", "probe_asn", "status", "time"))
            await _insert(db, "blocking_status", changed, series.STATUS_COLUMNS)
            watermark = max(watermark or t1, t1)
            await db.insert("detector_state", [{"name": WATERMARK, "value": watermark}])
        for e in events:
            on_event(e)
        stats.batches += 1
        stats.rows += measurements
        stats.events += len(events)
        progress(f"batch {_iso(t0)} .. {_iso(t1)}: {measurements} measurements, "
                 f"{len(counts)} series, {len(changed)} states, {len(events)} events")
        t0 = t1
    stats.series = len(updated)
    return stats
