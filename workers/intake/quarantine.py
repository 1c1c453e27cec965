"""Quarantine: measurements the fastpath could not turn into rows, kept for a human.

`<fastpath dir>/quarantine/<uid>.post` holds the body exactly as received and `<uid>.reason`
says why (invalid measurement, scorer crash, worker died twice, rejected by the database).
Once both files are durable the entry is committed out of the intake queue, so a poison
measurement never blocks the ones behind it and is never silently lost.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from oonibackend import ids
from oonibackend.fileutil import fsync_dir


class Quarantine:
    def __init__(self, directory: Path, sync: bool = True) -> None:
        self.directory = Path(directory)
        self._sync = sync

    def path(self, uid: str) -> Path:
        if not ids.is_valid_uid(uid):  # uids become file names: validated once more
            raise ValueError(f"invalid measurement uid {uid!r}")
        return self.directory / f"{uid}.post"

    async def put(self, uid: str, body: bytes, reason: str) -> Path:
        return await asyncio.to_thread(self.write, uid, body, reason)

    def write(self, uid: str, body: bytes, reason: str) -> Path:
        post = self.path(uid)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(post, body)
        self._write(post.with_suffix(".reason"), reason.rstrip("\n").encode() + b"\n")
        if self._sync:
            fsync_dir(self.directory)
        return post

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self._sync:
                f.flush()
                os.fdatasync(f.fileno())
        os.replace(tmp, path)

    def list(self) -> list[str]:
        """Quarantined uids (for tests and operators)."""
        return sorted(p.stem for p in self.directory.glob("*.post"))
