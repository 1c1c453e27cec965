"""Field parsing shared by the probe-services routes (oonibackend.validate's probe_* checks):
bad input is refused (a 400 in the routes), never a 500."""

from __future__ import annotations

import pytest

from oonibackend.errors import APIError
from oonibackend.routes.checkin import CheckIn, parse_checkin
from oonibackend.routes.test_lists import parse_limit
from oonibackend.validate import InvalidValue
from oonibackend.validate import category_codes as parse_category_codes
from oonibackend.validate import probe_asn as parse_asn
from oonibackend.validate import probe_cc as parse_cc


@pytest.mark.parametrize("value, cc", [(None, "ZZ"), ("", "ZZ"), ("it", "IT"), (" US ", "US")])
def test_parse_cc(value, cc):
    assert parse_cc(value) == cc


@pytest.mark.parametrize("value", ["ITA", "I", "1T", 12, ["IT"], "ß", "I\nT", "IT\n\n\n1"])
def test_parse_cc_invalid(value):
    with pytest.raises(InvalidValue) as e:
        parse_cc(value)
    assert e.value.field == "probe_cc"


@pytest.mark.parametrize("value, asn", [(None, 0), ("", 0), ("AS0", 0), ("as2149", 2149),
                                        ("AS4294967295", 4294967295)])
def test_parse_asn(value, asn):
    assert parse_asn(value) == asn


@pytest.mark.parametrize("value", ["2149", 2149, "AS", "ASx1", "AS4294967296", "AS-1",
                                   "AS١٢٣", "aſ1", True, "AS12345678901"])
def test_parse_asn_invalid(value):
    with pytest.raises(InvalidValue):
        parse_asn(value)


def test_parse_asn_bare():
    assert parse_asn("2149", allow_bare=True) == 2149
    assert parse_asn(2149, allow_bare=True) == 2149
    with pytest.raises(InvalidValue):
        parse_asn("٣", allow_bare=True)


def test_parse_category_codes():
    assert parse_category_codes(None) == []
    assert parse_category_codes([]) == []
    assert parse_category_codes("") == []
    assert parse_category_codes("news, GRP,,news") == ["NEWS", "GRP"]
    assert parse_category_codes(["CULTR", "humr"]) == ["CULTR", "HUMR"]
    for bad in (["NE WS"], ["N1"], [1], "NEWS;GRP", {"a": 1}, 5, ["ſ"], ["NEWS"] * 101):
        with pytest.raises(InvalidValue):
            parse_category_codes(bad)


@pytest.mark.parametrize("value, limit", [(None, 9999), ("", 9999), ("-1", 9999), ("0", 0),
                                          ("5", 5), ("100000", 9999)])
def test_parse_limit(value, limit):
    assert parse_limit(value) == limit


@pytest.mark.parametrize("value", ["x", "-2", "1.5"])
def test_parse_limit_invalid(value):
    with pytest.raises(APIError):
        parse_limit(value)


def test_parse_checkin_defaults_and_limits():
    req = parse_checkin({})
    assert req == CheckIn("ZZ", 0, "timed", True, [])
    assert req.url_limit == 100
    assert parse_checkin({"charging": False}).url_limit == 20
    assert parse_checkin({"charging": 0}).url_limit == 20
    assert parse_checkin({"charging": False, "run_type": "manual"}).url_limit == 9999
    req = parse_checkin({"probe_cc": "br", "probe_asn": "AS1", "platform": 5, "on_wifi": "x",
                         "web_connectivity": {"category_codes": ["news"]}})
    assert (req.probe_cc, req.probe_asn, req.category_codes) == ("BR", 1, ["NEWS"])


@pytest.mark.parametrize("body", [{"charging": "yes"}, {"run_type": 1}, {"web_connectivity": []},
                                  {"web_connectivity": {"category_codes": 5}}])
def test_parse_checkin_invalid(body):
    with pytest.raises(APIError) as e:
        parse_checkin(body)
    assert e.value.status == 400
