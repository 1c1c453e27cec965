"""The rollups of fastpath (migration 0012_rollups.sql): their tables and dimensions (read by
the aggregation planner, queries/aggregation.py) and the rebuild of some days from fastpath.

The materialized views keep the rollups exact for inserts of new measurements. A
re-processed measurement is a second fastpath row with the same sort key: fastpath counts
both until its background merge keeps the newer, the rollups count both for good (and keep
the old scores' counts). Rebuilding the re-processed days replaces their rollup rows with
the counts of `fastpath FINAL` (one row per measurement, the newest scores); `fastpath
reprocess` does it for its days when it ends, and `oonibackend db rebuild-rollups` does it
by hand (a backfill interrupted half-way, a database restored without its rollups). Rows the
fastpath inserts for those days while they are rebuilt may be counted twice or not at all:
rebuild days the live pipeline no longer writes (re-processing works on archived days).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oonibackend.storage import Database

Query = tuple[str, dict[str, Any]]

# The counts of one group of fastpath rows, the five measures of queries/aggregation.py.
COUNTS_SQL = """countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS n_anomaly,
    countIf(confirmed = 't' AND msm_failure = 'f') AS n_confirmed,
    countIf(msm_failure = 't') AS n_failure,
    countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS n_ok,
    count() AS n_measurement"""
COUNT_COLUMNS = "n_anomaly, n_confirmed, n_failure, n_ok, n_measurement"
# A rebuilt block may equal one inserted before the days were deleted: it must not be taken
# for a replay (the rollups deduplicate inserts, see the migration).
REBUILD_SETTINGS = {"insert_deduplicate": 0, "max_execution_time": 0}
DELETE_SETTINGS = {"mutations_sync": 2}


@dataclass(frozen=True)
class Rollup:
    """A rollup table, in its sort key's order, and the dimensions (axes and filters) it holds."""

    table: str
    columns: tuple[str, ...]

    @property
    def dims(self) -> frozenset[str]:
        return frozenset(self.columns)


# Smallest first: the aggregation planner takes the first that holds a request.
ROLLUPS = (
    Rollup("fastpath_daily", ("probe_cc", "probe_asn", "test_name")),
    Rollup("fastpath_daily_domain", ("probe_cc", "probe_asn", "test_name", "domain")),
)


def rebuild_statements(days: Sequence[dt.date]
                       ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(statement, params, settings) that recount every rollup's rows of `days`."""
    days = sorted(set(days))
    params = {"days": days, "since": dt.datetime.combine(days[0], dt.time()),
              "until": dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time())}
    out = []
    for r in ROLLUPS:
        dims = ", ".join(r.columns)
        out.append((f"ALTER TABLE {r.table} DELETE WHERE day IN %(days)s", params,
                    DELETE_SETTINGS))
        out.append((f"""INSERT INTO {r.table} (day, {dims}, {COUNT_COLUMNS})
SELECT toDate(measurement_start_time) AS day, {dims},
    {COUNTS_SQL}
FROM fastpath FINAL
WHERE measurement_start_time >= %(since)s AND measurement_start_time < %(until)s
    AND toDate(measurement_start_time) IN %(days)s
GROUP BY day, {dims}""", params, REBUILD_SETTINGS))
    return out


async def rebuild(db: Database, days: Sequence[dt.date]) -> None:
    """Recount the rollups of `days` from fastpath FINAL (nothing for no day)."""
    if days:
        for stmt, params, settings in rebuild_statements(days):
            await db.execute(stmt, params, settings)


# Rows written by a run that started at `since` (update_time is set by the server: a margin
# for its clock; recounting a few more days is harmless).
_WRITTEN_DAYS = """SELECT DISTINCT toDate(measurement_start_time) AS day FROM fastpath
WHERE update_time >= %(since)s ORDER BY day"""
CLOCK_MARGIN = dt.timedelta(minutes=10)


async def rebuild_written_since(db: Database, since: dt.datetime) -> list[dt.date]:
    """Recount the days of the fastpath rows written since `since` (UTC, naive): after a
    re-processing run. Returns the days."""
    rows = await db.query(_WRITTEN_DAYS, {"since": since - CLOCK_MARGIN},
                          {"max_execution_time": 0})
    days = [r["day"] for r in rows]
    await rebuild(db, days)
    return days
