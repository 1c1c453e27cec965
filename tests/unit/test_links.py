"""The base of absolute links (routes/links.py): configured, from Host, from a trusted proxy's
X-Forwarded-* headers, and hostile host values."""

from __future__ import annotations

import ssl
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from oonibackend import clientip
from oonibackend.appkeys import CONFIG
from oonibackend.config import Config
from oonibackend.routes.links import base_url, valid_host


def app_with(**server) -> web.Application:
    cfg = Config()
    cfg.server.host, cfg.server.port = "127.0.0.1", 8000
    cfg.server.trusted_proxies = ["127.0.0.1", "10.1.0.0/16"]
    for k, v in server.items():
        setattr(cfg.server, k, v)
    app = web.Application()
    app[CONFIG] = cfg
    clientip.setup(app)
    return app


def req(peer: str | None, headers: list[tuple[str, str]] = (), *, tls: bool = False,
        app: web.Application | None = None):
    extra = {"peername": (peer, 12345)} if peer is not None else {}
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: extra.get(name, default)
    return make_mocked_request("GET", "/api/v1/measurements", headers=CIMultiDict(headers),
                               transport=transport, app=app or app_with(),
                               sslcontext=ssl.create_default_context() if tls else None)


def test_configured_base_url_wins_and_ends_in_a_slash():
    app = app_with(base_url="https://api.example.org")
    r = req("127.0.0.1", [("Host", "evil.example"), ("X-Forwarded-Host", "evil.example")],
            app=app)
    assert base_url(r) == "https://api.example.org/"
    app = app_with(base_url="https://api.example.org/v/")
    assert base_url(req("5.6.7.8", [("Host", "x.example")], app=app)) == \
        "https://api.example.org/v/"


def test_untrusted_peer_uses_host_and_the_connection_scheme():
    h = [("Host", "probe.example.net:8080"), ("X-Forwarded-Host", "evil.example"),
         ("X-Forwarded-Proto", "https")]
    assert base_url(req("5.6.7.8", h)) == "http://probe.example.net:8080/"
    assert base_url(req("5.6.7.8", h, tls=True)) == "https://probe.example.net:8080/"
    # not even a proxy's neighbour
    assert base_url(req("10.2.0.1", h)) == "http://probe.example.net:8080/"


def test_trusted_proxy_forwarded_headers():
    h = [("Host", "127.0.0.1:8000"), ("X-Forwarded-Host", "api.example.org"),
         ("X-Forwarded-Proto", "https")]
    assert base_url(req("127.0.0.1", h)) == "https://api.example.org/"
    assert base_url(req("10.1.3.4", h)) == "https://api.example.org/"
    assert base_url(req("::ffff:127.0.0.1", h)) == "https://api.example.org/"
    # first value of a comma list; proto case-insensitive
    h = [("Host", "internal:8000"), ("X-Forwarded-Host", "a.example.org, b.example.org"),
         ("X-Forwarded-Proto", "HTTPS, http")]
    assert base_url(req("127.0.0.1", h)) == "https://a.example.org/"
    # without X-Forwarded-* the proxy's Host is used
    assert base_url(req("127.0.0.1", [("Host", "api.example.org")])) == \
        "http://api.example.org/"


def test_forwarded_proto_is_http_or_https_only():
    for proto in ("javascript", "ftp", "https:", "", "http s"):
        r = req("127.0.0.1", [("Host", "api.example.org"), ("X-Forwarded-Proto", proto)])
        assert base_url(r) == "http://api.example.org/", proto
    r = req("127.0.0.1", [("Host", "api.example.org"), ("X-Forwarded-Proto", "gopher")],
            tls=True)
    assert base_url(r) == "https://api.example.org/"


HOSTILE = [
    "", " ", "evil.example/path", "evil.example?x", "evil.example#x", "user@evil.example",
    "evil.example:", "evil.example:99999", "evil.example:0", "evil.example:80:80",
    "evil.example:8o", "evil example", "evil.example\t", "<script>", "a\"b", "a'b",
    "evil.example\\x", "-evil.example", "evil-.example", "evil..example", ".evil.example",
    "[::1", "::1", "[fe80::1%eth0]", "[zz::1]", "[1.2.3.4]", "evil.example%2f",
    "\u00e9vil.example", "a" * 64 + ".example", ".".join(["a" * 63] * 5),
    "evil.example, other.example", "evil.example\n",
]


@pytest.mark.parametrize("host", HOSTILE)
def test_hostile_hosts_fall_back_to_the_listen_address(host):
    assert valid_host(host) is None
    assert base_url(req("5.6.7.8", [("Host", host)])) == "http://127.0.0.1:8000/"
    r = req("127.0.0.1", [("Host", "api.example.org"), ("X-Forwarded-Host", host)])
    # (a comma list gives its first value; surrounding whitespace is trimmed)
    if "," not in host and host.strip() == host:
        assert base_url(r) == "http://127.0.0.1:8000/"


def test_valid_hosts_are_normalised():
    assert valid_host("Probe.Example.NET:08080") == "probe.example.net:8080"
    assert valid_host("localhost") == "localhost"
    assert valid_host("192.0.2.1:80") == "192.0.2.1:80"
    assert valid_host("[2001:DB8::0:1]:8443") == "[2001:db8::1]:8443"
    assert valid_host("[::ffff:1.2.3.4]") == "[::ffff:102:304]"
    assert valid_host("example.org.") == "example.org."
    assert valid_host("xn--bcher-kva.example") == "xn--bcher-kva.example"


def test_missing_host_and_ipv6_listen_address():
    assert base_url(req("5.6.7.8")) == "http://127.0.0.1:8000/"
    app = app_with(host="::1", port=9000)
    assert base_url(req("5.6.7.8", [("Host", "bad/host")], app=app)) == "http://[::1]:9000/"


def test_no_peer_address_is_not_a_proxy():
    r = req(None, [("Host", "api.example.org"), ("X-Forwarded-Host", "evil.example")])
    assert base_url(r) == "http://api.example.org/"
