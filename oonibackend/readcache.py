"""A per-process cache of expensive read answers (Explorer's full-table statistics).

Each key is computed at most once per TTL, with a single flight: a burst of page loads that
all miss the cache waits for one query instead of sending one each. Bounded in entries; the
oldest entry goes first. Failures are not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

DEFAULT_ENTRIES = 2048


class ReadCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self._max = max_entries
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
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
