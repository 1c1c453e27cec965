"""The on-disk spool layout, shared with the legacy uploader and the fastpath:

    <spool>/incoming/<YYYYmmddHH>_<CC>_<testname>/<uid>.post    raw body, one per measurement
    <spool>/incoming/<hour dir>/.delivered                       uids accepted by the fastpath
    <spool>/wal/<seq>.wal                                        write-ahead log (see wal.py)

Every name is validated with `oonibackend.ids` before a path is built from it. All functions
here do blocking I/O: call them from a thread, never from the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from oonibackend import ids

log = logging.getLogger(__name__)

INCOMING = "incoming"
WAL = "wal"
DELIVERED = ".delivered"
POST = ".post"
TMP = ".post.tmp"
# Above this many files one syncfs(2) is much cheaper than one fsync per file (measured on
# ext4: 20,000 fresh 7 KB files took 3.8 s to fsync one by one, 0.23 s with syncfs).
SYNCFS_THRESHOLD = 64


def post_path(incoming: Path, hour_dir: str, uid: str) -> str:
    """Path of a measurement file; ValueError unless both names are well-formed."""
    if not ids.is_valid_hour_dir(hour_dir) or not ids.is_valid_uid(uid):
        raise ValueError(f"invalid spool name {hour_dir!r}/{uid!r}")
    return os.path.join(incoming, hour_dir, uid + POST)


def write_post(path: str, body: bytes) -> bool:
    """Write `<uid>.post` via a temporary file and rename, so no reader ever sees it partial
    (files are created after the measurement is acknowledged, while readers may look).

    No fsync: the WAL holds the durable copy until the next checkpoint. Returns True when the
    hour directory had to be created (its entry in `incoming/` then needs syncing too).
    """
    tmp = path[: -len(POST)] + TMP
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    created = False
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        created = True
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        # Disk full, I/O error: no partial temporary file left behind (it is retried, and a
        # full disk must not fill with litter).
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return created


def same_content(path: str, body: bytes) -> bool:
    """Whether the file holds exactly `body` (a crash can leave a short or zero-filled file)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(body) + 1) == body
    except FileNotFoundError:
        return False


def _load_syncfs():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs()


def syncfs(path: Path | str) -> bool:
    """syncfs(2) on the filesystem holding `path`; False when unavailable (not Linux)."""
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable(root: Path, files: list[str], dirs: Iterable[str]) -> None:
    """Make written files and the directory entries that name them durable.

    Few files: fsync each, then each directory. Many: one syncfs of the spool's filesystem,
    which flushes them all at once (and, as a side effect, other dirty data on that
    filesystem). Files deleted meanwhile (e.g. by the uploader) are skipped.
    """
    if len(files) > SYNCFS_THRESHOLD and syncfs(root):
        return
    for f in files:
        try:
            fsync_path(f)
        except FileNotFoundError:
            pass
    for d in dirs:
        try:
            fsync_path(d, directory=True)
        except FileNotFoundError:
            pass


def hour_dirs(incoming: Path) -> list[str]:
    """Valid hour directory names, oldest first."""
    try:
        names = os.listdir(incoming)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if ids.is_valid_hour_dir(n))


def read_delivered(directory: str) -> set[str]:
    """Uids recorded as delivered in a directory; a torn last line is ignored."""
    try:
        with open(os.path.join(directory, DELIVERED), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return set()
    out = set()
    for line in data.split(b"\n"):
        uid = line.decode("ascii", "replace")
        if ids.is_valid_uid(uid):
            out.add(uid)
    return out


def append_delivered(incoming: Path, batch: dict[str, list[str]]) -> None:
    """Append delivered uids to each hour directory's `.delivered` (no fsync: a lost line only
    causes one re-delivery, which the fastpath collapses). Gone directories are skipped: the
    uploader has archived them."""
    for hour_dir, uids in batch.items():
        if not ids.is_valid_hour_dir(hour_dir):
            continue
        data = "".join(u + "\n" for u in uids if ids.is_valid_uid(u)).encode("ascii")
        try:
            fd = os.open(os.path.join(incoming, hour_dir, DELIVERED),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except FileNotFoundError:
            continue
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                # Disk full after part of the batch: cut the torn line off, so that the
                # caller's retry does not glue its first uid to it.
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def scan_pending(incoming: Path, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """(hour dir, uid) of spooled measurements not yet delivered, oldest hour first, at most
    `limit`; the flag is True when more remain."""
    out: list[tuple[str, str]] = []
    for hour_dir in hour_dirs(incoming):
        directory = os.path.join(incoming, hour_dir)
        try:
            names = sorted(e.name for e in os.scandir(directory) if e.name.endswith(POST))
        except FileNotFoundError:
            continue
        delivered = read_delivered(directory)
        for name in names:
            uid = name[: -len(POST)]
            if uid in delivered or not ids.is_valid_uid(uid):
                continue
            if len(out) >= limit:
                return out, True
            out.append((hour_dir, uid))
    return out, False


def remove_stale_tmp(incoming: Path, older_than: float = 60.0) -> int:
    """Delete `*.post.tmp` left by a crash between write and rename. Their measurements were
    either never acknowledged or are rewritten from the WAL, so the files are garbage."""
    removed = 0
    cutoff = time.time() - older_than
    for hour_dir in hour_dirs(incoming):
        directory = os.path.join(incoming, hour_dir)
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for e in entries:
            if not e.name.endswith(TMP):
                continue
            try:
                if e.stat().st_mtime < cutoff:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                pass
    return removed
