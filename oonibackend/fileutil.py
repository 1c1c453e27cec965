"""File-system primitives shared by every job that writes durably or owns a directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def fsync_dir(path: Path | str) -> None:
    """Make a directory's entries (created, renamed, deleted files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644,
                 dir_mode: int | None = None) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content, never
    half of it: a temporary file beside it (created with `mode`), fsynced, renamed over it,
    then the directory fsynced. `dir_mode`: create missing parent directories with it."""
    if dir_mode is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def try_flock(path: Path | str, *, write_pid: bool = False) -> int | None:
    """Take an exclusive lock on `path` without blocking: its file descriptor, or None when
    another process holds it. The lock dies with the process, so a crash never leaves it
    stale. With `write_pid`, the file then holds our pid, for operators to find the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if write_pid:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def release_flock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
