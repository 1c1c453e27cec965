"""RiseupVPN from its public API (docs/current_services.md §3), as OONI's service fetches it:

* `GET <base>/ca.crt`                        the CA certificate (PEM);
* `GET <base>/3/cert`                        a client key and certificate, one PEM text;
* `GET <base>/3/config/eip-service.json`     the gateways: `ip_address` and the `openvpn`
                                             transport's `ports` x `protocols`.

The answers come from outside: each is size-capped and checked (PEM blocks present, addresses
and ports valid, at least one endpoint), so a broken answer is a ProviderError and never
replaces a good cached entry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from typing import Any

import aiohttp

from oonibackend import jsonutil
from oonibackend.vpn.provider import Credentials, Endpoint, ProviderError, VPNProvider

MAX_ANSWER = 1 << 20  # bytes; the real answers are a few KiB
_KEY = re.compile(r"-----BEGIN ((?:RSA |EC )?PRIVATE KEY)-----.+?-----END \1-----", re.S)
_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
TRANSPORTS = ("tcp", "udp")


def split_pem(pem: str) -> tuple[str, str]:
    """(key, certificate) PEM blocks of the /3/cert answer; ProviderError when either lacks."""
    key, cert = _KEY.search(pem), _CERT.search(pem)
    if key is None or cert is None:
        raise ProviderError("client certificate answer lacks a private key or certificate")
    return key.group(0), cert.group(0)


def ca_of(text: str) -> str:
    """The CA answer as it is (it may hold a chain), once it is known to hold a certificate."""
    if _CERT.search(text) is None:
        raise ProviderError("CA answer is not a PEM certificate")
    return text.strip()


def _address(ip: Any, port: Any) -> str | None:
    try:
        addr = ipaddress.ip_address(str(ip))
        p = int(str(port))
    except ValueError:
        return None
    if not 0 < p < 65536:
        return None
    return f"[{addr}]:{p}" if addr.version == 6 else f"{addr}:{p}"


def endpoints_of(service: Any) -> tuple[Endpoint, ...]:
    """The OpenVPN endpoints of an eip-service.json document, in its order, without
    duplicates; entries that are not valid (address, port, tcp/udp) are skipped."""
    gateways = service.get("gateways") if isinstance(service, dict) else None
    if not isinstance(gateways, list):
        raise ProviderError("eip-service.json has no gateways list")
    out: dict[Endpoint, None] = {}
    for gw in gateways:
        if not isinstance(gw, dict):
            continue
        caps = gw.get("capabilities")
        transports = caps.get("transport") if isinstance(caps, dict) else None
        for t in transports if isinstance(transports, list) else ():
            if not isinstance(t, dict) or t.get("type") != "openvpn":
                continue
            protocols, ports = t.get("protocols"), t.get("ports")
            if not isinstance(protocols, list) or not isinstance(ports, list):
                continue
            for proto in protocols:
                if proto not in TRANSPORTS:
                    continue
                for port in ports:
                    address = _address(gw.get("ip_address"), port)
                    if address is not None:
                        out[Endpoint(address, "openvpn", proto)] = None
    if not out:
        raise ProviderError("eip-service.json lists no OpenVPN endpoint")
    return tuple(out)


class RiseupVPN(VPNProvider):
    name = "riseupvpn"

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "oonibackend"})
        return self._session

    async def _get(self, path: str) -> bytes:
        url = self.base_url + path
        async with self._client().get(url, allow_redirects=False) as r:
            if r.status != 200:
                raise ProviderError(f"GET {path}: HTTP {r.status}")
            data = await r.content.read(MAX_ANSWER + 1)
            while len(data) <= MAX_ANSWER and (more := await r.content.read(
                    MAX_ANSWER + 1 - len(data))):
                data += more
            if len(data) > MAX_ANSWER:
                raise ProviderError(f"GET {path}: answer larger than {MAX_ANSWER} bytes")
            return data

    async def fetch(self) -> Credentials:
        try:
            ca, pem, service = await asyncio.wait_for(asyncio.gather(
                self._get("/ca.crt"), self._get("/3/cert"),
                self._get("/3/config/eip-service.json")), self.timeout)
        except ProviderError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ProviderError(f"{self.base_url}: {str(e) or type(e).__name__}") from None
        try:
            doc = jsonutil.loads(service)
        except jsonutil.JSONDecodeError:
            raise ProviderError("eip-service.json is not JSON") from None
        key, cert = split_pem(pem.decode("utf-8", "replace"))
        return Credentials(ca=ca_of(ca.decode("utf-8", "replace")), cert=cert, key=key,
                           endpoints=endpoints_of(doc))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
