"""The fastpath feeder's HTTP interface over a real intake queue: 200 only once durable,
400 for a bad uid, 413 for a large body, 503 beyond the bound, liveness and metrics; 401 for
anyone without the instance's key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from oonibackend.metrics import Metrics
from oonibackend.spool import delivery
from workers.intake.feeder import Feeder
from workers.intake.queue import IntakeQueue

UID = "20240101120000.123456_IT_webconnectivity_0123456789abcdef"
KEY = "0123456789abcdef" * 4


def uid(i: int) -> str:
    return f"20240101120000.{i:06d}_IT_webconnectivity_{i:016x}"


@pytest.fixture
async def queue(tmp_path) -> AsyncIterator[IntakeQueue]:
    q = IntakeQueue(tmp_path, 3)
    await q.open()
    yield q
    await q.close()


@pytest.fixture
async def server(queue) -> AsyncIterator[TestServer]:
    metrics = Metrics("fastpath")
    metrics.set("queue_depth", lambda: queue.depth)
    s = TestServer(Feeder(queue, metrics, 1000, KEY).app())
    await s.start_server()
    yield s
    await s.close()


@pytest.fixture
async def client(server) -> AsyncIterator[TestClient]:
    """The instance's API: every request carries the key."""
    c = TestClient(server, headers={"Authorization": f"Bearer {KEY}"})
    yield c
    await c.close()


async def test_strangers_are_refused(server, queue):
    for auth in (None, "Bearer ", f"Bearer {KEY[:-1]}", f"Bearer {KEY}x", KEY, f"Basic {KEY}"):
        async with aiohttp.ClientSession(headers={"Authorization": auth} if auth else {}) as c:
            for method, path, data in (("POST", f"/{UID}", b"{}"), ("GET", "/metrics", None),
                                       ("GET", "/", None), ("OPTIONS", f"/{UID}", None)):
                async with c.request(method, server.make_url(path), data=data) as r:
                    assert r.status == 401, (auth, method, path)
    assert queue.depth == 0  # nothing got in


async def answer(resp) -> tuple[int, dict]:
    assert resp.content_type == "application/json"
    return resp.status, json.loads(await resp.read())


async def test_liveness(client):
    for method, path in (("GET", "/"), ("GET", "/anything"), ("PUT", "/x"), ("HEAD", "/")):
        r = await client.request(method, path)
        assert r.status == 200, (method, path)
    assert await answer(await client.get("/")) == (200, {})


async def test_post_is_durable_before_200(client, queue):
    status, body = await answer(await client.post(f"/{UID}", data=b'{"format":"json"}'))
    assert (status, body) == (200, {})
    assert queue.depth == 1
    e = await queue.get()
    assert (e.uid, e.body) == (UID, b'{"format":"json"}')
    # The content is not looked at: anything is accepted and scored later.
    assert (await client.post(f"/{uid(2)}", data=b"\x00not json")).status == 200


@pytest.mark.parametrize("path", [
    "/", "/2foo/bar", "/20210208220710.181572_MA_ndt_7888edc7748936bf/..",
    "/20210208220710.181572_MA_ndt_7888edc7748936b",
    "/20210208220710.181572_M_ndt_7888edc7748936bf", "/..%2f..%2fetc%2fpasswd",
    "/20210208220710.181572_MA_ndt_7888edc7748936bf%0a",
])
async def test_bad_uid_is_400_json(client, queue, path):
    status, body = await answer(await client.post(path, data=b"{}"))
    assert status == 400 and body == {"error": "invalid measurement uid"}
    assert queue.depth == 0


async def test_query_string_is_not_part_of_the_uid(client, queue):
    assert (await client.post(f"/{UID}?x=1", data=b"q")).status == 200
    assert (await queue.get()).uid == UID


async def test_body_too_large_is_413(client, queue):
    status, body = await answer(await client.post(f"/{UID}", data=b"x" * 1001))
    assert status == 413 and "error" in body

    async def chunks():  # no Content-Length: the cap applies while reading
        for _ in range(3):
            yield b"y" * 400

    status, _ = await answer(await client.post(f"/{uid(1)}", data=chunks()))
    assert status == 413
    assert queue.depth == 0


async def test_503_beyond_the_bound(client, queue):
    for i in range(3):
        assert (await client.post(f"/{uid(i)}", data=b"m")).status == 200
    r = await client.post(f"/{uid(9)}", data=b"m")
    status, body = await answer(r)
    assert status == 503 and "full" in body["error"] and r.headers["Retry-After"] == "1"
    # A uid already queued is still answered 200 (it is durable already)... once there is
    # room; after a commit the next one is accepted.
    queue.commit([await queue.get()])
    assert (await client.post(f"/{uid(9)}", data=b"m")).status == 200


async def test_metrics(client):
    await client.post(f"/{UID}", data=b"m")
    await client.post("/bad", data=b"m")
    r = await client.get("/metrics")
    text = await r.text()
    assert r.status == 200 and r.content_type == "text/plain"
    assert "fastpath_queue_depth 1" in text
    assert 'fastpath_feeder_requests_total{status="200"} 1' in text
    assert 'fastpath_feeder_requests_total{status="400"} 1' in text
    assert "fastpath_received_total 1" in text


async def test_batch_is_durable_before_200(client, queue):
    items = [(uid(i), b'{"n": %d}' % i) for i in range(2)]
    data = b"".join(delivery.encode(u, b) for u, b in items)
    status, body = await answer(await client.post("/batch", data=data))
    assert (status, body) == (200, {"stored": 2})
    got = [await queue.get() for _ in range(2)]
    assert [(e.uid, e.body) for e in got] == items
    # Delivered again (the API lost its mark): accepted, not stored twice.
    assert (await client.post("/batch", data=data)).status == 200
    assert queue.depth == 2


async def test_batch_refused_whole(client, queue):
    good = delivery.encode(uid(1), b"{}")
    for data in (good + delivery.encode("bad uid", b"{}"), good + good[:-2],
                 good + delivery.encode(uid(2), b"x" * 1001)):
        status, _ = await answer(await client.post("/batch", data=data))
        assert status == 400
    assert queue.depth == 0
    # Beyond the bound (3): nothing of the batch is taken, the API retries it all.
    data = b"".join(delivery.encode(uid(i), b"{}") for i in range(3))
    assert (await client.post("/batch", data=data)).status == 200
    status, _ = await answer(await client.post(
        "/batch", data=delivery.encode(uid(9), b"{}")))
    assert status == 503 and queue.depth == 3


async def test_batch_needs_the_key(server, queue):
    async with aiohttp.ClientSession() as c:
        async with c.post(server.make_url("/batch"),
                          data=delivery.encode(uid(1), b"{}")) as r:
            assert r.status == 401
    assert queue.depth == 0
