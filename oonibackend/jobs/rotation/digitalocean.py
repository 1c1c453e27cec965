"""DigitalOcean API v2 (droplets and domain records) over aiohttp.

The base URL is configurable (`rotation.api_url`) so tests point it at a loopback stand-in.
Reads and deletes are retried a few times on 429/5xx and connection errors; creations never
are (a retried POST could make a second machine).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from oonibackend import jsonutil
from oonibackend.jobs.rotation.provider import (
    DNSRecord,
    Droplet,
    DropletSpec,
    Provider,
    ProviderError,
)

log = logging.getLogger(__name__)

PER_PAGE = 200
MAX_PAGES = 100
RETRIES = 3
RETRY_DELAY = 0.5  # seconds, doubled on each retry


def _seg(v: str) -> str:
    """A path segment (ids and zone names come from config and answers: quoted)."""
    return quote(str(v), safe="")


def parse_time(v: Any) -> dt.datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t


def _public(networks: Any, family: str) -> str:
    if not isinstance(networks, dict):
        return ""
    for n in networks.get(family) or []:
        if isinstance(n, dict) and n.get("type") == "public" and n.get("ip_address"):
            return str(n["ip_address"])
    return ""


def parse_droplet(d: Any) -> Droplet:
    if not isinstance(d, dict) or "id" not in d or not isinstance(d.get("name"), str):
        raise ProviderError(f"unexpected droplet object: {str(d)[:200]}")
    region = d.get("region")
    return Droplet(
        id=str(d["id"]), name=d["name"], status=str(d.get("status") or ""),
        created_at=parse_time(d.get("created_at")),
        ipv4=_public(d.get("networks"), "v4"), ipv6=_public(d.get("networks"), "v6"),
        region=str(region.get("slug") or "") if isinstance(region, dict) else "",
        tags=tuple(str(t) for t in d.get("tags") or ()),
    )


def parse_record(r: Any) -> DNSRecord:
    if not isinstance(r, dict) or "id" not in r:
        raise ProviderError(f"unexpected domain record: {str(r)[:200]}")
    return DNSRecord(id=str(r["id"]), type=str(r.get("type") or ""),
                     name=str(r.get("name") or ""), data=str(r.get("data") or ""))


class DigitalOcean(Provider):
    name = "digitalocean"

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        self.base = api_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}",
                         "Content-Type": "application/json"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None,
                    params: dict[str, str] | None = None, *, retry: bool = True,
                    missing_ok: bool = False) -> Any:
        """The decoded JSON answer (None for 204, or for 404 when `missing_ok`)."""
        data = jsonutil.dumps(body) if body is not None else None
        delay = RETRY_DELAY
        attempts = RETRIES if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                async with self._client().request(method, self.base + path, data=data,
                                                  params=params) as r:
                    raw = await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                err = ProviderError(f"{method} {path}: {type(e).__name__}: {e}")
            else:
                if status == 404 and missing_ok:
                    return None
                if status < 300:
                    if not raw:
                        return None
                    try:
                        return jsonutil.loads(raw)
                    except jsonutil.JSONDecodeError as e:
                        raise ProviderError(f"{method} {path}: answer is not JSON") from e
                err = ProviderError(f"{method} {path}: HTTP {status}: {_message(raw)}")
                if status != 429 and status < 500:
                    raise err
            if attempt < attempts:
                log.warning("provider call failed, retrying",
                            extra={"method": method, "path": path, "error": str(err)})
                await asyncio.sleep(delay)
                delay *= 2
        raise err

    async def _pages(self, path: str, key: str) -> list[Any]:
        out: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            data = await self._call("GET", path, params={"page": str(page),
                                                         "per_page": str(PER_PAGE)})
            items = data.get(key) if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise ProviderError(f"GET {path}: no {key} list in the answer")
            out.extend(items)
            total = (data.get("meta") or {}).get("total")
            if not items or len(items) < PER_PAGE or (isinstance(total, int)
                                                      and len(out) >= total):
                return out
        raise ProviderError(f"GET {path}: more than {MAX_PAGES} pages")

    async def create_droplet(self, spec: DropletSpec) -> Droplet:
        body: dict[str, Any] = {
            "name": spec.name, "region": spec.region, "size": spec.size, "image": spec.image,
            "ssh_keys": [int(k) if k.isdigit() else k for k in spec.ssh_keys],
            "ipv6": spec.ipv6, "tags": list(spec.tags),
        }
        if spec.user_data:
            body["user_data"] = spec.user_data
        data = await self._call("POST", "/droplets", body, retry=False)
        return parse_droplet((data or {}).get("droplet"))

    async def get_droplet(self, droplet_id: str) -> Droplet | None:
        data = await self._call("GET", f"/droplets/{_seg(droplet_id)}", missing_ok=True)
        return None if data is None else parse_droplet(data.get("droplet"))

    async def list_droplets(self) -> list[Droplet]:
        return [parse_droplet(d) for d in await self._pages("/droplets", "droplets")]

    async def destroy_droplet(self, droplet_id: str) -> None:
        await self._call("DELETE", f"/droplets/{_seg(droplet_id)}", missing_ok=True)

    async def list_records(self, zone: str) -> list[DNSRecord]:
        return [parse_record(r) for r in
                await self._pages(f"/domains/{_seg(zone)}/records", "domain_records")]

    async def create_record(self, zone: str, rtype: str, name: str, data: str,
                            ttl: int) -> DNSRecord:
        body = {"type": rtype, "name": name, "data": data, "ttl": ttl}
        out = await self._call("POST", f"/domains/{_seg(zone)}/records", body, retry=False)
        return parse_record((out or {}).get("domain_record"))

    async def delete_record(self, zone: str, record_id: str) -> None:
        await self._call("DELETE", f"/domains/{_seg(zone)}/records/{_seg(record_id)}",
                         missing_ok=True)


def _message(raw: bytes) -> str:
    """DigitalOcean's error message ({"id": ..., "message": ...}) or the start of the body."""
    try:
        data = jsonutil.loads(raw)
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])[:300]
    except jsonutil.JSONDecodeError:
        pass
    return raw[:300].decode("utf-8", "replace") or "(empty)"
