"""The resume log of a reprocessing run: one object key per line, appended and fsynced
once every row read from that object has been inserted.

A run killed at any point therefore re-reads only objects not in the log; rows of a
partly inserted object are inserted again on the next run, which ClickHouse deduplicates
(ReplacingMergeTree), so nothing is missing and nothing is doubled after a merge.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class DoneLog:
    """Keys already processed; `add` makes new ones durable before returning."""

    def __init__(self, path: Path, resume: bool = True) -> None:
        self.path = path
        self.done: set[str] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.exists():
            data = path.read_bytes()
            complete = data[:data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                # A line cut by a crash: drop it (that object is simply redone).
                os.truncate(path, len(complete))
            self.done = set(complete.decode("utf-8").splitlines())
        self._f = open(path, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def add(self, keys: Iterable[str]) -> None:
        new = [k for k in keys if k not in self.done]
        if not new:
            return
        self._f.write("".join(k + "\n" for k in new))
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.update(new)

    def close(self) -> None:
        self._f.close()
