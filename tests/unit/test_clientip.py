"""Client address extraction and network keys."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from oonibackend import clientip
from oonibackend.appkeys import CONFIG
from oonibackend.clientip import AddressSet, client_ip, network_key, network_label
from oonibackend.config import Config

TRUSTED = AddressSet(["127.0.0.1", "::1", "10.1.0.0/16"])


def req(peer: str | None, headers: list[tuple[str, str]] = (), app: web.Application | None = None):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 12345) if name == "peername" and peer is not None else default
    )
    return make_mocked_request("GET", "/", headers=CIMultiDict(headers), transport=transport,
                               app=app)


def test_untrusted_peer_is_the_client():
    assert client_ip(req("5.6.7.8"), TRUSTED) == "5.6.7.8"


def test_spoofed_headers_from_untrusted_peer_ignored():
    r = req("5.6.7.8", [("X-Real-IP", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")])
    assert client_ip(r, TRUSTED) == "5.6.7.8"


def test_trusted_proxy_x_real_ip():
    r = req("127.0.0.1", [("X-Real-IP", "1.2.3.4"), ("X-Forwarded-For", "9.9.9.9")])
    assert client_ip(r, TRUSTED) == "1.2.3.4"


def test_trusted_proxy_cidr_and_ipv6_peer():
    assert client_ip(req("10.1.200.3", [("X-Real-IP", "1.2.3.4")]), TRUSTED) == "1.2.3.4"
    assert client_ip(req("::1", [("X-Real-IP", "2001:DB8::1")]), TRUSTED) == "2001:db8::1"
    assert client_ip(req("10.2.0.1", [("X-Real-IP", "1.2.3.4")]), TRUSTED) == "10.2.0.1"


def test_forwarded_for_last_entry_is_ours():
    # The client wrote "6.6.6.6"; our proxy appended the address it saw.
    r = req("127.0.0.1", [("X-Forwarded-For", "6.6.6.6, 1.2.3.4")])
    assert client_ip(r, TRUSTED) == "1.2.3.4"
    r = req("127.0.0.1", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "7.7.7.7")])
    assert client_ip(r, TRUSTED) == "7.7.7.7"


def test_invalid_headers_fall_back_to_peer():
    r = req("127.0.0.1", [("X-Real-IP", "not-an-ip"), ("X-Forwarded-For", "1.2.3.4, junk")])
    assert client_ip(r, TRUSTED) == "127.0.0.1"
    # An invalid X-Real-IP does not hide a valid X-Forwarded-For.
    r = req("127.0.0.1", [("X-Real-IP", "junk"), ("X-Forwarded-For", "1.2.3.4")])
    assert client_ip(r, TRUSTED) == "1.2.3.4"


def test_normalisation():
    assert client_ip(req("::ffff:5.6.7.8"), TRUSTED) == "5.6.7.8"
    assert client_ip(req("127.0.0.1", [("X-Real-IP", "[2001:db8::1]")]), TRUSTED) == "2001:db8::1"
    assert client_ip(req("127.0.0.1", [("X-Real-IP", " ::ffff:1.2.3.4 ")]), TRUSTED) == "1.2.3.4"
    # A mapped trusted peer is the same proxy.
    assert client_ip(req("::ffff:127.0.0.1", [("X-Real-IP", "1.2.3.4")]), TRUSTED) == "1.2.3.4"


def test_no_peer_address():
    assert client_ip(req(None, [("X-Real-IP", "1.2.3.4")]), TRUSTED) == "0.0.0.0"


def test_trusted_as_list_of_strings():
    assert client_ip(req("127.0.0.1", [("X-Real-IP", "1.2.3.4")]), ["127.0.0.1"]) == "1.2.3.4"


def test_address_set():
    s = AddressSet(["1.2.3.4", "10.0.0.0/8", "2001:db8::/32", "::ffff:9.9.9.9"])
    ip = clientip.parse_ip
    assert ip("1.2.3.4") in s and ip("10.200.1.1") in s and ip("2001:db8:5::1") in s
    assert ip("9.9.9.9") in s
    assert ip("1.2.3.5") not in s and ip("2001:db9::1") not in s and ip("::1") not in s
    assert not AddressSet([])
    with pytest.raises(ValueError):
        AddressSet(["1.2.3.400"])


def test_app_setup_parses_once():
    app = web.Application()
    app[CONFIG] = Config()
    clientip.setup(app)
    trusted = app[clientip.TRUSTED_PROXIES]
    clientip.setup(app)
    assert app[clientip.TRUSTED_PROXIES] is trusted
    r = req("::1", [("X-Real-IP", "1.2.3.4")], app=app)
    assert clientip.request_ip(r) == "1.2.3.4"
    assert clientip.request_address(r) is clientip.request_address(r)


def test_network_key_ipv4_24():
    k = network_key("1.2.3.4")
    assert k == b"4\x01\x02\x03"
    assert network_key("1.2.3.250") == k
    assert network_key("1.2.4.1") != k
    assert network_label(k) == "1.2.3.0/24"


def test_network_key_ipv6_48():
    k = network_key("2001:db8:1:ffff::1")
    assert k == b"6" + bytes.fromhex("20010db80001")
    assert network_key("2001:db8:1:1234:5678::9") == k
    assert network_key("2001:db8:2::1") != k
    assert network_label(k) == "2001:db8:1::/48"


def test_network_key_mapped_ipv4_is_ipv4():
    assert network_key("::ffff:1.2.3.4") == network_key("1.2.3.9")
    assert network_key(clientip.parse_ip("::ffff:1.2.3.4")) == network_key("1.2.3.0")


def test_network_key_families_do_not_collide():
    # 1.2.3.x and an IPv6 network starting with the same bytes.
    assert network_key("1.2.3.4") != network_key("102:300::1")


def test_network_key_invalid():
    with pytest.raises(ValueError):
        network_key("example.org")
    with pytest.raises(ValueError):
        network_label(b"x123")
