"""Which sources a body is looked for in, and the byte-bounded single-flight cache."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from oonibackend.bodies.cache import BodyCache
from oonibackend.bodies.lookup import ARCHIVE, PEERS, SPOOL, is_fresh, source_order

NOW = dt.datetime(2024, 1, 2, 3, 30, 0)
RID = "20240102T030000Z_webconnectivity_IT_3269_n1_abcdefghijklmnop"


def uid_at(t: str) -> str:
    return f"{t}.123456_IT_webconnectivity_0123456789abcdef"


def test_fresh_new_format_measurements_are_looked_for_in_spools_first():
    assert source_order(RID, uid_at("20240102032000"), NOW) == (SPOOL, PEERS, ARCHIVE)


def test_older_ones_in_the_archive_first():
    assert source_order(RID, uid_at("20240102022000"), NOW) == (ARCHIVE, SPOOL, PEERS)


def test_legacy_report_ids_only_in_the_archive():
    assert source_order("20140102T030000Z_AS3269_abcdefghijk", uid_at("20240102032000"),
                        NOW) == (ARCHIVE,)
    assert source_order(RID, None, NOW) == (ARCHIVE,)


def test_freshness_is_one_hour_at_minute_precision():
    assert is_fresh(uid_at("20240102023100"), NOW)
    assert is_fresh(uid_at("20240102023000"), NOW)   # "202401020230" + more > "202401020230"
    assert not is_fresh(uid_at("20240102022959"), NOW)


def test_cache_is_bounded_by_bytes_least_recent_first():
    c = BodyCache(max_bytes=100)
    c.put("a", b"x" * 10)
    c.put("b", b"x" * 10)
    c.put("c", b"x" * 13)  # more than max/8: served, not kept
    assert c.get("c") is None and len(c) == 2
    for i in range(9):
        c.put(f"k{i}", b"y" * 10)
        c.get("a")  # kept fresh
    assert c.get("a") == b"x" * 10 and c.get("b") is None
    assert c.size <= 100 and c.size == sum(len(c.get(k) or b"") for k in list(c._items))


async def test_concurrent_misses_share_one_lookup():
    c = BodyCache()
    calls = 0
    gate = asyncio.Event()

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        return b"body"

    tasks = [asyncio.create_task(c.get_or_load("u", load)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [b"body"] * 5
    assert calls == 1
    assert await c.get_or_load("u", load) == b"body" and calls == 1


async def test_not_found_and_failures_are_not_cached():
    c = BodyCache()
    assert await c.get_or_load("u", _none) is None
    with pytest.raises(RuntimeError):
        await c.get_or_load("u", _fail)
    assert await c.get_or_load("u", _body) == b"b"


async def test_a_cancelled_lookup_does_not_fail_its_waiters():
    c = BodyCache()
    gate = asyncio.Event()

    async def slow() -> bytes:
        await gate.wait()
        return b"slow"

    first = asyncio.create_task(c.get_or_load("u", slow))
    await asyncio.sleep(0)
    second = asyncio.create_task(c.get_or_load("u", _body))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == b"b"  # looked again itself
    with pytest.raises(asyncio.CancelledError):
        await first


async def _none() -> None:
    return None


async def _fail() -> bytes:
    raise RuntimeError("boom")


async def _body() -> bytes:
    return b"b"
