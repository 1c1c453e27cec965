"""`oonibackend export`: the public tables as zstd-compressed CSV files with a header.

A monthly table gives one file per month, `<export_prefix>/<table>/<YYYY-MM>.csv.zst`, the
others one file, `<export_prefix>/<table>/<table>.csv.zst`; `<export_prefix>/<table>/
manifest.json` lists them with their row counts and sha256 and is rewritten after each file,
so it is also the resume state: a past month already exported with the same number of rows
in the table is not rewritten, and the current month and whole tables only when their content
checksum changed. Tables whose engine deduplicates at merge time are read FINAL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oonibackend import jsonutil
from oonibackend.jobs.backup import catalog, plan
from oonibackend.jobs.backup.backup import (
    BackupError,
    TableJob,
    describe,
    dump,
    mb,
    put_json,
    time_column,
)
from oonibackend.jobs.backup.stream import CsvCounter, collect
from oonibackend.storage import sql

if TYPE_CHECKING:
    from oonibackend.objectstore import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class ExportSummary:
    files: int = 0
    skipped: int = 0
    rows: int = 0
    raw_bytes: int = 0
    bytes: int = 0

    def line(self) -> str:
        return (f"{self.files} files written ({self.skipped} up to date), {self.rows} rows, "
                f"{mb(self.raw_bytes)} of CSV -> {mb(self.bytes)}")

    def metrics(self) -> dict[str, tuple[str, float]]:
        return {"rows": ("Rows exported by the latest run", self.rows),
                "bytes": ("Compressed bytes stored by the latest run", self.bytes),
                "raw_bytes": ("CSV bytes produced by the latest run", self.raw_bytes),
                "chunks": ("Files written by the latest run", self.files),
                "skipped": ("Files already up to date in the latest run", self.skipped)}


async def read_json(store: ObjectStore, key: str) -> Any:
    """A small JSON object from the store, None when absent."""
    if not await store.exists(key):
        return None
    try:
        return jsonutil.loads(await collect(store.get_stream(key)))
    except ValueError as e:
        raise BackupError(f"{key}: not valid JSON: {e}") from e


class Export(TableJob):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.summary = ExportSummary()

    async def run(self, tables: Sequence[str], since: int | None, dry_run: bool
                  ) -> ExportSummary:
        for table in tables:
            await self.table(table, since, dry_run)
        return self.summary

    async def table(self, table: str, since: int | None, dry_run: bool) -> None:
        b = self.cfg.backup
        info = await describe(self.db, table, self.settings)
        column = time_column(self.cfg, info)
        mkey = plan.export_manifest_key(b.export_prefix, table)
        manifest = await read_json(self.store, mkey) or {}
        entries: dict[str, Any] = dict(manifest.get("files") or {})
        counts: dict[int, int] = {}
        if column:
            counts = dict(await catalog.month_counts(self.db, table, column, self.settings))
            files = plan.export_files(b.export_prefix, table, counts, self.now(), since)
        else:
            files = plan.export_files(b.export_prefix, table, None, self.now())
        final = " FINAL" if plan.needs_final(info.engine) else ""
        for i, f in enumerate(files, 1):
            if column and f.month is not None:
                where, params = catalog.time_condition(
                    column, plan.fmt_ts(plan.month_start(f.month)),
                    plan.fmt_ts(plan.month_end(f.month)))
            else:
                where, params = "", {}
            if f.complete:
                source_rows, checksum = counts[f.month or 0], None
            else:
                source_rows, checksum = await catalog.count_rows(
                    self.db, table, self.settings, where, params, checksum=True)
            entry = entries.get(f.label)
            if plan.export_up_to_date(entry, f, source_rows, checksum) and \
                    await self.store.exists(f.key):
                self.summary.skipped += 1
                self.say(f"{table}: {i}/{len(files)} {f.label}: up to date")
                continue
            if dry_run:
                self.say(f"{table}: {i}/{len(files)} {f.label}: would write {f.key} "
                         f"(~{source_rows} rows)")
                continue
            t0 = time.monotonic()
            query = f"SELECT * FROM {sql.ident(table)}{final}{where}{info.order_by()}"
            comp = await dump(self.db, self.store, f.key, query, params, plan.EXPORT_FORMAT,
                              CsvCounter(header_lines=1), self.cfg)
            entries[f.label] = {
                "key": f.key, "rows": comp.rows, "bytes": comp.bytes,
                "sha256": comp.sha.hexdigest(), "source_rows": source_rows,
                "checksum": checksum,
                "exported": self.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            await put_json(self.store, mkey, {
                "table": table, "format": plan.EXPORT_FORMAT, "compression": "zstd",
                "columns": info.public(), "files": dict(sorted(entries.items()))})
            s = self.summary
            s.files += 1
            s.rows += comp.rows
            s.raw_bytes += comp.raw_bytes
            s.bytes += comp.bytes
            self.say(f"{table}: {i}/{len(files)} {f.label}: {comp.rows} rows, "
                     f"{mb(comp.raw_bytes)} -> {mb(comp.bytes)} in "
                     f"{time.monotonic() - t0:.1f} s")
            log.info("export file", extra={"table": table, "key": f.key, "rows": comp.rows,
                                           "bytes": comp.bytes})
            if b.pause > 0 and i < len(files):
                await asyncio.sleep(b.pause)
