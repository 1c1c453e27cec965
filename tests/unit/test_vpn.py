"""VPN configuration: RiseupVPN's answers parsed and checked, and the route's answer shape."""

from __future__ import annotations

import datetime as dt
import random
import re

import pytest

from oonibackend.vpn.provider import Credentials, Endpoint, ProviderError
from oonibackend.vpn.riseup import ca_of, endpoints_of, split_pem
from oonibackend.vpn.service import answer
from oonibackend.vpn.store import Entry

KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
CERT = "-----BEGIN CERTIFICATE-----\nMIIE\n-----END CERTIFICATE-----"


def test_split_pem():
    assert split_pem(f"{KEY}\n{CERT}\n") == (KEY, CERT)
    assert split_pem(f"{CERT}\n{KEY}") == (KEY, CERT)
    ec = KEY.replace("RSA", "EC")
    assert split_pem(ec + CERT) == (ec, CERT)
    for bad in ("", KEY, CERT, "<html>503</html>"):
        with pytest.raises(ProviderError):
            split_pem(bad)


def test_ca():
    assert ca_of(f"\n{CERT}\n") == CERT
    with pytest.raises(ProviderError):
        ca_of("nothing here")


def test_endpoints_from_eip_service():
    doc = {"gateways": [
        {"ip_address": "1.2.3.4", "capabilities": {"transport": [
            {"type": "openvpn", "protocols": ["tcp", "udp"], "ports": ["1194", "80"]},
            {"type": "obfs4", "protocols": ["tcp"], "ports": ["23042"]}]}},
        {"ip_address": "2001:db8::1", "capabilities": {"transport": [
            {"type": "openvpn", "protocols": ["tcp", "kcp"], "ports": [443]}]}},
        {"ip_address": "not-an-ip", "capabilities": {"transport": [
            {"type": "openvpn", "protocols": ["tcp"], "ports": ["443"]}]}},
        {"ip_address": "5.6.7.8", "capabilities": {"transport": [
            {"type": "openvpn", "protocols": ["tcp"], "ports": ["0", "70000", "x", "53"]},
            {"type": "openvpn", "protocols": ["tcp"], "ports": ["53"]}]}},
        "garbage", {"capabilities": None},
    ]}
    assert endpoints_of(doc) == (
        Endpoint("1.2.3.4:1194", "openvpn", "tcp"), Endpoint("1.2.3.4:80", "openvpn", "tcp"),
        Endpoint("1.2.3.4:1194", "openvpn", "udp"), Endpoint("1.2.3.4:80", "openvpn", "udp"),
        Endpoint("[2001:db8::1]:443", "openvpn", "tcp"), Endpoint("5.6.7.8:53", "openvpn", "tcp"))
    for bad in ({}, [], {"gateways": "x"}, {"gateways": [{"ip_address": "1.2.3.4"}]}):
        with pytest.raises(ProviderError):
            endpoints_of(bad)


def test_answer_shape_and_random_pick():
    eps = tuple(Endpoint(f"10.0.0.{i}:1194", "openvpn", "udp") for i in range(6))
    entry = Entry("riseupvpn", Credentials("ca", "cert", "key", eps),
                  dt.datetime(2026, 12, 6, 10, 0, 0), dt.datetime(2026, 12, 1))
    body = answer(entry, random.Random(1))
    assert list(body) == ["provider", "protocol", "config", "date_updated", "endpoints"]
    assert body["provider"] == "riseupvpn" and body["protocol"] == "openvpn"
    assert body["config"] == {"ca": "ca", "cert": "cert", "key": "key"}
    assert body["date_updated"] == "2026-12-06T10:00:00.000000Z"
    assert len(body["endpoints"]) == 4 and len(set(body["endpoints"])) == 4
    for e in body["endpoints"]:
        assert re.fullmatch(r"openvpn://riseupvpn\.corp/\?address=10\.0\.0\.[0-5]:1194"
                            r"&transport=udp", e)
    few = Entry("riseupvpn", Credentials("ca", "cert", "key", eps[:2]),
                dt.datetime(2026, 12, 6, 10, 0, 0, 123), dt.datetime(2026, 12, 1))
    body = answer(few, random.Random())
    assert body["date_updated"] == "2026-12-06T10:00:00.000123Z"
    assert sorted(body["endpoints"]) == [
        "openvpn://riseupvpn.corp/?address=10.0.0.0:1194&transport=udp",
        "openvpn://riseupvpn.corp/?address=10.0.0.1:1194&transport=udp"]
