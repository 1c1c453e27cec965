"""The API's HTTP server: aiohttp's, plus deadlines for request heads and request bodies.

aiohttp (3.14) has no request-header timeout: before a connection's first request, and between
two requests, only its keep-alive timer runs (75 s under web.run_app), and a request body is
read for as long as the client trickles it. Behind Nginx that does not matter; exposed
directly, a few hundred connections sending one header line every few seconds hold the
server. So, per connection (`[server]` in the config):

* `header_timeout`: the request line and headers must be complete within this many seconds of
  the connection's opening or, on a kept-alive connection, of the first byte of the next
  request. Otherwise the connection is closed without an answer (like Nginx's
  client_header_timeout). An idle kept-alive connection is still closed after
  `keepalive_timeout`, as before. (Part of a request head that arrives while the previous
  request is still being handled, i.e. pipelined, starts no deadline: the next byte does, and
  until then aiohttp's keep-alive timer, which runs from the end of each response, bounds it.)
* `body_timeout` and `body_min_rate`: a request body must be received within `body_timeout`
  seconds of the end of its headers, plus one second for every `body_min_rate` bytes received
  (Apache mod_reqtimeout's `body=30,MinRate=500`): a slow but live upload of a big measurement
  is never cut, a trickle is. The handler reading the body gets an error that the error
  middleware answers 408 `{"error": "Request body timeout"}` with `Connection: close`, and the
  connection is closed after that answer.

Cost: one lazily rescheduled timer per connection (like aiohttp's own keep-alive timer: a
timer is created at most once per header_timeout on a busy kept-alive connection, never per
read), and a few attribute comparisons per `data_received` (about 50 ns on the 2-core test
machine); the rate allowance is computed from the body's byte count only when the timer fires.
`web.run_app` cannot be given a protocol class, so `serve` runs the app with `run_app` below.

aiohttp internals relied on (aiohttp 3.14; tests/integration/test_server_timeouts.py pins the
behaviour, so an upgrade that changes them fails there):
* `web.Server.__call__` is the protocol factory and always makes a `web.RequestHandler`; a
  `Server` subclass (built by an `AppRunner` subclass's `_make_server`, the runner's one
  abstract hook, from the server aiohttp made: its `_loop` and `_kwargs`) makes ours, with
  the same keyword arguments.
* `RequestHandler`: `start()` awaits `_waiter` while no complete request is queued;
  `data_received` appends each request whose headers are complete to `_messages` (with its
  payload `StreamReader`) and counts it in `_request_count`; `close()` makes `data_received`
  ignore further bytes and `start()` close the connection after the current response;
  `force_close()` closes it at once (what aiohttp's keep-alive timer does).
* `StreamReader.set_exception` makes the pending and every later read raise it, and
  `total_bytes` counts the body bytes received. After a response, aiohttp discards an unread
  body for up to 10 s ("lingering") and stops on a `TimeoutError`: the body error is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader

from oonibackend.appkeys import METRICS
from oonibackend.config import ServerConfig
from oonibackend.errors import APIError

log = logging.getLogger(__name__)


class BodyTimeout(APIError, TimeoutError):
    """Raised by reads of a request body that took longer than its deadline (408)."""

    def __init__(self) -> None:
        super().__init__("Request body timeout", 408)
        self.headers["Connection"] = "close"


_data_received = web.RequestHandler.data_received


class TimedRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol with a header deadline and a body deadline."""

    __slots__ = ("_header_timeout", "_body_timeout", "_body_min_rate", "_on_timeout",
                 "_head_count", "_head_due", "_body", "_body_due", "_timer", "_timer_at")

    def __init__(self, manager: web.Server, *, header_timeout: float, body_timeout: float,
                 body_min_rate: float, on_timeout: Any = None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._body_min_rate = body_min_rate
        self._on_timeout = on_timeout
        # The header deadline `_head_due` applies while `_request_count == _head_count`,
        # i.e. until the headers of one more request are complete (0.0: no deadline).
        self._head_count = 0
        self._head_due = 0.0
        # The body being received and its deadline before the rate allowance.
        self._body: StreamReader | None = None
        self._body_due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._header_timeout > 0:
            self._head_due = self._loop.time() + self._header_timeout
            self._wake_at(self._head_due)

    def data_received(self, data: bytes) -> None:
        n = self._request_count
        if n != self._head_count:
            w = self._waiter
            if w is not None and not w.done() and self._header_timeout > 0:
                # start() waits for a request (between two requests of a kept-alive
                # connection): these bytes begin one, whose headers are due in time.
                self._head_count = n
                self._head_due = self._loop.time() + self._header_timeout
                self._wake_at(self._head_due)
        _data_received(self, data)
        if self._request_count != n and self._body_timeout > 0 and self._messages:
            # Headers completed in this read; the body of the last one may still be coming.
            body = self._messages[-1][1]
            if not body.is_eof():
                self._body = body
                self._body_due = self._loop.time() + self._body_timeout
                self._wake_at(self._body_due)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._body = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake_at(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return  # it reschedules itself when it finds nothing due yet
            timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._force_close or self.transport is None:
            return
        now = self._loop.time()
        nxt = 0.0
        if self._head_due and self._request_count == self._head_count:
            if now >= self._head_due:
                self._timed_out("header")
                self.force_close()
                return
            nxt = self._head_due
        body = self._body
        if body is not None:
            if body.is_eof() or body.exception() is not None:
                self._body = None
            else:
                due = self._body_due
                if self._body_min_rate > 0:
                    due += body.total_bytes / self._body_min_rate
                if now >= due:
                    self._body = None
                    self._timed_out("body")
                    # No more bytes are parsed; the reader (the handler, or aiohttp
                    # discarding an unread body) gets the error and the connection closes
                    # once the response, a 408 if the handler was reading, is sent.
                    self.close()
                    body.set_exception(BodyTimeout())
                    return
                nxt = min(nxt, due) if nxt else due
        if nxt:
            self._wake_at(nxt)

    def _timed_out(self, phase: str) -> None:
        log.debug("request %s timeout, closing", phase, extra={"peer": str(self.peername)})
        if self._on_timeout is not None:
            self._on_timeout(phase)


class TimedServer(web.Server):
    """aiohttp's connection manager and protocol factory, making TimedRequestHandlers."""

    def __init__(self, *args: Any, timeouts: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = timeouts

    def __call__(self) -> web.RequestHandler:
        return TimedRequestHandler(self, loop=self._loop, **self.timeouts, **self._kwargs)


class TimedAppRunner(web.AppRunner):
    """An AppRunner whose server makes TimedRequestHandlers."""

    def __init__(self, app: web.Application, *, timeouts: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.timeouts = timeouts

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return TimedServer(base.request_handler, request_factory=base.request_factory,
                           handler_cancellation=base.handler_cancellation, loop=base._loop,
                           timeouts=self.timeouts, **base._kwargs)


def timeouts_of(cfg: ServerConfig, app: web.Application | None = None) -> dict[str, Any]:
    on_timeout = None
    if app is not None and METRICS in app:
        metrics = app[METRICS]

        def on_timeout(phase: str) -> None:
            metrics.inc("http_request_timeouts_total",
                        help="Connections closed because a request's headers or body took "
                             "too long (server.header_timeout, body_timeout)", phase=phase)

    return {"header_timeout": cfg.header_timeout, "body_timeout": cfg.body_timeout,
            "body_min_rate": cfg.body_min_rate, "on_timeout": on_timeout}


async def _serve(app: web.Application, sock: socket.socket, cfg: ServerConfig,
                 shutdown_timeout: float) -> None:
    runner = TimedAppRunner(app, timeouts=timeouts_of(cfg, app), handle_signals=True,
                            access_log=None, keepalive_timeout=cfg.keepalive_timeout,
                            shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        # The event loop's create_server calls listen() again with this backlog: aiohttp's
        # default (128, what web.run_app used) would replace serve.listen's 1024.
        await web.SockSite(runner, sock, backlog=1024).start()
        await asyncio.Event().wait()  # until SIGTERM / SIGINT (GracefulExit)
    finally:
        await runner.cleanup()


def run_app(app: web.Application, sock: socket.socket, cfg: ServerConfig,
            shutdown_timeout: float = 10.0) -> None:
    """`web.run_app(app, sock=sock, ...)` with TimedRequestHandler as the protocol: the same
    loop set-up, signal handling (SIGTERM/SIGINT stop it gracefully) and shutdown."""
    loop = asyncio.new_event_loop()
    main = loop.create_task(_serve(app, sock, cfg, shutdown_timeout))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception during shutdown",
                "exception": task.exception(),
                "task": task,
            })
