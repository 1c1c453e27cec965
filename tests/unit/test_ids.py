"""Report ids and measurement uids: formats, and rejection of hostile values."""

from __future__ import annotations

import re

import pytest

from oonibackend import ids

HOSTILE = [
    "", "../x", "..", "/etc/passwd", "a/b", "a\\b", "x\n", "20210208T162755Z_ndt_DZ_36947_n1_x\n",
    "20210208T162755Z_ndt_DZ_36947_n1_8swgXi7xNuRUyO9a/../..", "ｎｄｔ", "é" * 10,
    "20210208T162755Z_ndt_DZ_36947_n1_" + "a" * 100, "a\x00b", " ", "%2e%2e",
]


def test_new_report_id_format():
    rid = ids.new_report_id("web_connectivity", "IE", 65550, "1")
    assert re.fullmatch(r"\d{8}T\d{6}Z_webconnectivity_IE_65550_n1_[A-Za-z0-9]{16}", rid), rid
    assert len(rid) == 61
    assert ids.parse_report_id(rid) == (rid[:16], "webconnectivity", "IE", 65550)


def test_new_report_id_random_part_alphabet():
    for _ in range(500):
        rand = ids.new_report_id("ndt", "DZ", 1, "1").rsplit("_", 1)[1]
        assert re.fullmatch(r"[A-Za-z0-9]{16}", rand)


@pytest.mark.parametrize("args", [
    ("", "IT", 1, "1"), ("x", "IT", 1, "1"), ("a" * 30, "IT", 1, "1"), ("web/x", "IT", 1, "1"),
    ("ndt", "I", 1, "1"), ("ndt", "I1", 1, "1"), ("ndt", "IT", -1, "1"), ("ndt", "IT", 2**32, "1"),
    ("ndt", "IT", True, "1"), ("ndt", "IT", 1, "a_b"), ("ndt", "IT", 1, ""), ("ndt", "ÉT", 1, "1"),
])
def test_new_report_id_rejects_what_parse_would_reject(args):
    with pytest.raises(ValueError):
        ids.new_report_id(*args)


def test_parse_report_id_legacy_examples():
    assert ids.parse_report_id("20210208T162755Z_ndt_DZ_36947_n1_8swgXi7xNuRUyO9a") == (
        "20210208T162755Z", "ndt", "DZ", 36947)
    # Legacy probes use test names like `integtest`; cc and test name are normalised.
    assert ids.parse_report_id("20210208T162755Z_IntegTest_it_0_n1_x") == (
        "20210208T162755Z", "integtest", "IT", 0)


@pytest.mark.parametrize("rid", HOSTILE + [
    "20210208T162755Z_ndt_DZ_36947_n1",  # 5 parts
    "20210208T162755Z_ndt_DZ_36947_n1_x_y",  # 7 parts
    "20210208T162755Z_n_DZ_36947_n1_x",  # test name too short
    "20210208T162755Z_" + "a" * 30 + "_DZ_1_n1_x",  # too long
    "20210208T162755Z_ndt_D1_36947_n1_x", "20210208T162755Z_ndt_DZA_36947_n1_x",
    "20210208T162755Z_ndt_DZ_AS36947_n1_x", "20210208T162755Z_ndt_DZ__n1_x",
    "20210208T162755Z_ndt_DZ_１２_n1_x",  # unicode digits
    None, 42,
])
def test_parse_report_id_rejects(rid):
    with pytest.raises(ValueError):
        ids.parse_report_id(rid)


def test_measurement_uid_format_and_hour_dir():
    uid = ids.new_measurement_uid("IT", "webconnectivity")
    assert re.fullmatch(r"\d{14}\.\d{6}_IT_webconnectivity_[0-9a-f]{16}", uid), uid
    assert ids.is_valid_uid(uid)
    assert ids.hour_dir_of(uid) == f"{uid[:10]}_IT_webconnectivity"
    assert ids.is_valid_hour_dir(ids.hour_dir_of(uid))
    assert ids.is_valid_uid("20210208220710.181572_MA_ndt_7888edc7748936bf")


def test_measurement_uids_never_collide():
    # Same cc/test in the same microsecond: the random part alone keeps them apart.
    uids = {ids.new_measurement_uid("US", "ndt") for _ in range(100_000)}
    assert len(uids) == 100_000


@pytest.mark.parametrize("uid", HOSTILE + [
    "20210208220710.181572_MA_ndt_7888edc7748936bf\n",
    "20210208220710.181572_MA_ndt_7888edc7748936b",  # 15 hex
    "20210208220710.181572_MA_ndt_7888EDC7748936BF",  # uppercase hex
    "20210208220710.181572_MA_ndt_x_7888edc7748936bf", "20210208220710_MA_ndt_7888edc7748936bf",
    "20210208220710.181572_MA_n/t_7888edc7748936bf", "20210208220710.181572_MA__7888edc7748936bf",
    "２0210208220710.181572_MA_ndt_7888edc7748936bf", None, b"x",
])
def test_is_valid_uid_rejects(uid):
    assert not ids.is_valid_uid(uid)
    with pytest.raises(ValueError):
        ids.hour_dir_of(uid)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../x", "2021020822_MA_ndt/..", "2021020822_MA_", ".delivered",
                                  "2021020822_MA_ndt\n", "2021020822_M1_ndt", None])
def test_is_valid_hour_dir_rejects(name):
    assert not ids.is_valid_hour_dir(name)


def test_new_measurement_uid_rejects_bad_parts():
    for cc, testname in [("I", "ndt"), ("IT", "web_connectivity"), ("IT", "../x"), ("IT", "")]:
        with pytest.raises(ValueError):
            ids.new_measurement_uid(cc, testname)


def test_testname_and_cc_helpers():
    assert ids.testname_of("web_connectivity") == "webconnectivity"
    for bad in ["", "___", "Web", "a-b", "a" * 61, None, "dns check"]:
        with pytest.raises(ValueError):
            ids.testname_of(bad)  # type: ignore[arg-type]
    assert ids.normalize_cc("it") == "IT"
    for bad in ["", "ITA", "1T", None, 12, "É1"]:
        assert ids.normalize_cc(bad) == "ZZ"
