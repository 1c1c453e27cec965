"""A bounded background batch writer: many small records, one INSERT every so often.

Why: a record per submission (docs/current_services.md §2) at 1,000 submissions/s would be
1,000 inserts/s, each a ClickHouse part. Here `offer` only appends to a list (never awaits, never
fails); a task turns the pending items into rows in a thread (they may need a JSON parse) and
hands them to `sink` (one INSERT) every `interval` seconds. Nothing here may slow what offers:
past `max_items` or `max_bytes` pending, or when the sink fails (database down), items are
dropped and counted, not retried. `close` writes what is pending, within a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from oonibackend.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]


class BatchWriter(Generic[T]):
    """`offer` items; every `interval` seconds `to_rows(items)` (in a thread) goes to `sink`."""

    def __init__(self, name: str, sink: Callable[[list[Row]], Awaitable[None]],
                 to_rows: Callable[[Sequence[T]], list[Row]], metrics: Metrics, *,
                 interval: float, max_items: int, max_bytes: int,
                 size: Callable[[T], int] = lambda _: 0, timeout: float = 10.0) -> None:
        self.name = name
        self._sink = sink
        self._to_rows = to_rows
        self._metrics = metrics
        self._interval = interval
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._size = size
        self._timeout = timeout
        self._items: list[T] = []
        self._bytes = 0
        self._task: asyncio.Task[Any] | None = None
        self._stop = asyncio.Event()
        self._failing = False  # log an outage once, not once per batch
        metrics.set(f"{name}_queued", lambda: float(len(self._items)),
                    help=f"{name} records waiting for their batch insert")

    def _drop(self, n: int, reason: str) -> None:
        self._metrics.inc(f"{self.name}_dropped_total", n,
                          help=f"{self.name} records dropped (queue full or database down)",
                          reason=reason)

    def offer(self, item: T) -> bool:
        """Queue `item`; False (counted as dropped) when the queue is full. Never blocks."""
        size = self._size(item)
        if len(self._items) >= self._max_items or self._bytes + size > self._max_bytes:
            self._drop(1, "queue_full")
            return False
        self._items.append(item)
        self._bytes += size
        return True

    async def flush(self) -> int:
        """Write what is pending in one insert; the number of rows written (0 on failure)."""
        items, self._items, self._bytes = self._items, [], 0
        if not items:
            return 0
        try:
            rows = await asyncio.to_thread(self._to_rows, items)
            if rows:
                await asyncio.wait_for(self._sink(rows), self._timeout)
        except Exception as e:  # database down, timeout, a bad row: drop, never retry
            self._drop(len(items), "database")
            if not self._failing:
                log.warning("%s: batch insert failed, records dropped until it works again",
                            self.name, extra={"error": str(e) or type(e).__name__,
                                              "dropped": len(items)})
            self._failing = True
            return 0
        if self._failing:
            log.info("%s: batch inserts work again", self.name)
        self._failing = False
        self._metrics.inc(f"{self.name}_written_total", len(rows),
                          help=f"{self.name} records inserted")
        return len(rows)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            await self.flush()
        await self.flush()  # what was offered until the stop

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-writer")

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is pending (an insert in progress finishes first), within `timeout`."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            task = asyncio.create_task(self.flush())
        try:
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            log.warning("%s: pending records not written within %.0f s of shutdown",
                        self.name, timeout)
