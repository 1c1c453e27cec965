"""The interface of a VPN provider: where its OpenVPN credentials and endpoints come from.

Small on purpose (like rotation.provider): a provider only fetches; caching, staleness and
what a probe is answered live in `service`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


class ProviderError(Exception):
    """The provider could not be reached, or answered something unusable."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # "ip:port"
    protocol: str  # "openvpn"
    transport: str  # "tcp" or "udp"


@dataclass(frozen=True, slots=True)
class Credentials:
    """PEM texts of the OpenVPN CA, client certificate and its key, and the gateways."""

    ca: str
    cert: str
    key: str
    endpoints: tuple[Endpoint, ...]


class VPNProvider(abc.ABC):
    """A VPN provider. `name` is the path segment of the route (e.g. "riseupvpn")."""

    name: str

    @abc.abstractmethod
    async def fetch(self) -> Credentials:
        """Fresh credentials and endpoints; ProviderError when they cannot be had."""

    async def close(self) -> None:  # noqa: B027 - optional
        pass
