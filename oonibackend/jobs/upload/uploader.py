"""The resumable upload of spool hour directories.

Per hour directory H, a small state machine kept in `<data_dir>/upload/<H>/state.json`
(rewritten atomically after every step):

1. plan     the sorted `.post` uids split into cans of ~20 MB, numbered n, n+1, ...; saved
            before anything is built or uploaded, so a measurement always lands in the same
            object whatever crashes happen later;
2. built    postcan, jsonl.gz and the rows sidecar written to the staging directory
            (deterministic bytes, fsync + rename);
3. uploaded both objects stored and verified (HEAD: size; an object already complete with the
            same MD5 is skipped, so a re-run never duplicates it);
4. recorded the `jsonl` rows inserted (ReplacingMergeTree keyed by report_id, input, uid:
            a repeated insert collapses);
5. done     the can's `.post` files deleted and the spool directory synced.

Nothing is deleted before step 4 has completed, so killing the uploader at any instant and
running it again redoes only what is missing. When every can of H is done, the next can
number is kept in `upload/done/<H>` (late files in H get new can numbers, never overwriting an
object), the staging directory is removed, and the hour directory with its `.delivered` goes
once no `.post` is left. An flock on `upload/LOCK` keeps two uploaders apart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from oonibackend import ids
from oonibackend.config import Config
from oonibackend.fileutil import fsync_dir, try_flock, write_atomic
from oonibackend.jobs import metrics as jobmetrics
from oonibackend.jobs.upload import files
from oonibackend.objectstore import ObjectStore, keys
from oonibackend.spool import layout
from oonibackend.storage import Database

log = logging.getLogger(__name__)

GRACE_SECONDS = 300
MARKER_DAYS = 60
JSONL_COLUMNS = ("report_id", "input", "s3path", "linenum", "measurement_uid", "date", "source",
                 "byte_offset", "byte_length")
_STEPS = ("planned", "built", "uploaded", "recorded", "done")


@dataclass
class Options:
    dry_run: bool = False
    hour: str | None = None          # YYYYMMDDHH: only this hour, closed or not
    can_bytes: int = files.CAN_MAX_BYTES
    grace: float = GRACE_SECONDS
    now: dt.datetime | None = None


@dataclass
class Summary:
    hours: int = 0
    cans: int = 0
    files: int = 0              # objects uploaded by this run
    files_present: int = 0      # objects found already complete (resumed run)
    measurements: int = 0       # jsonl rows recorded by this run
    posts_deleted: int = 0
    skipped: int = 0            # .post bodies without a JSON measurement (postcan only)
    bytes: int = 0
    seconds: float = 0.0
    planned: list[str] = field(default_factory=list)  # dry run: what would be done

    def line(self) -> str:
        return (f"{self.hours} hours, {self.cans} cans, {self.files} files uploaded "
                f"({self.files_present} already present), {self.measurements} measurements, "
                f"{self.bytes} bytes, {self.seconds:.2f} s")


class UploadError(Exception):
    """The upload state on disk is unusable, or another upload holds the lock."""


class UploadLocked(UploadError):
    pass


def host_id_of(cfg: Config) -> str:
    """`n<collector_id>`, the legacy uploader's host part of file names."""
    cid = cfg.server.collector_id
    if not cid.isascii() or not cid.isalnum():
        raise ValueError(f"invalid server.collector_id {cid!r}")
    return f"n{cid}"


def is_closed(hour_dir: str, now: dt.datetime, grace: float) -> bool:
    return keys.hour_of(hour_dir) + dt.timedelta(hours=1, seconds=grace) <= now


class Uploader:
    def __init__(self, cfg: Config, store: ObjectStore, db: Database | None, opts: Options,
                 out: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.store = store
        self.db = db
        self.opts = opts
        self.out = out
        self.incoming = cfg.path(cfg.spool.dir) / layout.INCOMING
        self.root = cfg.path("upload")
        self.host_id = host_id_of(cfg)
        self.summary = Summary()
        self._lock_fd = -1

    # -- the run -----------------------------------------------------------------------------

    def lock(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = try_flock(self.root / "LOCK")
        if fd is None:
            raise UploadLocked(f"another upload is running ({self.root / 'LOCK'})")
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def hours(self) -> list[str]:
        """Hour directories to process: closed ones (or the --hour ones), plus any with an
        unfinished plan, oldest first."""
        names = set(layout.hour_dirs(self.incoming))
        try:
            names |= {n for n in os.listdir(self.root) if ids.is_valid_hour_dir(n)
                      and (self.root / n / "state.json").is_file()}
        except FileNotFoundError:
            pass
        now = self.opts.now or dt.datetime.now(dt.UTC)
        out = []
        for h in sorted(names):
            if self.opts.hour is not None:
                if h.startswith(self.opts.hour + "_"):
                    out.append(h)
            elif is_closed(h, now, self.opts.grace):
                out.append(h)
        return out

    async def run(self) -> Summary:
        t0 = time.monotonic()
        for h in self.hours():
            await self.upload_hour(h)
            self.summary.hours += 1
        if not self.opts.dry_run:
            await asyncio.to_thread(self._prune_markers)
        self.summary.seconds = time.monotonic() - t0
        return self.summary

    # -- one hour ----------------------------------------------------------------------------

    def _state_path(self, h: str) -> Path:
        return self.root / h / "state.json"

    def _load(self, h: str) -> dict[str, Any] | None:
        try:
            state = orjson.loads(self._state_path(h).read_bytes())
        except FileNotFoundError:
            return None
        if state.get("hour_dir") != h:
            raise UploadError(f"{self._state_path(h)}: state of another hour")
        return state

    def _save(self, h: str, state: dict[str, Any]) -> None:
        write_atomic(self._state_path(h), orjson.dumps(state))

    def _next_n(self, h: str) -> int:
        try:
            return int((self.root / "done" / h).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _plan(self, h: str) -> dict[str, Any] | None:
        posts = files.list_posts(self.incoming / h)
        if not posts:
            return None
        n0 = self._next_n(h)
        cans = files.plan_cans(posts, self.opts.can_bytes)
        return {"hour_dir": h, "host_id": self.host_id, "created": time.time(),
                "cans": [{"n": n0 + i, "uids": uids, "status": "planned"}
                         for i, uids in enumerate(cans)]}

    async def upload_hour(self, h: str) -> None:
        for _ in range(3):  # a second pass picks up files that arrived meanwhile (--hour)
            state = await asyncio.to_thread(self._load, h)
            fresh = state is None
            if fresh:
                state = await asyncio.to_thread(self._plan, h)
                if state is None:
                    if not self.opts.dry_run:
                        await asyncio.to_thread(self._finish_hour, h)
                    return
            assert state is not None
            if self.opts.dry_run:
                self._describe(h, state, fresh)
                return
            if fresh:
                (self.root / h).mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(self._save, h, state)
            for can in state["cans"]:
                await self.process_can(h, state, can)
            await asyncio.to_thread(self._complete_plan, h, state)

    def _describe(self, h: str, state: dict[str, Any], fresh: bool) -> None:
        for can in state["cans"]:
            stem = keys.stem(h, state["host_id"], can["n"])
            line = (f"would upload {keys.raw_prefix(h)}{stem}.{{tar,jsonl}}.gz: "
                    f"{len(can['uids'])} measurements"
                    + ("" if fresh else f" (resuming, step {can['status']})"))
            self.summary.planned.append(line)
            self.summary.cans += 1
            self.out(line)

    async def process_can(self, h: str, state: dict[str, Any], can: dict[str, Any]) -> None:
        stem = keys.stem(h, state["host_id"], can["n"])
        staging = self.root / h
        spool_dir = self.incoming / h
        tar = staging / f"{stem}{keys.POSTCAN}"
        jsonl = staging / f"{stem}{keys.JSONL}"
        rows = staging / f"{stem}.rows.json"
        prefix = keys.raw_prefix(h)
        step = _STEPS.index(can["status"])
        if step == _STEPS.index("done"):
            return
        self.summary.cans += 1
        if step <= _STEPS.index("planned") or (step == _STEPS.index("built") and not (
                tar.is_file() and jsonl.is_file() and rows.is_file())):
            mtime = int(keys.hour_of(h).timestamp())
            res = await asyncio.to_thread(files.build_can, spool_dir, can["uids"], tar, jsonl,
                                          rows, mtime)
            self.summary.skipped += res.skipped
            await self._advance(h, state, can, "built")
        if can["status"] == "built":
            for path in (tar, jsonl):
                if path is jsonl and path.stat().st_size == 0:
                    continue  # no JSON measurement in this can: postcan only
                uploaded = await self.store.put(prefix + path.name, path)
                size = path.stat().st_size
                if uploaded:
                    self.summary.files += 1
                    self.summary.bytes += size
                else:
                    self.summary.files_present += 1
                self.out(f"{'uploaded' if uploaded else 'present '} {prefix}{path.name} "
                         f"({size} bytes)")
            await self._advance(h, state, can, "uploaded")
        if can["status"] == "uploaded":
            lines = await asyncio.to_thread(files.load_rows, rows)
            await self._record(h, prefix + jsonl.name, state["host_id"], lines)
            self.summary.measurements += len(lines)
            self.out(f"recorded {len(lines)} measurements of {prefix}{jsonl.name}")
            await self._advance(h, state, can, "recorded")
        if can["status"] == "recorded":
            self.summary.posts_deleted += await asyncio.to_thread(
                self._delete_posts, spool_dir, can["uids"])
            await self._advance(h, state, can, "done")
            for p in (tar, jsonl, rows):
                p.unlink(missing_ok=True)

    async def _advance(self, h: str, state: dict[str, Any], can: dict[str, Any],
                       status: str) -> None:
        can["status"] = status
        await asyncio.to_thread(self._save, h, state)

    async def _record(self, h: str, s3path: str, source: str, lines: list[files.Line]) -> None:
        if not lines:
            return
        assert self.db is not None
        day = keys.hour_of(h).date()
        rows = [{"report_id": x.report_id, "input": x.input, "s3path": s3path,
                 "linenum": x.linenum, "measurement_uid": x.measurement_uid, "date": day,
                 "source": source, "byte_offset": x.byte_offset, "byte_length": x.byte_length}
                for x in lines]
        for i in range(0, len(rows), 10000):
            await self.db.insert("jsonl", rows[i:i + 10000], JSONL_COLUMNS)

    @staticmethod
    def _delete_posts(spool_dir: Path, uids: list[str]) -> int:
        deleted = 0
        for uid in uids:
            if not ids.is_valid_uid(uid):
                continue
            try:
                os.unlink(spool_dir / (uid + files.POST))
                deleted += 1
            except FileNotFoundError:
                pass
        try:
            fsync_dir(spool_dir)
        except FileNotFoundError:
            pass
        return deleted

    def _complete_plan(self, h: str, state: dict[str, Any]) -> None:
        done = self.root / "done"
        done.mkdir(parents=True, exist_ok=True)
        next_n = max(c["n"] for c in state["cans"]) + 1
        write_atomic(done / h, f"{next_n}\n".encode())
        shutil.rmtree(self.root / h)
        fsync_dir(self.root)
        self._finish_hour(h)

    def _finish_hour(self, h: str) -> None:
        """Remove the hour directory (with `.delivered`) once no measurement is left in it."""
        d = self.incoming / h
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return
        if any(n.endswith(files.POST) or n.endswith(layout.TMP) for n in names):
            return
        try:
            (d / layout.DELIVERED).unlink(missing_ok=True)
            d.rmdir()
            fsync_dir(self.incoming)
        except OSError as e:  # a file arrived meanwhile: the next run takes it
            log.info("hour directory not removed", extra={"dir": str(d), "error": str(e)})

    def _prune_markers(self) -> None:
        """Forget the can numbers of hours finished more than MARKER_DAYS ago."""
        done = self.root / "done"
        cutoff = time.time() - MARKER_DAYS * 86400
        try:
            entries = list(os.scandir(done))
        except FileNotFoundError:
            return
        for e in entries:
            try:
                if ids.is_valid_hour_dir(e.name) and e.stat().st_mtime < cutoff:
                    os.unlink(e.path)
            except FileNotFoundError:
                pass


def write_metrics(path: Path, summary: Summary, ok: bool) -> None:
    """Prometheus text file (for node_exporter's textfile collector)."""
    jobmetrics.write(path, "upload", ok, summary.seconds, {
        "files": ("Objects uploaded by the latest run", summary.files),
        "measurements": ("Measurements recorded by the latest run", summary.measurements),
        "bytes": ("Bytes uploaded by the latest run", summary.bytes),
    })
