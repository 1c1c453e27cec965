"""Bodies in another API host's spool: `GET <host>/measurement_spool/<hour dir>/<uid>.post`.

Every host serves its own spool on that path (routes/measurement_body.py), so the hosts of
`[server] other_collectors` are peers of each other. The ring (docs/api.md §0.1): the
de-duplicated, sorted list rotated so that this host comes first, then this host removed, so
each host asks the others in a different order and no host gets every first request. An entry
is a host name (asked over https, as legacy) or a base URL with its scheme (`http://host:port`,
for tests and private networks).
"""

from __future__ import annotations

import logging
import socket

import aiohttp

from oonibackend import ids
from oonibackend.bodies.spool import unwrap_post

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
TOTAL_TIMEOUT = 5.0


def ring(collectors: list[str], local: str) -> list[str]:
    """The other hosts in the order this host asks them."""
    hosts = sorted({c.strip().rstrip("/") for c in collectors if c.strip()})
    local = local.strip().rstrip("/")
    if local in hosts:
        i = hosts.index(local)
        hosts = hosts[i + 1:] + hosts[:i]
    return hosts


def local_name(configured: str) -> str:
    """`[server] hostname`, else the machine's FQDN (may resolve names: call at startup)."""
    return configured or socket.getfqdn()


def spool_url(host: str, uid: str) -> str:
    """URL of a uid's `.post` on a peer; ValueError for a malformed uid."""
    base = host if host.startswith(("http://", "https://")) else f"https://{host}"
    return f"{base}/measurement_spool/{ids.hour_dir_of(uid)}/{uid}.post"


async def fetch(session: aiohttp.ClientSession, hosts: list[str], uid: str, max_size: int
                ) -> bytes | None:
    """The body from the first peer that has it; unreachable or slow peers are skipped."""
    if not hosts or not ids.is_valid_uid(uid):
        return None
    timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT)
    for host in hosts:
        url = spool_url(host, uid)
        try:
            async with session.get(url, timeout=timeout, allow_redirects=False) as r:
                if r.status != 200:
                    continue
                data = bytearray()
                async for chunk in r.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > max_size:
                        break
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            log.warning("peer spool unreachable", extra={"peer": host, "error": str(e)[:200]})
            continue
        if len(data) > max_size:
            continue
        body = unwrap_post(bytes(data), uid)
        if body is not None:
            return body
    return None
