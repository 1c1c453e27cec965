"""The ring of other API hosts and the URLs asked of them."""

from __future__ import annotations

import pytest

from oonibackend.bodies import peers

UID = "20240102030405.123456_IT_webconnectivity_0123456789abcdef"


def test_ring_starts_after_this_host():
    hosts = ["c.ooni.org", "a.ooni.org", "b.ooni.org", "d.ooni.org", "b.ooni.org"]
    assert peers.ring(hosts, "b.ooni.org") == ["c.ooni.org", "d.ooni.org", "a.ooni.org"]
    assert peers.ring(hosts, "d.ooni.org") == ["a.ooni.org", "b.ooni.org", "c.ooni.org"]
    assert peers.ring(hosts, "a.ooni.org") == ["b.ooni.org", "c.ooni.org", "d.ooni.org"]


def test_ring_without_this_host_is_the_sorted_list():
    assert peers.ring(["b", "a", " ", "a"], "z") == ["a", "b"]
    assert peers.ring([], "a") == []
    assert peers.ring(["a"], "a") == []


def test_ring_ignores_trailing_slashes():
    assert peers.ring(["http://127.0.0.1:9/", "http://127.0.0.1:8"], "http://127.0.0.1:8/") == \
        ["http://127.0.0.1:9"]


def test_spool_url():
    assert peers.spool_url("ams-pg.ooni.org", UID) == (
        "https://ams-pg.ooni.org/measurement_spool/2024010203_IT_webconnectivity/"
        f"{UID}.post")
    assert peers.spool_url("http://127.0.0.1:8000", UID).startswith(
        "http://127.0.0.1:8000/measurement_spool/2024010203_IT_webconnectivity/")
    with pytest.raises(ValueError):
        peers.spool_url("h", "../../x")


def test_local_name():
    assert peers.local_name("api.example.org") == "api.example.org"
    assert peers.local_name("")  # the machine's name
