"""A per-process cache of expensive read answers (Explorer's full-table statistics).

Each key is computed at most once per TTL, with a single flight: a burst of page loads that
all miss the cache waits for one query instead of sending one each. Bounded in entries and in
bytes (bytes and str values weigh their length, other values a nominal 1 KiB); the oldest
entry goes first. Failures are not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from aiohttp import web

DEFAULT_ENTRIES = 2048
DEFAULT_BYTES = 256 * 1024 * 1024
NOMINAL_WEIGHT = 1024


def weigh(value: Any) -> int:
    return len(value) if isinstance(value, bytes | bytearray | str) else NOMINAL_WEIGHT


class ReadCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES,
                 max_bytes: int = DEFAULT_BYTES) -> None:
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, ttl: float,
                  compute: Callable[[], Awaitable[Any]]) -> Any:
        hit = self._items.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._flights[key] = fut
        try:
            value = await compute()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._flights.pop(key, None)
        fut.set_result(value)
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= weigh(old[1])
        self._items[key] = (time.monotonic() + ttl, value)
        self._bytes += weigh(value)
        while self._items and (len(self._items) > self._max or self._bytes > self._max_bytes):
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= weigh(dropped)
        return value

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


# One per API process, set by routes/read_api.py.
READ_CACHE = web.AppKey("read_cache", ReadCache)
