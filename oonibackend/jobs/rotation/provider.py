"""The cloud provider interface of the rotation: machines ("droplets") and DNS records.

Small on purpose: a provider only has to create, list, get and destroy machines by name and
manage A/AAAA records in one zone. Everything the rotation decides lives in rotate.py.
"""

from __future__ import annotations

import abc
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass


class ProviderError(Exception):
    """A provider call failed (HTTP error, bad answer, unreachable)."""


@dataclass(frozen=True)
class Droplet:
    id: str
    name: str
    status: str  # "new", "active", "off", "archive"
    created_at: dt.datetime | None  # naive UTC
    ipv4: str = ""  # public addresses, "" while not assigned
    ipv6: str = ""
    region: str = ""
    tags: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.status == "active" and bool(self.ipv4)


@dataclass(frozen=True)
class DNSRecord:
    id: str
    type: str  # "A", "AAAA", ...
    name: str  # relative to the zone ("3" for 3.th.ooni.org), "@" for the apex
    data: str


@dataclass(frozen=True)
class DropletSpec:
    """What a new droplet is made of (from [rotation])."""

    name: str
    region: str
    size: str
    image: str
    ssh_keys: Sequence[str] = ()
    tags: Sequence[str] = ()
    user_data: str = ""
    ipv6: bool = True


def same_address(a: str, b: str) -> bool:
    """Equal IP addresses whatever their spelling ("2001:db8::1" vs "2001:0db8:0:0::1")."""
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


class Provider(abc.ABC):
    """A cloud provider. `name` is what test_helper_instances.provider holds."""

    name: str

    @abc.abstractmethod
    async def create_droplet(self, spec: DropletSpec) -> Droplet:
        """Ask for a new machine (not idempotent: never retried)."""

    @abc.abstractmethod
    async def get_droplet(self, droplet_id: str) -> Droplet | None:
        """The machine, or None when it does not exist."""

    @abc.abstractmethod
    async def list_droplets(self) -> list[Droplet]:
        """Every machine of the account (rows are matched by name, whatever their tags)."""

    @abc.abstractmethod
    async def destroy_droplet(self, droplet_id: str) -> None:
        """Destroy a machine; one already gone is not an error."""

    @abc.abstractmethod
    async def list_records(self, zone: str) -> list[DNSRecord]:
        """Every record of the zone."""

    @abc.abstractmethod
    async def create_record(self, zone: str, rtype: str, name: str, data: str,
                            ttl: int) -> DNSRecord:
        """Add a record."""

    @abc.abstractmethod
    async def delete_record(self, zone: str, record_id: str) -> None:
        """Delete a record; one already gone is not an error."""

    async def close(self) -> None:  # noqa: B027 - optional
        pass

    async def upsert_record(self, zone: str, rtype: str, name: str, data: str,
                            ttl: int) -> bool:
        """Make `name` `rtype` point to `data` alone: create the record unless present, delete
        other records of that name and type. True when something changed."""
        changed = False
        found = False
        for r in await self.list_records(zone):
            if r.name != name or r.type != rtype:
                continue
            if same_address(r.data, data) and not found:
                found = True
                continue
            await self.delete_record(zone, r.id)
            changed = True
        if not found:
            await self.create_record(zone, rtype, name, data, ttl)
            changed = True
        return changed

    async def delete_records(self, zone: str, name: str, addresses: Sequence[str]) -> int:
        """Delete the A/AAAA records of `name` pointing to one of `addresses` (never a record
        this rotation did not make). The number deleted."""
        n = 0
        wanted = [a for a in addresses if a]
        for r in await self.list_records(zone):
            if r.name == name and r.type in ("A", "AAAA") and any(
                    same_address(r.data, a) for a in wanted):
                await self.delete_record(zone, r.id)
                n += 1
        return n
