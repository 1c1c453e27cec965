"""What a backup or an export is made of: chunks, their bounds and their object keys.

Pure functions over counts and names, so that a resumed run reproduces exactly the chunks of
the interrupted one (the chunk list is also kept in the resume state) and the rules are unit
tested. A monthly table is cut per calendar month (UTC) of its time column, and a month with
more than `chunk_rows` rows into contiguous time ranges on hour boundaries, or second
boundaries inside a busy hour: ranges on the first column of the sorting key are cheap to
read, deterministic, and together cover the month without gap or overlap.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

BACKUP_FORMAT = "TabSeparatedWithNamesAndTypes"
BACKUP_EXT = ".tsv.zst"
EXPORT_FORMAT = "CSVWithNames"
EXPORT_EXT = ".csv.zst"
MANIFEST = "manifest.json"
WHOLE = "all"

_RUN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")
_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")
_TS = "%Y-%m-%d %H:%M:%S"

# Column kinds (system.columns.default_kind) that hold stored data.
STORED_KINDS = ("", "DEFAULT", "MATERIALIZED")
# Engines whose rows are only deduplicated/collapsed at merge time: exports read them FINAL.
FINAL_ENGINES = ("ReplacingMergeTree", "CollapsingMergeTree", "VersionedCollapsingMergeTree")


class PlanError(ValueError):
    """A bad run id, month or table name: the message says which."""


def valid_run_id(run: str) -> str:
    """Run ids become key components: letters, digits, '-' and '_' only."""
    if not _RUN.match(run):
        raise PlanError(f"invalid run id {run!r} (letters, digits, '-', '_'; at most 64)")
    return run


def default_run_id(now: dt.datetime) -> str:
    """The UTC day the run starts: runs sort by id."""
    return now.astimezone(dt.UTC).strftime("%Y%m%d")


# ---- months ----

def parse_month(text: str) -> int:
    """'2024-01' -> 202401."""
    m = _MONTH.match(text)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise PlanError(f"invalid month {text!r}: expected YYYY-MM")
    return int(m.group(1)) * 100 + int(m.group(2))


def month_label(yyyymm: int) -> str:
    return f"{yyyymm // 100:04d}-{yyyymm % 100:02d}"


def month_start(yyyymm: int) -> dt.datetime:
    return dt.datetime(yyyymm // 100, yyyymm % 100, 1)


def month_end(yyyymm: int) -> dt.datetime:
    """The start of the next month (exclusive bound)."""
    y, m = divmod(yyyymm, 100)
    return dt.datetime(y + (m == 12), m % 12 + 1, 1)


def month_of(t: dt.datetime) -> int:
    return t.year * 100 + t.month


def fmt_ts(t: dt.datetime) -> str:
    return t.strftime(_TS)


def parse_ts(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, _TS)


# ---- chunks ----

@dataclass(frozen=True)
class Chunk:
    """One object of a backup: the rows of a table whose time column is in [lo, hi), or all
    rows when both are None. Names sort in time order and are unique within a table."""

    name: str
    lo: str | None = None
    hi: str | None = None
    rows: int = 0  # counted when planning; the object's own count is in the manifest

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Chunk:
        return cls(name=str(d["name"]), lo=d.get("lo"), hi=d.get("hi"), rows=int(d["rows"]))


def split_range(lo: dt.datetime, hi: dt.datetime, buckets: Sequence[tuple[dt.datetime, int]],
                limit: int) -> list[tuple[dt.datetime, dt.datetime, int]]:
    """Cut [lo, hi) into contiguous ranges of at most `limit` rows, each boundary being the
    start of a bucket. `buckets` are (start, rows), sorted, within [lo, hi); a single bucket
    above the limit becomes a range of its own (it cannot be cut at this resolution)."""
    limit = max(1, limit)
    starts: list[dt.datetime] = [lo]
    counts: list[int] = [0]
    for start, n in buckets:
        if not lo <= start < hi:
            raise PlanError(f"bucket {start} outside [{lo}, {hi})")
        if counts[-1] and counts[-1] + n > limit:
            starts.append(start)
            counts.append(0)
        counts[-1] += n
    ends = starts[1:] + [hi]
    return list(zip(starts, ends, counts, strict=True))


def oversized(buckets: Iterable[tuple[dt.datetime, int]], limit: int) -> list[dt.datetime]:
    """Starts of the buckets too big for one chunk (to be counted at a finer resolution)."""
    return [start for start, n in buckets if n > limit]


def refine(coarse: Sequence[tuple[dt.datetime, int]],
           fine: Mapping[dt.datetime, Sequence[tuple[dt.datetime, int]]]
           ) -> list[tuple[dt.datetime, int]]:
    """`coarse` buckets with each one found in `fine` replaced by its finer buckets."""
    out: list[tuple[dt.datetime, int]] = []
    for start, n in coarse:
        out.extend(fine[start] if start in fine else [(start, n)])
    return out


def month_chunks(yyyymm: int, buckets: Sequence[tuple[dt.datetime, int]], limit: int
                 ) -> list[Chunk]:
    """The chunks of one month: `YYYY-MM.000`, `YYYY-MM.001`, ..."""
    label = month_label(yyyymm)
    ranges = split_range(month_start(yyyymm), month_end(yyyymm), buckets, limit)
    return [Chunk(f"{label}.{i:03d}", fmt_ts(lo), fmt_ts(hi), n)
            for i, (lo, hi, n) in enumerate(ranges)]


def whole_chunk(rows: int) -> Chunk:
    return Chunk(WHOLE, None, None, rows)


# ---- columns ----

def stored_columns(columns: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Columns a backup must carry: ordinary, DEFAULT and MATERIALIZED (the last ones hold
    values such as fastpath.update_time that a re-insert would not reproduce)."""
    return [{"name": c["name"], "type": c["type"], "kind": c.get("kind", "")}
            for c in columns if c.get("kind", "") in STORED_KINDS]


def needs_final(engine: str) -> bool:
    return engine in FINAL_ENGINES


# ---- keys ----

def _part(name: str) -> str:
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", name) or ".." in name:
        raise PlanError(f"invalid key component {name!r}")
    return name


def chunk_key(prefix: str, run: str, table: str, chunk: str) -> str:
    return f"{prefix}/{_part(run)}/{_part(table)}/{_part(chunk)}{BACKUP_EXT}"


def manifest_key(prefix: str, run: str, table: str) -> str:
    return f"{prefix}/{_part(run)}/{_part(table)}/{MANIFEST}"


def run_manifest_key(prefix: str, run: str) -> str:
    return f"{prefix}/{_part(run)}/{MANIFEST}"


def runs_with(keys: Iterable[str], prefix: str, table: str | None = None) -> list[str]:
    """Run ids, sorted, that have a manifest for `table` (or a run manifest when None, i.e.
    complete runs)."""
    tail = f"/{table}/{MANIFEST}" if table else f"/{MANIFEST}"
    runs = set()
    for key in keys:
        if not key.startswith(prefix + "/") or not key.endswith(tail):
            continue
        middle = key[len(prefix) + 1:len(key) - len(tail)]
        if _RUN.match(middle):
            runs.add(middle)
    return sorted(runs)


def expired_runs(complete: Sequence[str], keep: int, current: str) -> list[str]:
    """Complete runs beyond the newest `keep` (0: keep everything); never `current`."""
    if keep <= 0:
        return []
    old = sorted(complete)[:-keep]
    return [r for r in old if r != current]


def run_of(key: str, prefix: str) -> str | None:
    if not key.startswith(prefix + "/"):
        return None
    run = key[len(prefix) + 1:].split("/", 1)[0]
    return run if _RUN.match(run) else None


# ---- manifests ----

def table_manifest(table: str, run: str, info: Mapping[str, Any], columns: Sequence[Any],
                   chunks: Sequence[Chunk], done: Mapping[str, Mapping[str, Any]],
                   prefix: str, finished: dt.datetime) -> dict[str, Any]:
    """The manifest of one backed-up table (written after all its chunks)."""
    entries = []
    for c in chunks:
        r = done[c.name]
        entries.append({"name": c.name, "key": chunk_key(prefix, run, table, c.name),
                        "lo": c.lo, "hi": c.hi, "rows": r["rows"], "bytes": r["bytes"],
                        "raw_bytes": r["raw_bytes"], "sha256": r["sha256"]})
    return {
        "table": table, "run": run, "format": BACKUP_FORMAT, "compression": "zstd",
        "engine": info.get("engine", ""), "sorting_key": info.get("sorting_key", ""),
        "create_table_query": info.get("create_table_query", ""),
        "time_column": info.get("time_column"),
        "columns": list(columns), "chunks": entries,
        "rows": sum(e["rows"] for e in entries), "bytes": sum(e["bytes"] for e in entries),
        "finished": finished.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# ---- exports ----

@dataclass(frozen=True)
class ExportFile:
    """One public file: a month of a monthly table, or a whole table (month None)."""

    table: str
    label: str          # "2024-01", or the table name for a whole table
    key: str
    month: int | None
    complete: bool      # a past month: rewritten only when its row count changed


def export_files(prefix: str, table: str, months: Iterable[int] | None, now: dt.datetime,
                 since: int | None = None) -> list[ExportFile]:
    """The files of one public table; `months` None for a table exported whole."""
    base = f"{prefix}/{_part(table)}"
    if months is None:
        return [ExportFile(table, table, f"{base}/{table}{EXPORT_EXT}", None, False)]
    current = month_of(now)
    return [ExportFile(table, month_label(m), f"{base}/{month_label(m)}{EXPORT_EXT}", m,
                       m < current)
            for m in sorted(months) if since is None or m >= since]


def export_manifest_key(prefix: str, table: str) -> str:
    return f"{prefix}/{_part(table)}/{MANIFEST}"


def export_up_to_date(entry: Mapping[str, Any] | None, f: ExportFile, source_rows: int,
                      checksum: str | None) -> bool:
    """Whether the file already present matches the table: a past month by its row count
    (cheap), anything else by row count and content checksum."""
    if not entry or entry.get("key") != f.key or entry.get("source_rows") != source_rows:
        return False
    return f.complete or (checksum is not None and entry.get("checksum") == checksum)
