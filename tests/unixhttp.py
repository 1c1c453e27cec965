"""HTTP over a Unix socket, for tests that talk to the embedded database owner directly."""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from collections.abc import Mapping


class _Connection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def request(sock: str, method: str, path: str, body: bytes | None = None,
            params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one request to the HTTP server listening on Unix socket `sock`."""
    if params:
        path += "?" + urllib.parse.urlencode(params)
    conn = _Connection(sock, timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()
