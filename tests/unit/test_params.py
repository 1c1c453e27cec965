"""Query-string parsing of the read routes: tolerant where Explorer needs it, strict otherwise."""

import datetime as dt

import pytest
from multidict import MultiDict

from oonibackend import validate
from oonibackend.errors import APIError
from oonibackend.routes.params import Query


def q(**kw):
    return Query(MultiDict(kw))


def test_empty_undefined_and_null_values_are_absent():
    p = Query(MultiDict([("probe_cc", ""), ("since", "undefined"), ("until", "null")]))
    assert p.cc_list() == [] and p.date("since") is None and p.date("until") is None
    assert not p.has("probe_cc")


def test_comma_joined_and_repeated_values_are_one_list_deduplicated_in_order():
    p = Query(MultiDict([("probe_cc", "cn,IR, RU"), ("probe_cc", "IR,ZZ")]))
    assert p.cc_list() == ["CN", "IR", "RU", "ZZ"]
    assert q(test_name="signal,telegram,,whatsapp").test_names() == ["signal", "telegram",
                                                                      "whatsapp"]


def test_asn_with_or_without_the_AS_prefix():
    assert q(probe_asn="AS3269,3270").asn_list() == [3269, 3270]
    assert q(probe_asn="as12").asn() == 12


@pytest.mark.parametrize("value", ["ASX", "AS-1", "99999999999", "1 2"])
def test_bad_asn_is_400(value):
    with pytest.raises(APIError) as e:
        q(probe_asn=value).asn_list()
    assert e.value.status == 400


@pytest.mark.parametrize("value,expected", [
    ("2024-01-02", dt.datetime(2024, 1, 2)),
    ("2024-01-02T05:00:00Z", dt.datetime(2024, 1, 2, 5)),
    ("2024-01-02 05:06:07", dt.datetime(2024, 1, 2, 5, 6, 7)),
    ("2024-01-02T05:00:00+02:00", dt.datetime(2024, 1, 2, 3)),
    ("2024-01-02T05:00:00.123Z", dt.datetime(2024, 1, 2, 5, 0, 0, 123000)),
])
def test_dates_are_naive_utc(value, expected):
    assert validate.date_time(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "1900-01-01", "2024-01-01T25:00"])
def test_bad_dates_are_400(value):
    with pytest.raises(APIError) as e:
        q(since=value).date("since")
    assert e.value.status == 400 and "since" in e.value.message


def test_booleans():
    assert q(a="true").bool("a") is True and q(a="FALSE").bool("a") is False
    assert q(a="").bool("a", default=None) is None
    with pytest.raises(APIError):
        q(a="maybe").bool("a")


def test_integers_with_bounds():
    assert q(limit="50").int("limit", 100, min=1, max=100) == 50
    assert q().int("limit", 100) == 100
    for bad in ("0", "101", "x"):
        with pytest.raises(APIError):
            q(limit=bad).int("limit", 100, min=1, max=100)


def test_choice_case_insensitive_when_asked():
    assert q(order="DESC").choice("order", ("asc", "desc"), "desc", lower=True) == "desc"
    with pytest.raises(APIError, match="asc, desc"):
        q(order="up").choice("order", ("asc", "desc"))


def test_report_id_and_input_validation():
    rid = "20231231T221448Z_webconnectivity_TW_18182_n1_zBswL4awQc3qUCnU"
    assert q(report_id=rid).report_id() == rid
    for bad in ("short", "x" * 101, rid + "/../"):
        with pytest.raises(APIError):
            q(report_id=bad).report_id()
    for ok in ("https://example.com/a?b=c&d=1#x", "dot://[2a00:1450::1]:853",
               "obfs4 1.2.3.4:80 FP cert=ab+c/d=", "https://пример.рф/"):
        assert q(input=ok).input() == ok
    for bad in ("https://example.com/<script>", "~!^{}", "foo.org;", "foo.org='"):
        with pytest.raises(APIError, match="Invalid characters"):  # legacy's whitelist
            q(input=bad).input()


def test_overlong_values_are_refused():
    with pytest.raises(APIError, match="too long"):
        q(domain="a" * 5000).str("domain")
