"""The feeder: the HTTP endpoint the API delivers measurements to (docs/fastpath.md §1.6,
stricter).

    Every request must carry `Authorization: Bearer <internal key>` (the instance's key,
    `Config.internal_key`, compared in constant time), else 401: only the instance's API (or
    the deployment's API hosts, which share the key) may feed measurements in. A browser page
    cannot: it does not know the key, and a cross-origin request that sends one is
    pre-flighted, which this endpoint answers 401.

    POST /<measurement_uid>   body = the spooled measurement, stored as is
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

from aiohttp import web

from oonibackend import ids
from oonibackend.errors import error_middleware, json_error
from oonibackend.metrics import Metrics
from workers.intake.queue import IntakeQueue, QueueClosed, QueueFull

log = logging.getLogger(__name__)


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
        app = web.Application(client_max_size=self._max, middlewares=[error_middleware])
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
        try:
            await self._queue.put(uid, body)
        except QueueFull:
            return self._busy("fastpath queue full")
        except QueueClosed:
            return self._busy("fastpath shutting down")
        except OSError as e:
            log.error("cannot store a measurement", extra={"uid": uid, "error": str(e)})
            return self._busy("fastpath cannot store measurements")
        self._metrics.inc("received_total", help="Measurements accepted (durably queued)")
        return _ok()

    @staticmethod
    def _busy(message: str) -> web.Response:
        return json_error(message, 503, {"Retry-After": "1"})
