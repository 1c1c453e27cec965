"""`oonibackend backup`: every configured table into the object store, chunk by chunk.

Per table: plan the chunks (kept in the resume state), stream each one out of ClickHouse as
TabSeparatedWithNamesAndTypes with every stored column (MATERIALIZED ones included, so
version columns such as fastpath.update_time survive), zstd-compress it on the fly into
`<prefix>/<run>/<table>/<chunk>.tsv.zst`, record it as done, pause; then write the table's
manifest. After the last table, the run manifest marks the run complete and old runs beyond
`keep_runs` are deleted. A killed run is resumed by the next one: finished chunks are
skipped, an unfinished one is written again from its start (same key, same rows).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oonibackend import jsonutil
from oonibackend.jobs.backup import catalog, plan
from oonibackend.jobs.backup.state import BackupState
from oonibackend.jobs.backup.stream import Compressor, LineCounter, one
from oonibackend.storage import Database, sql

if TYPE_CHECKING:
    from oonibackend.config import Config
    from oonibackend.objectstore import ObjectStore

log = logging.getLogger(__name__)

Say = Callable[[str], None]


class BackupError(Exception):
    """A configuration or database problem that stops the run (the message says which)."""


@dataclass
class Summary:
    run: str = ""
    tables: int = 0
    chunks: int = 0
    chunks_skipped: int = 0
    rows: int = 0
    raw_bytes: int = 0
    bytes: int = 0
    deleted_runs: list[str] = field(default_factory=list)
    complete: bool = False

    def line(self) -> str:
        return (f"run {self.run}: {self.tables} tables, {self.chunks} chunks written "
                f"({self.chunks_skipped} already done), {self.rows} rows, "
                f"{mb(self.raw_bytes)} read, {mb(self.bytes)} stored")

    def metrics(self) -> dict[str, tuple[str, float]]:
        return {"rows": ("Rows written by the latest run", self.rows),
                "bytes": ("Compressed bytes stored by the latest run", self.bytes),
                "raw_bytes": ("Uncompressed bytes read by the latest run", self.raw_bytes),
                "chunks": ("Chunks written by the latest run", self.chunks)}


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def state_path(cfg: Config) -> Path:
    return cfg.path(cfg.backup.dir) / "state.json"


def lock_path(cfg: Config) -> Path:
    return cfg.path(cfg.backup.dir) / "backup.lock"


def time_column(cfg: Config, info: catalog.TableInfo) -> str | None:
    col = cfg.backup.monthly.get(info.name)
    if col is None:
        return None
    c = info.column(col)
    if c is None or not c["type"].removeprefix("Nullable(").startswith("Date"):
        raise BackupError(f"[backup] monthly: {info.name}.{col} is not a Date/DateTime column")
    return col


async def describe(db: Database, table: str, settings: dict[str, Any]) -> catalog.TableInfo:
    info = await catalog.describe(db, table, settings)
    if info is None:
        raise BackupError(f"no table {table!r} in the database")
    return info


def chunk_query(table: str, columns: Sequence[str], column: str | None, chunk: plan.Chunk,
                order_by: str) -> tuple[str, dict[str, Any]]:
    where, params = catalog.time_condition(column, chunk.lo, chunk.hi) if column else ("", {})
    cols = ", ".join(sql.ident(c) for c in columns)
    return f"SELECT {cols} FROM {sql.ident(table)}{where}{order_by}", params


async def dump(db: Database, store: ObjectStore, key: str, query: str, params: dict[str, Any],
               fmt: str, counter: LineCounter, cfg: Config) -> Compressor:
    """Stream one query result, compressed, into `key`; the Compressor holds the figures."""
    b = cfg.backup
    comp = Compressor(b.compression_level, counter, b.max_bytes_per_second)
    source = db.stream(query, params, fmt, catalog.read_settings(b))
    size = await store.put_stream(key, comp.run(source))
    if size != comp.bytes:
        raise BackupError(f"{key}: stored {size} bytes, compressed {comp.bytes}")
    return comp


async def put_json(store: ObjectStore, key: str, obj: Any) -> None:
    await store.put_stream(key, one(jsonutil.dumps(obj) + b"\n"))


async def plan_all(cfg: Config, db: Database, tables: Sequence[str], say: Say) -> None:
    """--dry-run: the chunks each table would have; nothing is written."""
    settings = catalog.read_settings(cfg.backup)
    for table in tables:
        info = await describe(db, table, settings)
        column = time_column(cfg, info)
        chunks = await catalog.plan_table(db, info, column, cfg.backup.chunk_rows, settings)
        rows = sum(c.rows for c in chunks)
        say(f"{table}: {len(chunks)} chunks, {rows} rows"
            + (f" (monthly on {column})" if column else ""))
        for c in chunks:
            say(f"  {c.name}: {c.rows} rows" + (f" [{c.lo}, {c.hi})" if c.lo else ""))


class TableJob:
    """What backup and export share: the database, the bucket, progress, the clock and the
    per-table settings."""

    def __init__(self, cfg: Config, db: Database, store: ObjectStore, say: Say,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.cfg = cfg
        self.db = db
        self.store = store
        self.say = say
        self.now = now
        self.settings = catalog.read_settings(cfg.backup)


class Backup(TableJob):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.summary = Summary()

    def open_state(self, run: str | None) -> BackupState:
        """The unfinished run to resume (unless `run` names another one), else the run `run`
        or today's: kept if it already exists and is complete (tables already in it are not
        done again), else started anew."""
        path = state_path(self.cfg)
        st = BackupState.load(path)
        if st is not None and not st.complete and run in (None, st.run):
            self.say(f"resuming backup run {st.run}")
            return st
        wanted = plan.valid_run_id(run or plan.default_run_id(self.now()))
        if st is not None and st.run == wanted:
            return st
        st = BackupState.new(path, wanted, self.now())
        st.save()
        return st

    async def run(self, tables: Sequence[str], run: str | None = None) -> Summary:
        st = self.open_state(run)
        self.summary.run = st.run
        if st.complete and all(st.table(t).finished for t in tables):
            self.say(f"backup run {st.run} is already complete")
            self.summary.complete = True
            return self.summary
        st.complete = False
        for table in tables:
            await self.table(st, table)
            self.summary.tables += 1
        prefix = self.cfg.backup.prefix
        done = sorted(t for t, d in st.d["tables"].items() if d.get("manifest"))
        await put_json(self.store, plan.run_manifest_key(prefix, st.run), {
            "run": st.run, "started": st.d["started"], "tables": done,
            "finished": self.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
        st.complete = True
        st.save()
        self.summary.complete = True
        await self.prune(st.run)
        return self.summary

    async def table(self, st: BackupState, table: str) -> None:
        ts = st.table(table)
        if ts.finished:
            self.say(f"{table}: already in run {st.run}")
            return
        b = self.cfg.backup
        info = await describe(self.db, table, self.settings)
        column = time_column(self.cfg, info)
        if not ts.planned:
            chunks = await catalog.plan_table(self.db, info, column, b.chunk_rows,
                                              self.settings)
            ts.set_plan(chunks, info.stored(), info.meta(column))
            st.save()
        chunks = ts.chunks
        names = [c["name"] for c in ts.columns]
        column = ts.info.get("time_column")
        order_by = info.order_by()
        for i, chunk in enumerate(chunks, 1):
            if chunk.name in ts.done:
                self.summary.chunks_skipped += 1
                continue
            t0 = time.monotonic()
            key = plan.chunk_key(b.prefix, st.run, table, chunk.name)
            query, params = chunk_query(table, names, column, chunk, order_by)
            comp = await dump(self.db, self.store, key, query, params, plan.BACKUP_FORMAT,
                              LineCounter(header_lines=2), self.cfg)
            ts.done[chunk.name] = {"rows": comp.rows, "bytes": comp.bytes,
                                   "raw_bytes": comp.raw_bytes,
                                   "sha256": comp.sha.hexdigest()}
            st.save()
            s = self.summary
            s.chunks += 1
            s.rows += comp.rows
            s.raw_bytes += comp.raw_bytes
            s.bytes += comp.bytes
            secs = time.monotonic() - t0
            self.say(f"{table}: chunk {i}/{len(chunks)} {chunk.name}: {comp.rows} rows, "
                     f"{mb(comp.raw_bytes)} -> {mb(comp.bytes)} in {secs:.1f} s")
            log.info("backup chunk", extra={"table": table, "chunk": chunk.name, "key": key,
                                            "rows": comp.rows, "bytes": comp.bytes,
                                            "raw_bytes": comp.raw_bytes})
            if b.pause > 0 and i < len(chunks):
                await asyncio.sleep(b.pause)
        manifest = plan.table_manifest(table, st.run, ts.info, ts.columns, chunks, ts.done,
                                       b.prefix, self.now())
        await put_json(self.store, plan.manifest_key(b.prefix, st.run, table), manifest)
        ts.finish()
        st.save()
        self.say(f"{table}: {manifest['rows']} rows in {len(chunks)} chunks, "
                 f"{mb(manifest['bytes'])} stored")

    async def prune(self, current: str) -> None:
        """Delete complete runs beyond the newest `keep_runs`."""
        b = self.cfg.backup
        if b.keep_runs <= 0:
            return
        keys = [o.key for o in await self.store.list(b.prefix + "/")]
        expired = set(plan.expired_runs(plan.runs_with(keys, b.prefix), b.keep_runs, current))
        if not expired:
            return
        # The run manifest goes first: a half-deleted run is no longer "complete".
        for run in sorted(expired):
            await self.store.delete(plan.run_manifest_key(b.prefix, run))
        for key in keys:
            if plan.run_of(key, b.prefix) in expired:
                await self.store.delete(key)
        self.summary.deleted_runs = sorted(expired)
        self.say(f"deleted old backup runs: {', '.join(sorted(expired))}")
