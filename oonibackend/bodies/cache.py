"""A least-recently-used cache of bodies by uid, bounded by total bytes.

Bodies are immutable, so entries never expire; only found bodies are cached (a measurement not
found now may be uploaded or spooled later). Concurrent misses for one uid share a single
lookup: Explorer's measurement page, its webview in OONI Probe and link previews tend to open
the same fresh measurement at once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

DEFAULT_MAX_BYTES = 64 << 20
# A body larger than this share of the cache is served but not kept.
MAX_ITEM_SHARE = 8


class BodyCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, uid: str) -> bytes | None:
        body = self._items.get(uid)
        if body is not None:
            self._items.move_to_end(uid)
        return body

    def put(self, uid: str, body: bytes) -> None:
        if len(body) > self.max_bytes // MAX_ITEM_SHARE:
            return
        old = self._items.pop(uid, None)
        if old is not None:
            self.size -= len(old)
        self._items[uid] = body
        self.size += len(body)
        while self.size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)

    async def get_or_load(self, uid: str, load: Callable[[], Awaitable[bytes | None]]
                          ) -> bytes | None:
        while True:
            body = self.get(uid)
            if body is not None:
                return body
            flight = self._flights.get(uid)
            if flight is None:
                break
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight.cancelled() or (task is not None and task.cancelling()):
                    raise
                # the request doing the lookup went away: look again (or up) ourselves
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._flights[uid] = fut
        try:
            body = await load()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._flights.pop(uid, None)
        fut.set_result(body)
        if body is not None:
            self.put(uid, body)
        return body
