"""`CommittedLog`: the uids the intake queue committed lately, remembered across restarts.

Why: the API records "delivered" marks a moment after the feeder's 200 (batched, every
0.5 s). A crash of the API in between loses the marks, and after its restart it delivers
those measurements again. If the fastpath still has them queued, `IntakeQueue.put` already
answers for them; if it has committed them (their rows are in the database), it must not
queue them again either, or they would be scored and stored a second time. So every commit
appends the uids here, and `put` answers 200 for a uid found here without queueing it.

Two generations of files, `committed.0` (older) and `committed.1` (current), one uid per
line, appended without fsync (like the queue's commit marks: a process crash keeps them, a
power loss may cost re-deliveries, which the ReplacingMergeTree collapses). When the current
one holds `keep` uids it becomes the older one: between `keep` and `2 * keep` of the latest
commits are remembered, a few minutes at full speed, far more than a restarted API needs to
deliver its unmarked measurements again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

KEEP = 50_000
OLD, CURRENT = "committed.0", "committed.1"


def _read(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n")  # a torn last line is ignored
    return [line.decode("ascii", "replace") for line in data[:end + 1].split(b"\n") if line]


class CommittedLog:
    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = Path(directory)
        self.keep = max(1, keep)
        self._old: set[str] = set()
        self._cur: set[str] = set()
        self._fd = -1
        self._failing = False  # logged once per failure streak (a full disk)
        self._opened = False

    def open(self) -> int:
        """Load both generations and open the current one for appending; returns how many
        uids are remembered."""
        self._old = set(_read(self.directory / OLD))
        self._cur = set(_read(self.directory / CURRENT))
        self._opened = True
        try:
            self._fd = os.open(self.directory / CURRENT,
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as e:  # a full disk: remembered in memory, the file tried again later
            log.error("cannot open the committed uids", extra={"error": str(e)})
        return len(self._old | self._cur)

    def __contains__(self, uid: object) -> bool:
        return uid in self._cur or uid in self._old

    def __len__(self) -> int:
        return len(self._cur) + len(self._old)

    def add(self, uids: Iterable[str]) -> None:
        """Remember committed uids (before their commit marks are written). Never raises: a
        uid not remembered only risks a duplicate row if the API also delivers it again."""
        new = [u for u in uids if u not in self._cur]
        if not new:
            return
        self._cur.update(new)
        if self._opened and self._fd < 0:  # a rotation failed (a full disk): again
            try:
                self._fd = os.open(self.directory / CURRENT, os.O_WRONLY | os.O_CREAT
                                   | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except OSError:
                pass
        if self._fd >= 0:
            try:
                view = memoryview("".join(u + "\n" for u in new).encode("ascii", "replace"))
                while view:
                    view = view[os.write(self._fd, view):]
                if self._failing:
                    self._failing = False
                    log.info("committed uids recorded again")
            except OSError as e:
                if not self._failing:
                    log.error("cannot record committed uids (kept in memory)",
                              extra={"error": str(e)})
                self._failing = True
        if len(self._cur) >= self.keep:
            self._rotate()

    def _rotate(self) -> None:
        self._old, self._cur = self._cur, set()
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        try:
            os.replace(self.directory / CURRENT, self.directory / OLD)
            self._fd = os.open(self.directory / CURRENT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                               | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as e:
            log.error("cannot rotate the committed uids", extra={"error": str(e)})

    def close(self) -> None:
        self._opened = False
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
