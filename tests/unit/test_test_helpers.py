"""Test-helper lists: the legacy random order and OONI's canary rotation."""

import random
from collections import Counter

from oonibackend.routes.test_helpers import canary_order, make_test_helpers

TH = [f"https://{i}.th.ooni.org" for i in range(4)]


def test_canary_rotation_matches_the_reference_distribution():
    """Reference: over 1.2.3.0-199 the first helper is {0: 20, 1: 60, 2: 60, 3: 60}."""
    first = Counter(canary_order(TH, f"1.2.3.{i}")[0] for i in range(200))
    assert first == {TH[0]: 20, TH[1]: 60, TH[2]: 60, TH[3]: 60}


def test_unparsable_address_gets_a_fixed_rotation():
    assert canary_order(TH, "not an ip") == [TH[1], TH[2], TH[3], TH[0]]


def test_every_order_is_a_rotation_of_all_helpers():
    for i in range(256):
        order = canary_order(TH, f"10.0.0.{i}")
        assert sorted(order) == sorted(TH)
    assert canary_order(TH, "1.2.3.44") == TH  # int(1.2.3.44) % 100 == 0: canary first
    assert canary_order(TH, "1.2.3.55")[0] == TH[3]  # q = 11: starts at 11 % 3 + 1


def test_default_web_connectivity_helpers_are_shuffled_then_cloudfront():
    seen = set()
    for seed in range(20):
        wc = make_test_helpers(rng=random.Random(seed))["web-connectivity"]
        assert wc[-1]["type"] == "cloudfront" and len(wc) == 3
        seen.add(wc[0]["address"])
    assert seen == {"https://6.th.ooni.org", "https://5.th.ooni.org"}


def test_configured_canary_helpers_replace_the_legacy_pair():
    wc = make_test_helpers("1.2.3.44", TH)["web-connectivity"]
    assert [h["address"] for h in wc[:4]] == TH  # q = 0 < 10
    assert wc[4]["type"] == "cloudfront"
    assert set(make_test_helpers("1.2.3.4", TH)) == {
        "dns", "http-return-json-headers", "ssl", "tcp-echo", "traceroute", "web-connectivity"}
