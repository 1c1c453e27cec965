"""Slow clients against the real API process: request heads and bodies have deadlines
(`[server] header_timeout`, `body_timeout`, `body_min_rate`; oonibackend/httpserver.py), while
kept-alive connections and slow but steady uploads are left alone.

Raw sockets, so that the client decides exactly when each byte leaves."""

from __future__ import annotations

import itertools
import json
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Backend, free_port

TIMEOUT = 1.0  # header_timeout and body_timeout of the server under test
SLACK = 1.0  # "closed within timeout + 1 s"
GET = b"GET /robots.txt HTTP/1.1\r\nHost: t\r\n\r\n"

REPORT = json.dumps({"probe_cc": "IT", "probe_asn": "AS12874", "test_name": "web_connectivity",
                     "software_name": "t", "software_version": "1", "test_version": "0.4.3",
                     "format": "json", "data_format_version": "0.2.0",
                     "test_start_time": "2026-12-06 12:00:00"}).encode()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, make_serve) -> Iterator[Backend]:
    b = make_serve(tmp_path_factory.mktemp("timeouts"), free_port(),
                   server={"header_timeout": TIMEOUT, "body_timeout": TIMEOUT,
                           "body_min_rate": 500}).start()
    yield b
    b.stop()


def connect(api: Backend) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def trickle(s: socket.socket, pieces: Iterator[bytes], every: float, limit: float
            ) -> tuple[float, bytes]:
    """Send one piece every `every` seconds until the server closes the connection (or
    `limit` seconds pass); (seconds until it closed, everything it sent)."""
    t0 = time.monotonic()
    got = b""
    s.setblocking(False)
    nxt = t0
    with selectors.DefaultSelector() as sel:
        sel.register(s, selectors.EVENT_READ)
        while time.monotonic() - t0 < limit:
            now = time.monotonic()
            if now >= nxt:
                piece = next(pieces, None)
                if piece is not None:
                    try:
                        s.send(piece)
                    except (BrokenPipeError, ConnectionResetError):
                        return time.monotonic() - t0, got
                nxt = now + every
            if sel.select(max(0.0, nxt - time.monotonic())):
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    return time.monotonic() - t0, got
                if not data:
                    return time.monotonic() - t0, got
                got += data
    raise AssertionError(f"still open after {limit} s; received {got!r}")


def forever(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body from a blocking socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed mid-response: {buf!r}"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(body) < n:
        chunk = s.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_silent_connection_is_closed(api):
    with connect(api) as s:
        lived, got = trickle(s, iter(()), 1.0, 10)
    assert got == b"" and lived <= TIMEOUT + SLACK, lived


def test_slow_headers_are_closed_unanswered(api):
    with connect(api) as s:
        pieces = itertools.chain([b"GET /robots.txt HTTP/1.1\r\n"], forever(b"X-Slow: 1\r\n"))
        lived, got = trickle(s, pieces, 0.5, 10)
    assert got == b"" and lived <= TIMEOUT + SLACK, lived


def test_slow_body_gets_408_and_is_closed(api):
    head = (b"POST /report HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    with connect(api) as s:
        s.sendall(head)
        lived, got = trickle(s, forever(b" "), 0.5, 10)
    assert lived <= TIMEOUT + SLACK, lived
    status, headers, body = parse_response(got)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body) == {"error": "Request body timeout"}


def test_slow_unread_body_is_closed(api):
    """A handler that never reads the body answers at once; aiohttp then discards the body
    for up to 10 s ("lingering"): the body deadline ends that too."""
    head = b"POST /robots.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
    with connect(api) as s:
        s.sendall(head)
        lived, got = trickle(s, forever(b" "), 0.5, 10)
    assert lived <= TIMEOUT + SLACK, lived
    assert parse_response(got)[0] == 405


def test_slow_but_steady_body_is_not_cut(api):
    """1000 B/s for 3 s: far past body_timeout, but above body_min_rate (500 B/s)."""
    body = REPORT + b" " * (3000 - len(REPORT))
    head = (b"POST /report HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with connect(api) as s:
        s.sendall(head)
        t0 = time.monotonic()
        for i in range(0, len(body), 100):
            s.sendall(body[i:i + 100])
            time.sleep(0.1)
        status, _, answer = read_response(s)
        assert time.monotonic() - t0 > 2.5
    assert status == 200, answer
    assert "report_id" in json.loads(answer)


def test_keepalive_connection_unaffected(api):
    """Several requests on one connection, with idle gaps longer than header_timeout (idle
    kept-alive connections are kept for keepalive_timeout); the head deadline of a later
    request runs from its first byte."""
    with connect(api) as s:
        for pause in (0, 0.1, TIMEOUT + 0.5, 0, TIMEOUT + 0.5):
            time.sleep(pause)
            s.sendall(GET)
            status, headers, _ = read_response(s)
            assert status == 200 and headers.get("connection") != "close"
        post = (b"POST /report HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(REPORT)) + REPORT
        for _ in range(3):
            s.sendall(post)
            assert read_response(s)[0] == 200
        # A slow head on the kept-alive connection, after an idle gap: closed in time.
        time.sleep(TIMEOUT + 0.5)
        pieces = itertools.chain([b"GET /robots.txt HTTP/1.1\r\n"], forever(b"X-Slow: 1\r\n"))
        lived, got = trickle(s, pieces, 0.5, 10)
    assert got == b"" and lived <= TIMEOUT + SLACK, lived


def test_many_slow_header_connections_are_all_closed(api):
    n = 200
    t0 = time.monotonic()  # no connection is older
    socks = [connect(api) for _ in range(n)]
    lived: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            s.send(b"GET /robots.txt HTTP/1.1\r\n")
            sel.register(s, selectors.EVENT_READ)
        nxt = t0 + 0.5
        while len(lived) < n and time.monotonic() - t0 < 15:
            if time.monotonic() >= nxt:
                for s in socks:
                    if s not in lived:
                        try:
                            s.send(b"X-Slow: 1\r\n")
                        except (BrokenPipeError, ConnectionResetError):
                            lived[s] = time.monotonic() - t0
                nxt += 0.5
            for key, _ in sel.select(max(0.0, nxt - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert not data, data
                lived[s] = time.monotonic() - t0
                sel.unregister(s)
    for s in socks:
        s.close()
    assert len(lived) == n, f"{n - len(lived)} of {n} still open after 15 s"
    longest = max(lived.values())
    print(f"{n} slow-header connections: all closed within {longest:.2f} s of the first "
          f"connect")
    assert longest <= TIMEOUT + SLACK + 0.5, longest
    # The server still answers at once, and counts what it closed.
    with connect(api) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, text = read_response(s)
    assert status == 200
    counts = {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
              for line in text.decode().splitlines()
              if line.startswith("oonibackend_http_request_timeouts_total{")}
    assert counts.get("header", 0) >= n, counts
