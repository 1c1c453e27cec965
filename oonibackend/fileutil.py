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
