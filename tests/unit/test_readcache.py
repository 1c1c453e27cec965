"""The read cache computes each key once per TTL, even under a burst, and never caches errors."""

import asyncio

import pytest

from oonibackend.readcache import ReadCache


def test_a_burst_of_misses_runs_one_computation():
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return {"n": calls}

    async def go():
        cache = ReadCache()
        results = await asyncio.gather(*(cache.get("k", 60, compute) for _ in range(20)))
        again = await cache.get("k", 60, compute)
        return results, again

    results, again = asyncio.run(go())
    assert calls == 1 and all(r == {"n": 1} for r in results) and again == {"n": 1}


def test_expired_entries_are_recomputed():
    async def go():
        cache = ReadCache()
        a = await cache.get("k", 0, lambda: asyncio.sleep(0, result=1))
        b = await cache.get("k", 0, lambda: asyncio.sleep(0, result=2))
        return a, b

    assert asyncio.run(go()) == (1, 2)


def test_errors_reach_every_waiter_and_are_not_cached():
    async def boom():
        await asyncio.sleep(0.01)
        raise RuntimeError("db down")

    async def go():
        cache = ReadCache()
        results = await asyncio.gather(*(cache.get("k", 60, boom) for _ in range(3)),
                                       return_exceptions=True)
        ok = await cache.get("k", 60, lambda: asyncio.sleep(0, result="fine"))
        return results, ok

    results, ok = asyncio.run(go())
    assert all(isinstance(r, RuntimeError) for r in results) and ok == "fine"


def test_entries_are_bounded_oldest_first():
    async def go():
        cache = ReadCache(max_entries=2)
        for k in "abc":
            await cache.get(k, 60, lambda k=k: asyncio.sleep(0, result=k))
        return await cache.get("a", 60, lambda: asyncio.sleep(0, result="new"))

    assert asyncio.run(go()) == "new"


@pytest.mark.parametrize("ttl", [60])
def test_clear(ttl):
    async def go():
        cache = ReadCache()
        await cache.get("k", ttl, lambda: asyncio.sleep(0, result=1))
        cache.clear()
        return await cache.get("k", ttl, lambda: asyncio.sleep(0, result=2))

    assert asyncio.run(go()) == 2


def test_entries_are_bounded_in_bytes():
    async def go():
        cache = ReadCache(max_bytes=10)
        await cache.get("a", 60, lambda: asyncio.sleep(0, result=b"123456"))
        await cache.get("b", 60, lambda: asyncio.sleep(0, result=b"123456"))  # evicts a
        a = await cache.get("a", 60, lambda: asyncio.sleep(0, result=b"new"))
        b = await cache.get("b", 60, lambda: asyncio.sleep(0, result=b"other"))
        return a, b

    assert asyncio.run(go()) == (b"new", b"123456")
