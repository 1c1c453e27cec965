"""Quota middleware, header hook, lifecycle and the admin summary, on an in-process app.

An in-process app can have a deliberately slow route, so budgets of one second are spent in a
few requests (the integration tests use real processes and pre-spent budgets instead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from oonibackend.accounts.auth import AUTH, Auth
from oonibackend.appkeys import CONFIG, METRICS
from oonibackend.clientip import network_key
from oonibackend.config import Config, load
from oonibackend.errors import APIError, error_middleware
from oonibackend.metrics import Metrics
from oonibackend.quotas import middleware
from oonibackend.quotas.context import QUOTAS, flush_once
from oonibackend.quotas.keys import account_key
from oonibackend.quotas.middleware import quota_middleware
from oonibackend.quotas.store import QuotaStore
from oonibackend.routes import quotas_summary

SECRET = "s" * 32
HDR = "X-RateLimit-Remaining"


def token(secret: str = SECRET, **claims) -> str:
    body = {"aud": "user_auth", "account_id": "acc1", "role": "user",
            "exp": int(time.time()) + 3600, **claims}
    return "Bearer " + jwt.encode(body, secret, algorithm="HS256")


def make_cfg(tmp_path: Path, **quotas) -> Config:
    overrides = {f"quotas.{k}": v for k, v in quotas.items()}
    cfg = load(None, data_dir=str(tmp_path), **overrides)
    cfg.probe.jwt_secret = SECRET
    return cfg


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0.6")))
    return web.Response(text="slow")


async def fast(request: web.Request) -> web.Response:
    return web.Response(text="fast")


async def fails(request: web.Request) -> web.Response:
    raise APIError("Invalid thing", 400)


def build(cfg: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware, quota_middleware])
    app[CONFIG] = cfg
    app[METRICS] = Metrics()
    app[AUTH] = Auth(secret=cfg.jwt_secret(), hashing_key="k")  # normally routes/auth.py's
    quotas_summary.setup(app)
    middleware.setup(app)  # idempotent: the lifecycle and hook stay registered once
    for path, h in (("/slow", slow), ("/fast", fast), ("/fails", fails), ("/health", fast),
                    ("/report/x", fast)):
        app.router.add_get(path, h)
    return app


@pytest.fixture
async def client_for(tmp_path: Path) -> AsyncIterator[Callable]:
    clients: list[TestClient] = []

    async def make(**quotas) -> TestClient:
        c = TestClient(TestServer(build(make_cfg(tmp_path, **quotas))))
        await c.start_server()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


def ip(addr: str) -> dict[str, str]:
    return {"X-Real-IP": addr}


async def test_registered_once(tmp_path: Path):
    app = build(make_cfg(tmp_path))
    from oonibackend.quotas.context import quotas_ctx
    assert list(app.cleanup_ctx).count(quotas_ctx) == 1
    assert len(app.on_response_prepare) == 1


async def test_metered_response_has_remaining_header(client_for):
    c = await client_for()
    r = await c.get("/fast", headers=ip("1.2.3.4"))
    assert r.status == 200
    assert r.headers[HDR] == "3999"  # int(min over buckets) of 4000 - a few microseconds


async def test_unmetered_paths_and_whitelist(client_for):
    c = await client_for(whitelist=["5.5.5.5", "6.6.0.0/16"])
    for path, addr in (("/health", "1.2.3.4"), ("/report/x", "1.2.3.4"),
                       ("/fast", "5.5.5.5"), ("/fast", "6.6.7.8")):
        r = await c.get(path, headers=ip(addr))
        assert r.status == 200
        assert HDR not in r.headers, (path, addr)
    store: QuotaStore = c.app[QUOTAS]
    assert not store._pending


async def test_error_responses_are_metered_and_carry_header(client_for):
    c = await client_for()
    r = await c.get("/fails", headers=ip("1.2.3.4"))
    assert r.status == 400 and (await r.json()) == {"error": "Invalid thing"}
    assert r.headers[HDR] == "3999"
    r = await c.get("/no/such/route", headers=ip("1.2.3.4"))
    assert r.status == 404 and r.headers[HDR] == "3999"


async def test_budget_exhausted_then_429(client_for):
    c = await client_for(daily=1)
    h = ip("1.2.3.4")
    r = await c.get("/slow", headers=h)  # 0.6 s of 1 s
    assert r.status == 200 and r.headers[HDR] == "0"
    r = await c.get("/slow", headers=h)  # overdraws: still served, then nothing left
    assert r.status == 200 and r.headers[HDR] == "0"
    r = await c.get("/fast", headers=h)
    assert r.status == 429
    assert await r.json() == {"error": "Quota exceeded"}
    assert r.headers[HDR] == "0"
    assert r.headers["Cache-Control"] == "no-cache"
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    # The same /24 shares the budget; another network and unmetered paths are unaffected.
    assert (await c.get("/fast", headers=ip("1.2.3.200"))).status == 429
    assert (await c.get("/fast", headers=ip("1.2.4.1"))).status == 200
    assert (await c.get("/health", headers=h)).status == 200
    assert c.app[METRICS].value("quota_exceeded_total") == 2


async def test_remaining_decreases(client_for):
    c = await client_for(daily=3)
    h = ip("2001:db8:1::1")
    seen = []
    for _ in range(3):
        r = await c.get("/slow?s=0.5", headers=h)
        seen.append(int(r.headers[HDR]))
    assert seen == [2, 1, 1] or seen == [2, 1, 0], seen
    # Another address in the same /48 shares it.
    r = await c.get("/fast", headers=ip("2001:db8:1:ffff::2"))
    assert int(r.headers[HDR]) <= 1


async def test_account_token_budget(client_for):
    c = await client_for()
    r = await c.get("/fast", headers={**ip("1.2.3.4"), "Authorization": token()})
    assert r.headers[HDR] == "499"
    # Invalid or foreign tokens: anonymous.
    for bad in (token(secret="o" * 32), token(aud="register"), token(exp=1), "Bearer junk",
                token(account_id=12)):
        r = await c.get("/fast", headers={**ip("1.2.3.4"), "Authorization": bad})
        assert r.headers[HDR] == "3999"
    store: QuotaStore = c.app[QUOTAS]
    assert account_key("acc1") in store._pending
    assert network_key("1.2.3.4") in store._pending


async def test_account_budget_exhausted(client_for):
    c = await client_for(token_daily=1)
    auth = {**ip("1.2.3.4"), "Authorization": token()}
    await c.get("/slow?s=1.05", headers=auth)
    r = await c.get("/fast", headers=auth)
    assert r.status == 429
    # The network itself still has its own budget.
    assert (await c.get("/fast", headers=ip("1.2.3.4"))).status == 200


async def test_spoofed_header_from_untrusted_peer(tmp_path: Path):
    cfg = make_cfg(tmp_path)
    cfg.server.trusted_proxies = []
    async with TestClient(TestServer(build(cfg))) as c:
        await c.get("/fast", headers=ip("9.9.9.9"))
        store: QuotaStore = c.app[QUOTAS]
        assert list(store._pending) == [network_key("127.0.0.1")]


async def test_disabled(client_for):
    c = await client_for(enabled=False)
    r = await c.get("/slow?s=0", headers=ip("1.2.3.4"))
    assert r.status == 200 and HDR not in r.headers
    assert QUOTAS not in c.app
    r = await c.get("/api/_/quotas_summary", headers={"Authorization": token(role="admin")})
    assert r.status == 200 and await r.json() == []


async def test_flusher_writes_in_background(client_for):
    c = await client_for(flush_interval=0.05)
    await c.get("/slow?s=0.01", headers=ip("1.2.3.4"))
    store: QuotaStore = c.app[QUOTAS]
    for _ in range(100):
        if not store.has_pending():
            break
        await asyncio.sleep(0.02)
    assert not store.has_pending()
    other = store.sibling()  # no pending charges of its own: sees only what was written
    assert other.remaining(network_key("1.2.3.4"))["daily"] < 4000
    assert store.last_replenish() is not None


async def test_flush_on_shutdown(tmp_path: Path):
    cfg = make_cfg(tmp_path, flush_interval=3600.0)
    async with TestClient(TestServer(build(cfg))) as c:
        await c.get("/slow?s=0.2", headers=ip("1.2.3.4"))
    s = QuotaStore.from_config(cfg)
    try:
        assert s.remaining(network_key("1.2.3.4"))["daily"] == pytest.approx(3999.8, abs=0.05)
    finally:
        s.close()


async def test_flush_once_skips_when_idle(tmp_path: Path):
    s = QuotaStore.from_config(make_cfg(tmp_path))
    try:
        now = time.time()
        assert await flush_once(s, now) is True  # starts the replenish clock
        assert await flush_once(s, now + 1) is False
        s.charge(b"t1", 1)
        assert await flush_once(s, now + 2) is True
        assert s.remaining(b"t1")["daily"] == 499
    finally:
        s.close()


async def test_summary_auth(client_for):
    c = await client_for()
    r = await c.get("/api/_/quotas_summary")
    assert r.status == 401 and await r.json() == {"error": "Authentication required"}
    r = await c.get("/api/_/quotas_summary", headers={"Authorization": "Bearer junk"})
    assert r.status == 401
    r = await c.get("/api/_/quotas_summary", headers={"Authorization": token(role="user")})
    assert r.status == 403 and "error" in await r.json()


async def test_summary_lists_lowest(client_for):
    c = await client_for()
    store: QuotaStore = c.app[QUOTAS]
    store.charge(network_key("1.2.3.4"), 100)
    store.charge(network_key("2001:db8:1::1"), 50)
    store.charge(account_key("acc9"), 400)
    for i in range(30):
        store.charge(network_key(f"10.0.{i}.1"), 1)
    r = await c.get("/api/_/quotas_summary", headers={"Authorization": token(role="admin")})
    assert r.status == 200
    assert "no-cache" in r.headers["Cache-Control"]
    body = await r.json()
    assert len(body) == 20
    assert body[0] == ["account:acc9", 100.0]
    assert body[1] == ["1.2.3.0/24", 3900.0]
    assert body[2] == ["2001:db8:1::/48", 3950.0]
    assert body[3][0].startswith("10.0.") and body[3][0].endswith(".0/24")
