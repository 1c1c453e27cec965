"""Readiness of a new test helper: TLS plus one end-to-end web_connectivity control request.

The host is not in DNS yet, so the request goes to its IPv4 address while carrying its name
(TLS server name and Host header); a valid answer is a JSON object with the `http_request`,
`tcp_connect` and `dns` results the probes read.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp

from oonibackend import jsonutil

CONTROL_REQUEST = {
    "http_request": "https://www.example.com",
    "http_request_headers": {},
    "tcp_connect": ["1.1.1.1:443"],
}
EXPECTED_KEYS = ("http_request", "tcp_connect", "dns")


@dataclass(frozen=True)
class CheckTarget:
    scheme: str  # "https" or "http"
    port: int
    ca_file: str = ""  # empty: the system CAs
    timeout: float = 10.0

    def url(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}/"

    def host_header(self, hostname: str) -> str:
        default = 443 if self.scheme == "https" else 80
        return hostname if self.port == default else f"{hostname}:{self.port}"


def ssl_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def verdict(status: int, body: bytes) -> str | None:
    """None when the answer is a valid control response, else why not (pure)."""
    if status != 200:
        return f"HTTP {status}"
    try:
        data = jsonutil.loads(body)
    except jsonutil.JSONDecodeError:
        return "the answer is not JSON"
    if not isinstance(data, dict):
        return "the answer is not a JSON object"
    missing = [k for k in EXPECTED_KEYS if k not in data]
    if missing:
        return f"the answer lacks {', '.join(missing)}"
    return None


async def check(session: aiohttp.ClientSession, target: CheckTarget, address: str,
                hostname: str, ctx: ssl.SSLContext | None = None) -> str | None:
    """One try: None when the helper at `address` answers correctly as `hostname`."""
    kw: dict = {}
    if target.scheme == "https":
        kw = {"ssl": ctx or ssl_context(target.ca_file), "server_hostname": hostname}
    try:
        async with session.post(target.url(address), data=jsonutil.dumps(CONTROL_REQUEST),
                                headers={"Host": target.host_header(hostname),
                                         "Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=target.timeout),
                                **kw) as r:
            body = await r.content.read(1024 * 1024)
            return verdict(r.status, body)
    except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as e:
        return f"{type(e).__name__}: {e}"
