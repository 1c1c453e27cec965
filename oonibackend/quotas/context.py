"""Lifecycle of the quota store in an API process: open, flush periodically, flush on exit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.metrics import Metrics
from oonibackend.quotas.policy import QUOTA_POLICY, QuotaPolicy
from oonibackend.quotas.store import QuotaStore

log = logging.getLogger(__name__)
# Set by quotas_ctx below; absent when quotas are disabled.
QUOTAS = web.AppKey("quotas", QuotaStore)


async def flush_once(store: QuotaStore, now: float | None = None) -> bool:
    """Write pending charges (and any due replenishment) from a thread; skip when idle.

    Returns whether a write happened. A failed write puts its charges back for the next try.
    """
    now = time.time() if now is None else now
    if not store.has_pending() and not store.replenish_due(now):
        return False
    batch = store.begin_flush()
    ok = False
    try:
        await asyncio.to_thread(store.write, batch, now)
        ok = True
    finally:
        store.end_flush(batch, ok)
    return True


async def _flush_loop(store: QuotaStore, interval: float, stop: asyncio.Event,
                      metrics: Metrics) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
        if stop.is_set():
            return
        t0 = time.perf_counter()
        try:
            if await flush_once(store):
                metrics.observe("quota_flush_duration_seconds", time.perf_counter() - t0,
                                help="Time to write pending quota charges to LMDB")
        except Exception:
            metrics.inc("quota_flush_errors_total", help="Failed quota flushes (retried)")
            log.exception("quota flush failed")


async def quotas_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the shared store at app[QUOTAS] (and the policy) unless quotas are disabled."""
    cfg = app[CONFIG]
    if not cfg.quotas.enabled:
        yield
        return
    policy = QuotaPolicy.from_config(cfg)
    # Opening may wait for another process's write transaction: keep it off the loop.
    store = await asyncio.to_thread(QuotaStore.from_config, cfg)
    app[QUOTA_POLICY] = policy
    app[QUOTAS] = store
    stop = asyncio.Event()
    flusher = asyncio.create_task(_flush_loop(store, cfg.quotas.flush_interval, stop,
                                              app[METRICS]))
    try:
        yield
    finally:
        stop.set()
        await flusher
        try:
            await asyncio.to_thread(store.flush)
        except Exception:
            log.exception("final quota flush failed")
        store.close()
