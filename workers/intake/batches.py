"""`BatchJournal`: the sink's durable record of the batches it is inserting.

Why: the sink inserts a batch, then commits its entries in the intake queue. A crash between
the two replays the entries after a restart, and without more they would be inserted a
second time: the ReplacingMergeTree merges the copies eventually, but every count read
without FINAL is wrong until then. So each insert carries ClickHouse's
`insert_deduplication_token`, and before the first try the sink records here which queue
entries the batch covers and its token. After a crash the fastpath first scores those
entries again and inserts them as the same batch with the same token: ClickHouse drops a
batch it already has (migration 0007 keeps the last 1000 tokens per table), and inserts one
it never got. Then the entries are committed and the record is removed.

One file per batch taken from the sink's buffer, `<token>.batch`, JSON:

    {"groups": [{"token": "9f...", "uids": ["2024...", ...], "skip": []}, ...]}

A batch is one group; a batch the database rejects as invalid data is split in halves, and
the file then lists the halves (tokens `<token>.0`, `<token>.1`, deterministic) instead of
the parent, with the tables the parent had inserted already (`skip`). A group leaves the
file once its entries are committed; the file goes with its last group.

Files are written to a temporary name, fdatasync'ed, then renamed: a file is whole or absent.
The threat is a crashed process (SIGKILL, OOM killer), which the page cache survives anyway.
The directory is not fsync'ed for a new batch: that forces a file-system journal commit per
batch, which stalled the intake queue's own fdatasyncs (600 measurements straight to the
feeder: accepted in 0.55-0.75 s instead of 0.4 s). After a power loss a new manifest may thus
be missing; that costs at most a duplicate until merged, never a loss, like the queue's
unsynced commit marks (and ClickHouse does not fsync its parts by default either). The rare
rewrites that change what a token stands for (a split, a replay without some entries) do
sync the directory: an older version coming back could reuse a token for other rows.
A group's uids may be fewer on replay than when it was written (entries committed since,
e.g. by a crash in the middle of the queue's commit): they were inserted with this very
token, so the rest is dropped as a duplicate too.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from oonibackend.fileutil import fsync_dir

log = logging.getLogger(__name__)

SUFFIX = ".batch"
TMP_SUFFIX = ".tmp"


@dataclass(eq=False, slots=True)
class Group:
    """Queue entries (by uid) inserted together with one deduplication token."""

    token: str
    uids: list[str]
    skip: frozenset[str] = frozenset()  # tables already holding these rows (split parents)


@dataclass(eq=False, slots=True)
class Manifest:
    """One journal file: the unfinished groups of one batch."""

    name: str
    groups: list[Group] = field(default_factory=list)


def encode(m: Manifest) -> bytes:
    return json.dumps({"groups": [{"token": g.token, "uids": g.uids,
                                   "skip": sorted(g.skip)} for g in m.groups]},
                      separators=(",", ":")).encode()


def decode(name: str, data: bytes) -> Manifest:
    """A manifest from its file's bytes; ValueError when it is not one."""
    obj = json.loads(data)
    groups = []
    for g in obj["groups"]:
        token, uids, skip = g["token"], g["uids"], g.get("skip", [])
        if not (isinstance(token, str) and token and isinstance(uids, list)
                and all(isinstance(u, str) for u in uids) and isinstance(skip, list)):
            raise ValueError("malformed group")
        groups.append(Group(token, list(uids), frozenset(map(str, skip))))
    return Manifest(name, groups)


class BatchJournal:
    def __init__(self, directory: Path, *, sync: bool = True) -> None:
        self.directory = Path(directory)
        self.sync = sync
        self._dir_ready = False
        self._seq = itertools.count()

    def _path(self, name: str) -> Path:
        return self.directory / (name + SUFFIX)

    def load(self) -> list[Manifest]:
        """Every manifest left by the previous run, oldest first (leftover temporary files,
        never renamed into place, are deleted: their batch was never inserted)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._dir_ready = True
        found: list[tuple[int, str, Manifest]] = []
        for p in self.directory.iterdir():
            if p.name.endswith(TMP_SUFFIX):
                p.unlink(missing_ok=True)
                continue
            if not p.name.endswith(SUFFIX):
                continue
            try:
                m = decode(p.name[:-len(SUFFIX)], p.read_bytes())
                mtime = p.stat().st_mtime_ns
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("unreadable batch manifest ignored", extra={"file": str(p),
                                                                     "error": repr(e)})
                continue
            found.append((mtime, m.name, m))
        found.sort(key=lambda t: (t[0], t[1]))
        return [m for _, _, m in found]

    def write(self, m: Manifest, *, sync: bool = True, sync_dir: bool = False) -> None:
        """Replace (or create) `m`'s file atomically; durable before returning when `sync`
        (and the journal syncs at all; the directory only with `sync_dir`, see above).
        Raises OSError."""
        self.write_bytes(m.name, encode(m), sync=sync, sync_dir=sync_dir)

    def write_bytes(self, name: str, data: bytes, *, sync: bool = True,
                    sync_dir: bool = False) -> None:
        """`write` of an already encoded manifest: what runs in a thread while the event
        loop may change the manifest (each call has its own temporary file; the last rename
        wins, and a stale version only lists groups that are finished by then)."""
        if not self._dir_ready:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._dir_ready = True
        sync = sync and self.sync
        final = self._path(name)
        tmp = final.with_name(f"{final.name}.{next(self._seq)}{TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if sync and sync_dir:
            fsync_dir(self.directory)

    def remove(self, m: Manifest) -> None:
        """Forget a finished batch. Not synced: a file that comes back only replays a batch
        that is dropped as a duplicate."""
        self._path(m.name).unlink(missing_ok=True)

    def names(self) -> Iterable[str]:
        """Manifests on disk (for tests and operators)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[:-len(SUFFIX)] for p in self.directory.glob("*" + SUFFIX))
