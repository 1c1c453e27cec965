"""What the database says about a table: columns, engine, sorting key, row counts.

Every query here runs with the jobs' low-priority settings (`read_settings`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oonibackend.jobs.backup import plan
from oonibackend.storage import Database, sql

if TYPE_CHECKING:
    from oonibackend.config import BackupConfig


def read_settings(b: BackupConfig) -> dict[str, Any]:
    """ClickHouse settings that keep the live workload first: a higher `priority` number
    yields to the API's queries, one thread, a generous but finite time limit."""
    out: dict[str, Any] = {"max_threads": max(1, b.max_threads),
                           "max_execution_time": b.max_execution_time}
    if b.priority:
        out["priority"] = b.priority
    return out


@dataclass
class TableInfo:
    name: str
    engine: str
    sorting_key: str
    create_table_query: str
    columns: list[dict[str, str]] = field(default_factory=list)

    def column(self, name: str) -> dict[str, str] | None:
        return next((c for c in self.columns if c["name"] == name), None)

    def stored(self) -> list[dict[str, str]]:
        return plan.stored_columns(self.columns)

    def public(self) -> list[str]:
        """Columns of `SELECT *` (ordinary and DEFAULT ones)."""
        return [c["name"] for c in self.columns if c["kind"] in ("", "DEFAULT")]

    def order_by(self) -> str:
        """` ORDER BY <sorting key>` (read in order, cheap on MergeTree) or ''."""
        return f" ORDER BY {self.sorting_key}" if self.sorting_key else ""

    def meta(self, time_column: str | None) -> dict[str, Any]:
        return {"engine": self.engine, "sorting_key": self.sorting_key,
                "create_table_query": self.create_table_query, "time_column": time_column}


async def describe(db: Database, table: str, settings: dict[str, Any]) -> TableInfo | None:
    """The table in the current database, or None if there is no such table."""
    t = await db.query_one(
        "SELECT engine, sorting_key, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = %(t)s", {"t": sql.ident(table)},
        settings)
    if t is None:
        return None
    cols = await db.query(
        "SELECT name, type, default_kind FROM system.columns "
        "WHERE database = currentDatabase() AND table = %(t)s ORDER BY position",
        {"t": table}, settings)
    return TableInfo(table, str(t["engine"]), str(t["sorting_key"] or ""),
                     str(t["create_table_query"]),
                     [{"name": c["name"], "type": c["type"], "kind": c["default_kind"] or ""}
                      for c in cols])


def time_condition(column: str, lo: str | None, hi: str | None
                   ) -> tuple[str, dict[str, Any]]:
    """` WHERE column >= lo AND column < hi` and its parameters, or ('', {})."""
    if lo is None and hi is None:
        return "", {}
    c = sql.ident(column)
    parts, params = [], {}
    if lo is not None:
        parts.append(f"{c} >= %(lo)s")
        params["lo"] = plan.parse_ts(lo)
    if hi is not None:
        parts.append(f"{c} < %(hi)s")
        params["hi"] = plan.parse_ts(hi)
    return " WHERE " + " AND ".join(parts), params


async def month_counts(db: Database, table: str, column: str, settings: dict[str, Any]
                       ) -> list[tuple[int, int]]:
    """(YYYYMM, rows) of every month present, in order."""
    c = sql.ident(column)
    rows = await db.query(f"SELECT toYYYYMM({c}) AS m, count() AS n FROM {sql.ident(table)} "
                          "GROUP BY m ORDER BY m", None, settings)
    return [(int(r["m"]), int(r["n"])) for r in rows]


async def buckets(db: Database, table: str, column: str, lo: dt.datetime, hi: dt.datetime,
                  unit: str, settings: dict[str, Any]) -> list[tuple[dt.datetime, int]]:
    """(bucket start, rows) per hour or per second of [lo, hi), in order."""
    c = sql.ident(column)
    expr = {"hour": f"toStartOfHour(toDateTime({c}))", "second": f"toDateTime({c})"}[unit]
    rows = await db.query(
        f"SELECT {expr} AS b, count() AS n FROM {sql.ident(table)} "
        f"WHERE {c} >= %(lo)s AND {c} < %(hi)s GROUP BY b ORDER BY b",
        {"lo": lo, "hi": hi}, settings)
    return [(r["b"], int(r["n"])) for r in rows]


async def count_rows(db: Database, table: str, settings: dict[str, Any],
                     where: str = "", params: dict[str, Any] | None = None,
                     checksum: bool = False) -> tuple[int, str | None]:
    """Rows (as stored, without FINAL) and, optionally, an order-independent checksum of
    their content, for telling whether an export is still current."""
    extra = ", toString(sum(cityHash64(tuple(*)))) AS h" if checksum else ""
    r = await db.query_one(f"SELECT count() AS n{extra} FROM {sql.ident(table)}{where}",
                           params, settings)
    if r is None:
        return 0, None
    return int(r["n"]), (str(r["h"]) if checksum else None)


async def plan_table(db: Database, info: TableInfo, column: str | None, chunk_rows: int,
                     settings: dict[str, Any]) -> list[plan.Chunk]:
    """The chunks of a table: one for a whole table, else per month, split where needed."""
    if column is None:
        n, _ = await count_rows(db, info.name, settings)
        return [plan.whole_chunk(n)]
    chunks: list[plan.Chunk] = []
    for month, n in await month_counts(db, info.name, column, settings):
        lo, hi = plan.month_start(month), plan.month_end(month)
        if n <= chunk_rows:
            chunks += plan.month_chunks(month, [(lo, n)], chunk_rows)
            continue
        hours = await buckets(db, info.name, column, lo, hi, "hour", settings)
        fine = {}
        for h in plan.oversized(hours, chunk_rows):
            fine[h] = await buckets(db, info.name, column, h, h + dt.timedelta(hours=1),
                                    "second", settings)
        chunks += plan.month_chunks(month, plan.refine(hours, fine), chunk_rows)
    return chunks
