"""Who the client is: the TCP peer, or the address our own reverse proxy saw.

X-Real-IP / X-Forwarded-For are believed only when the TCP peer is one of our proxies
(`server.trusted_proxies`); otherwise anybody could claim any address, escape their quota or
spend someone else's. Quotas are kept per network (/24, /48) rather than per address because a
single client easily holds a whole IPv6 /64 (and more) and IPv4 NAT pools are usually contiguous.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from aiohttp import web

from oonibackend.appkeys import CONFIG

IPAddress = IPv4Address | IPv6Address

# Stand-in for a peer without an IP address (e.g. a Unix socket): never trusted, one shared key.
UNKNOWN_PEER = IPv4Address("0.0.0.0")


class AddressSet:
    """Exact addresses and CIDR networks, parsed once; `ip in s` is a set lookup plus a short scan.

    Raises ValueError for an invalid entry, so a typo in the config stops the server at start-up
    instead of silently trusting (or whitelisting) nobody.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        exact: set[IPAddress] = set()
        networks = []
        for entry in entries:
            net = ip_network(entry.strip(), strict=False)
            if net.num_addresses == 1:
                exact.add(_unmap(net.network_address))
            else:
                networks.append(net)
        self._exact = frozenset(exact)
        self._networks = tuple(networks)

    def __contains__(self, ip: object) -> bool:
        if ip in self._exact:
            return True
        return any(ip in net for net in self._networks)

    def __bool__(self) -> bool:
        return bool(self._exact or self._networks)

    def __repr__(self) -> str:
        items = sorted(map(str, self._exact)) + [str(n) for n in self._networks]
        return f"AddressSet({items!r})"


TRUSTED_PROXIES = web.AppKey("trusted_proxies", AddressSet)
_CLIENT_ADDRESS = web.RequestKey("client_address", IPv4Address | IPv6Address)


def _unmap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id:
            return IPv6Address(int(ip))
    return ip


def parse_ip(value: str | None) -> IPAddress | None:
    """An address from a header or peer name: brackets and zone ids dropped, IPv4-mapped IPv6
    turned into IPv4 (so `::ffff:1.2.3.4` and `1.2.3.4` are one client); None when invalid."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return _unmap(ip_address(value))
    except ValueError:
        return None


def client_address(request: web.BaseRequest, trusted_proxies: AddressSet) -> IPAddress:
    """The client's address as an ipaddress object (see `client_ip`)."""
    peer = parse_ip(request.remote)
    if peer is None:
        return UNKNOWN_PEER
    if peer not in trusted_proxies:
        return peer
    real = parse_ip(request.headers.get("X-Real-IP"))
    if real is not None:
        return real
    forwarded = request.headers.getall("X-Forwarded-For", ())
    if forwarded:
        # Our proxy appends the address it saw; anything before it is client-supplied.
        last = forwarded[-1].rsplit(",", 1)[-1]
        ip = parse_ip(last)
        if ip is not None:
            return ip
    return peer


def client_ip(request: web.BaseRequest, trusted_proxies: AddressSet | Iterable[str]) -> str:
    """The TCP peer address, unless the peer is a trusted proxy: then X-Real-IP, else the last
    X-Forwarded-For entry (the one our proxy added). Invalid header values fall back to the peer.

    Pass the AddressSet kept on the app (`trusted_set(app)`); a list of strings works too but is
    parsed on every call.
    """
    if not isinstance(trusted_proxies, AddressSet):
        trusted_proxies = AddressSet(trusted_proxies)
    return str(client_address(request, trusted_proxies))


def setup(app: web.Application) -> None:
    """Parse `server.trusted_proxies` once onto the app (idempotent; call before start-up)."""
    if TRUSTED_PROXIES not in app:
        app[TRUSTED_PROXIES] = AddressSet(app[CONFIG].server.trusted_proxies)


def trusted_set(app: web.Application) -> AddressSet:
    """The app's parsed trusted proxies (parsed from the config if `setup` was not called)."""
    trusted = app.get(TRUSTED_PROXIES)
    if trusted is None:
        trusted = AddressSet(app[CONFIG].server.trusted_proxies)
    return trusted


def request_address(request: web.Request) -> IPAddress:
    """The client address of a request under the app's trusted proxies, computed once per request
    (the quota middleware and handlers such as GeoIP lookups share it)."""
    ip = request.get(_CLIENT_ADDRESS)
    if ip is None:
        ip = client_address(request, trusted_set(request.app))
        request[_CLIENT_ADDRESS] = ip
    return ip


def request_ip(request: web.Request) -> str:
    """`request_address` as a string."""
    return str(request_address(request))


def from_trusted_proxy(request: web.Request) -> bool:
    """Whether the TCP peer is one of the app's trusted proxies, whose X-Forwarded-* headers
    may be believed (a peer without an IP address, e.g. a Unix socket, is not)."""
    peer = parse_ip(request.remote)
    return peer is not None and peer in trusted_set(request.app)


def network_key(ip: str | IPAddress) -> bytes:
    """The network an address is metered as: b"4" + first 3 bytes (/24) for IPv4, b"6" + first
    6 bytes (/48) for IPv6; IPv4-mapped IPv6 counts as IPv4. ValueError for a non-address."""
    addr = parse_ip(ip) if isinstance(ip, str) else _unmap(ip)
    if addr is None:
        raise ValueError(f"not an IP address: {ip!r}")
    if addr.version == 4:
        return b"4" + addr.packed[:3]
    return b"6" + addr.packed[:6]


def network_label(key: bytes) -> str:
    """Inverse of `network_key` for humans: "1.2.3.0/24", "2001:db8:1::/48"."""
    if len(key) == 4 and key[:1] == b"4":
        return f"{IPv4Address(key[1:] + bytes(1))}/24"
    if len(key) == 7 and key[:1] == b"6":
        return f"{IPv6Address(key[1:] + bytes(10))}/48"
    raise ValueError(f"not a network key: {key!r}")
