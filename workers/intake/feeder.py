"""The feeder: the HTTP endpoint the API delivers measurements to (docs/fastpath.md §1.6,
stricter).

    Every request must carry `Authorization: Bearer <internal key>` (the instance's key,
    `Config.internal_key`, compared in constant time), else 401: only the instance's API (or
    the deployment's API hosts, which share the key) may feed measurements in. A browser page
    cannot: it does not know the key, and a cross-origin request that sends one is
    pre-flighted, which this endpoint answers 401.

    POST /batch               body = many measurements (oonibackend/spool/delivery.py)
        200 {"stored": n}  every one durable in the intake queue, one group commit
        400 JSON   a torn or corrupt record, a malformed uid: nothing stored
        413 JSON   batch over BATCH_MAX_BYTES or a body over server.max_body_size
        503 JSON   queue full or not writable: nothing stored, the API retries them all
    POST /<measurement_uid>   body = the spooled measurement, stored as is (kept for API
                              hosts older than the batch route)
        200 {}     durable in the intake queue (the API may forget it)
        400 JSON   not a well-formed measurement uid (it becomes a file name)
        413 JSON   body larger than server.max_body_size
        503 JSON   queue full or not writable: the API keeps it pending and retries
    GET /metrics  Prometheus text
    any other request: 200 {} (liveness: the API's health check does GET /health)

Nothing is parsed here: a 200 only means "stored"; scoring happens later in a worker, and a
measurement that cannot be scored is quarantined, not refused.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable

from aiohttp import web

from oonibackend import ids
from oonibackend.errors import error_middleware, json_error
from oonibackend.metrics import Metrics
from oonibackend.spool import delivery
from workers.intake.queue import IntakeQueue, QueueClosed, QueueFull

log = logging.getLogger(__name__)

# Largest batch request: what the API's forwarder sends at most (oonibackend/spool/
# forwarder.py BATCH_BYTES) with room to spare.
BATCH_MAX_BYTES = 32 * 1024 * 1024


def _ok() -> web.Response:
    return web.Response(body=b"{}", content_type="application/json")


class Feeder:
    def __init__(self, queue: IntakeQueue, metrics: Metrics, max_body_size: int,
                 key: str) -> None:
        if not key:
            raise ValueError("the feeder needs the instance's internal key")
        self._queue = queue
        self._metrics = metrics
        self._max = max_body_size
        self._expected = f"Bearer {key}".encode()

    def app(self) -> web.Application:
        # A batch of one largest measurement: its body and a record's head and uid.
        app = web.Application(client_max_size=max(self._max + 4096, BATCH_MAX_BYTES),
                              middlewares=[error_middleware])
        # Every path (newlines too), so that any malformed uid gets the JSON 400.
        app.router.add_route("*", r"/{path:[\s\S]*}", self.handle)
        return app

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, self._expected)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self._metrics.inc("feeder_requests_total", help="POSTs to the feeder by status",
                              status="401")
            return json_error("the fastpath feeder needs the instance's key", 401,
                              {"WWW-Authenticate": "Bearer"})
        if request.method != "POST":
            if request.path == "/metrics" and request.method in ("GET", "HEAD"):
                return web.Response(text=self._metrics.render(),
                                    headers={"Content-Type": self._metrics.content_type})
            return _ok()
        resp = await self._post(request)
        self._metrics.inc("feeder_requests_total", help="POSTs to the feeder by status",
                          status=str(resp.status))
        return resp

    async def _post(self, request: web.Request) -> web.Response:
        uid = request.match_info["path"]
        if uid == delivery.PATH:
            return await self._post_batch(request)
        if not ids.is_valid_uid(uid):
            return json_error("invalid measurement uid", 400)
        if request.content_length is not None and request.content_length > self._max:
            return json_error("Request body too large", 413)
        if self._queue.full:
            return self._busy("fastpath queue full")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error("Request body too large", 413)
        if len(body) > self._max:  # chunked: the app's limit is the batch's
            return json_error("Request body too large", 413)
        return await self._store(uid, self._queue.put(uid, body), 1)

    async def _post_batch(self, request: web.Request) -> web.Response:
        if self._queue.full:
            return self._busy("fastpath queue full")
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error("Request body too large", 413)
        try:
            items = delivery.decode(data, self._max)
        except ValueError as e:
            return json_error(f"invalid batch: {e}", 400)
        resp = await self._store(None, self._queue.put_many(items), len(items))
        if resp.status == 200:
            self._metrics.inc("batches_received_total", help="Batches accepted")
            return web.json_response({"stored": len(items)})
        return resp

    async def _store(self, uid: str | None, put: Awaitable[None], count: int
                     ) -> web.Response:
        try:
            await put
        except QueueFull:
            return self._busy("fastpath queue full")
        except QueueClosed:
            return self._busy("fastpath shutting down")
        except OSError as e:
            log.error("cannot store measurements", extra={"uid": uid, "count": count,
                                                          "error": str(e)})
            return self._busy("fastpath cannot store measurements")
        self._metrics.inc("received_total", count,
                          help="Measurements accepted (durably queued)")
        return _ok()

    @staticmethod
    def _busy(message: str) -> web.Response:
        return json_error(message, 503, {"Retry-After": "1"})
