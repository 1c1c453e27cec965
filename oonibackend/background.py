"""Background refresh of in-memory snapshots that request handlers read without I/O.

Start-up waits up to `first_wait` seconds for the first load, so the first requests see
data, but never fails: a database that is down only means an empty snapshot until it
comes back. Then `run()` (the snapshot's own refresh loop) goes on until shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


@contextlib.asynccontextmanager
async def refreshing(name: str, refresh: Callable[[], Awaitable[Any]],
                     run: Callable[[], Awaitable[Any]], first_wait: float) -> AsyncIterator[None]:
    first = asyncio.ensure_future(refresh())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(first), first_wait)

    async def loop() -> None:
        with contextlib.suppress(Exception):
            await first
        await run()

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await first
