"""GeoIP lookups against the generated test databases."""

from __future__ import annotations

import logging

import pytest

from oonibackend.geoip import GeoIP, parse_ip


@pytest.fixture(scope="module")
def geo(tmp_path_factory):
    from tests.conftest import write_mmdb

    cc, asn = write_mmdb(tmp_path_factory.mktemp("geoip"))
    g = GeoIP(cc, asn)
    yield g
    g.close()


@pytest.mark.parametrize("ip, expected", [
    ("192.33.4.12", ("US", 2149, "CAIDA / PSGnet")),
    ("5.5.5.5", ("IT", 12874, "Fastweb")),
    ("1.2.3.4", ("IE", 65550, "Example IE network")),
    ("2a01:4f8::1", ("IT", 12874, "Fastweb")),
    # IPv4-mapped IPv6 (dual-stack sockets) is looked up as IPv4.
    ("::ffff:192.33.4.12", ("US", 2149, "CAIDA / PSGnet")),
    ("::ffff:5.5.5.200", ("IT", 12874, "Fastweb")),
    (" 1.2.3.4 ", ("IE", 65550, "Example IE network")),
    ("8.8.8.8", (None, None, None)),
    ("2001:db8::1", (None, None, None)),
])
def test_lookup(geo, ip, expected):
    assert geo.lookup(ip) == expected


@pytest.mark.parametrize("bad", ["", "1.2.3", "999.1.1.1", "example.org", "::g", "1.2.3.4/24"])
def test_invalid_address(geo, bad):
    with pytest.raises(ValueError):
        geo.lookup(bad)


def test_parse_ip_unwraps_mapped():
    assert str(parse_ip("::ffff:1.2.3.4")) == "1.2.3.4"
    assert str(parse_ip("2a01:4f8::1")) == "2a01:4f8::1"


def test_missing_files_are_empty(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="oonibackend.geoip")
    g = GeoIP(tmp_path / "nope-cc.mmdb", tmp_path / "nope-asn.mmdb")
    assert g.lookup("192.33.4.12") == (None, None, None)
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 2
    with pytest.raises(ValueError):
        g.lookup("not-an-ip")
    g.close()


def test_corrupt_file_is_empty(tmp_path, geoip_files):
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"this is not a maxmind database" * 10)
    g = GeoIP(bad, geoip_files[1])
    assert g.lookup("192.33.4.12") == (None, 2149, "CAIDA / PSGnet")
    g.close()
