"""Real measurement uids of jsonl.gz lines, from the `jsonl` table (s3path, linenum).

The table is ordered by (report_id, input), so a lookup by s3path is a scan: paths are
therefore asked for in chunks (one scan per chunk of files, not per file), just ahead of
the file being read, and forgotten once used, so memory stays bounded on long runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from oonibackend.objectstore.keys import JSONL

CHUNK = 200

Query = Callable[[str, dict[str, Any]], Awaitable[list[dict[str, Any]]]]


class JsonlUids:
    """`await uids.get(key)` -> {linenum: uid} for jsonl.gz keys announced with `plan`."""

    def __init__(self, query: Query, chunk: int = CHUNK) -> None:
        self._query = query
        self._chunk = chunk
        self._pending: list[str] = []
        self._cache: dict[str, dict[int, str]] = {}

    def plan(self, keys: Sequence[str]) -> None:
        """The jsonl keys about to be read, in reading order."""
        self._pending.extend(k for k in keys if k.endswith(JSONL))

    async def get(self, key: str) -> dict[int, str]:
        if key not in self._cache:
            if key in self._pending:
                i = self._pending.index(key)
                chunk = self._pending[i:i + self._chunk]
                del self._pending[:i + len(chunk)]
            else:
                chunk = [key]
            await self._load(chunk)
        return self._cache.pop(key, {})

    async def _load(self, paths: list[str]) -> None:
        rows = await self._query(
            "SELECT s3path, linenum, measurement_uid FROM jsonl WHERE s3path IN %(paths)s",
            {"paths": paths})
        for p in paths:
            self._cache.setdefault(p, {})
        for r in rows:
            if r.get("measurement_uid"):
                self._cache[r["s3path"]][int(r["linenum"])] = r["measurement_uid"]
