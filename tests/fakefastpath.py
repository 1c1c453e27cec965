"""A tiny real HTTP server standing in for the fastpath: records `POST /<uid>` bodies and
the measurements of `POST /batch` (oonibackend/spool/delivery.py); `batches=False` plays a
feeder older than the batch route (it answers 400: "batch" is no uid).

Runs an aiohttp server on its own event loop in a thread, so tests can start it late (the
fastpath was down), make it refuse (`fail_first` answers 503 first), and count deliveries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from aiohttp import web

from oonibackend.spool import delivery


class FakeFastpath:
    def __init__(self, port: int, fail_first: int = 0, delay: float = 0.0,
                 batches: bool = True, sizes: list[int] | None = None) -> None:
        self.port = port
        self.sizes = sizes if sizes is not None else []  # request body sizes
        self.batches = batches
        self.requests = 0
        self.fail_first = fail_first
        self.delay = delay
        self.received: list[tuple[str, bytes]] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        uid = request.match_info["uid"]
        if uid == delivery.PATH and not self.batches:
            return web.Response(status=400, text="invalid measurement uid")
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            self.requests += 1
            self.sizes.append(len(body))
            if self.refused < self.fail_first:
                self.refused += 1
                return web.Response(status=503, text="busy")
            if uid == delivery.PATH:
                self.received.extend((i.uid, i.body) for i in delivery.decode(body, 1 << 30))
            else:
                self.received.append((uid, body))
        return web.Response(text="")

    def start(self) -> FakeFastpath:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/{uid}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-fastpath", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake fastpath did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(uid for uid, _ in self.received)

    def bodies(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self.received)

    def wait_for(self, uids: set[str], timeout: float = 30.0) -> bool:
        """True once every uid in `uids` was received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if uids <= set(self.counts()):
                return True
            time.sleep(0.05)
        return False
