"""oonibackend.validate: the one set of identifier checks, and the options that keep each
caller's documented rule (query strings, probes' bodies, report ids, data files)."""

from __future__ import annotations

import pytest

from oonibackend import validate
from oonibackend.validate import InvalidValue


def test_country_codes_by_case():
    assert validate.country_code("it") == "IT"
    assert validate.is_country_code("IT", case="upper")
    assert not validate.is_country_code("it", case="upper")
    assert validate.is_country_code("it", case="lower")
    assert not validate.is_country_code("It", case="lower")
    for bad in ("ITA", "I", "1T", "ÉÉ", "I\n", 12, None):
        assert not validate.is_country_code(bad)
    with pytest.raises(InvalidValue) as e:
        validate.country_code("ITA", "country_code")
    assert e.value.field == "country_code" and "2-letter country code" in e.value.message


@pytest.mark.parametrize("value,prefixes,bounded,expected", [
    ("AS3269", validate.ASN_PREFIXES, True, 3269),
    ("as3269", validate.ASN_PREFIXES, True, 3269),
    ("3269", validate.ASN_PREFIXES, True, 3269),
    ("4294967295", ("",), True, 4294967295),
    ("9999999999", ("AS", ""), False, 9999999999),
])
def test_asn_forms(value, prefixes, bounded, expected):
    assert validate.asn(value, prefixes=prefixes, bounded=bounded) == expected


@pytest.mark.parametrize("value,prefixes", [
    ("As3269", validate.ASN_PREFIXES), ("AS3269", ("",)), ("3269", ("AS",)),
    ("4294967296", ("",)), ("AS12345678901", ("AS",)), ("AS-1", ("AS",)), ("AS١", ("AS",)),
    ("ASAS1", ("AS",)), ("", ("",)),
])
def test_asn_refusals(value, prefixes):
    with pytest.raises(InvalidValue):
        validate.asn(value, prefixes=prefixes)


def test_test_names_and_category_codes():
    assert validate.nettest_name("web_connectivity") == "web_connectivity"
    assert not validate.is_nettest_name("Web_Connectivity")
    assert validate.is_nettest_name("Web_Connectivity", any_case=True)
    assert not validate.is_nettest_name("a" * 61, any_case=True)
    assert validate.category_code("NEWS") == "NEWS"
    for bad in ("news", "N1", "", "A" * 17, "ſ"):
        assert not validate.is_category_code(bad)


def test_ids_to_look_up():
    assert validate.report_id("20210208T162755Z_ndt_DZ_36947_n1_8swgXi7xNuRUyO9a")
    for bad in ("short", "x" * 101, "a/../b_c_d_e_f_g"):
        with pytest.raises(InvalidValue, match="Invalid report_id field"):
            validate.report_id(bad)
    assert validate.is_measurement_uid("20240101000002.422281_TW_web_a1b2c3d4e5f60718")
    assert not validate.is_measurement_uid("../../etc/passwd")


def test_uint64_digits_bound():
    assert validate.uint64("18446744073709551615", "id") == 2**64 - 1
    assert validate.uint64("0" * 25 + "1", "id", max_digits=None) == 1
    for bad, digits in (("18446744073709551616", None), ("0" * 21, 20), ("0" * 20, 19),
                        ("²", 20), ("-1", 20), ("", 20)):
        with pytest.raises(InvalidValue):
            validate.uint64(bad, "id", max_digits=digits)


def test_dns_names():
    assert validate.is_dns_name("th.ooni.org", min_labels=2)
    assert validate.is_dns_name("localhost") and not validate.is_dns_name("localhost",
                                                                          min_labels=2)
    for bad in ("a_b.org", "-a.org", "a..org", "a.org.", "a" * 64 + ".org"):
        assert not validate.is_dns_name(bad)


def test_probe_fields():
    assert validate.probe_cc(None) == "ZZ" and validate.probe_cc(" it ") == "IT"
    assert validate.probe_asn("as12") == 12 and validate.probe_asn("") == 0
    assert validate.probe_asn(12, allow_bare=True) == 12
    with pytest.raises(InvalidValue, match="Invalid probe_asn"):
        validate.probe_asn("12")
    with pytest.raises(InvalidValue, match="Invalid probe_cc"):
        validate.probe_cc("IT\u00a0")
    assert validate.category_codes("news,GRP,news") == ["NEWS", "GRP"]


def test_dates_carry_the_field():
    with pytest.raises(InvalidValue) as e:
        validate.date_time("2021-13-01", "since")
    assert e.value.field == "since" and e.value.message == "Invalid since: '2021-13-01' is " \
        "not a date"
