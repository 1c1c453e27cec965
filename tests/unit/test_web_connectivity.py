"""Web Connectivity scoring (docs/fastpath.md §2.7.7): samples byte for byte, and every step of
the rule."""

from __future__ import annotations

import base64
import copy
import json

import pytest
import ujson

from tests.conftest import SAMPLES
from workers.fingerprints import Fingerprints
from workers.scoring.web_connectivity import score_web_connectivity

Z = ('"blocking_general":{g},"blocking_global":0.0,"blocking_country":{c},'
     '"blocking_isp":{i},"blocking_local":{l}')


def zeros(g="0.0", c="0.0", i="0.0", loc="0.0") -> str:
    return Z.format(g=g, c=c, i=i, l=loc)


FAILED = "{" + zeros() + ',"accuracy":0.0}'

# Expected `scores` strings for every web_connectivity sample (§6.1, §6.2, §6.6).
EXPECTED = {
    "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json":
        "{" + zeros("1.0", c="1.0") + ',"fingerprints":[{"confidence_no_fp":5,'
        '"expected_countries":["ID"],"location_found":"header.location",'
        '"name":"ooni.id_lamanlabuh_kominfo","scope":"nat"}],"confirmed":true}',
    "bug_351.json": "{" + zeros("1.0") + ',"analysis":{"blocking_type":"http-failure"},'
                    '"accuracy":0.0}',
    "web_connectivity_b64_hdr.json": "{" + zeros("1.0")
                                     + ',"analysis":{"blocking_type":"http-failure"}}',
    "web_connectivity_ir_fp.json":
        "{" + zeros("2.0", c="1.0") + ',"fingerprints":[{"confidence_no_fp":10,'
        '"expected_countries":["IR"],"location_found":"dns","name":"ooni.ir_10dot10_ipv4_1",'
        '"scope":"nat"}],"confirmed":true,"analysis":{"blocking_type":"dns"}}',
    "web_connectivity_no_body.json": "{" + zeros() + "}",
    "web_connectivity_null.json": FAILED,
    "requests_none.json": "{" + zeros("1.0") + ',"analysis":{"blocking_type":"dns"}}',
    "report1.json": "{" + zeros() + "}",
    "report2.json": "{" + zeros() + "}",
}


@pytest.fixture(scope="module")
def fps() -> Fingerprints:
    return Fingerprints.from_json_files(SAMPLES / "fingerprints_dns.json",
                                        SAMPLES / "fingerprints_http.json")


def load(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_samples_byte_for_byte(fps, name):
    msm = load(name)
    before = copy.deepcopy(msm)
    assert ujson.dumps(score_web_connectivity(msm, fps)) == EXPECTED[name]
    assert msm == before  # pure


def test_samples_without_fingerprints():
    assert ujson.dumps(score_web_connectivity(load("web_connectivity_ir_fp.json"), None)) == (
        "{" + zeros("1.0") + ',"analysis":{"blocking_type":"dns"}}')


# ---- §6.4 inline cases ----------------------------------------------------------------------


def test_simple_failed(fps):
    msm = {"test_name": "web_connectivity", "probe_cc": "IE", "test_keys": {}, "input": "foo",
           "probe_asn": "1", "measurement_start_time": "", "test_start_time": ""}
    assert ujson.dumps(score_web_connectivity(msm, fps)) == FAILED


def test_various_keys_missing(fps):
    msm = {"test_name": "web_connectivity", "probe_cc": "US", "test_keys": {},
           "report_id": "20210121T092829Z_webconnectivity_US_8075_n1_K8Vv8aSpoYfW3wqf"}
    assert ujson.dumps(score_web_connectivity(msm, fps)) == FAILED


def test_confirmed_with_probe_false(fps):
    msm = {"probe_cc": "IT", "test_keys": {"requests": [{"response": {"body": "GdF Stop Page"}}],
                                           "blocking": False, "accessible": True}}
    assert ujson.dumps(score_web_connectivity(msm, fps)) == (
        "{" + zeros("1.0", c="1.0") + ',"fingerprints":[{"confidence_no_fp":5,'
        '"expected_countries":["IT"],"location_found":"body","name":"ooni.it_0",'
        '"scope":"nat"}],"confirmed":true}')


# ---- each step on a synthetic table -----------------------------------------------------------


def _rec(name, pattern, scope, cc="", loc="body"):
    return {"name": name, "scope": scope, "other_names": "", "location_found": loc,
            "pattern_type": "contains", "pattern": pattern, "confidence_no_fp": 5,
            "expected_countries": cc}


@pytest.fixture(scope="module")
def synth() -> Fingerprints:
    return Fingerprints.from_rows([], [
        _rec("nat", "NATBLOCK", "nat"), _rec("isp", "ISPBLOCK", "isp"),
        _rec("inst", "INSTBLOCK", "inst", "IT"), _rec("prod", "PRODBLOCK", "prod", "IT"),
        _rec("fp", "FPBLOCK", "fp"), _rec("vbw", "VBWBLOCK", "vbw", "FR"),
    ])


def score(synth, tk, cc="IT", body=None):
    tk = dict(tk)
    if body is not None:
        tk["requests"] = [{"response": {"body": body}}]
    return score_web_connectivity({"probe_cc": cc, "test_keys": tk}, synth)


@pytest.mark.parametrize("blocking", ["tcp_ip", "dns", "http-diff", "http-failure"])
def test_probe_blocking_types(synth, blocking):
    s = score(synth, {"blocking": blocking})
    assert s == {**dict.fromkeys(("blocking_general", "blocking_global", "blocking_country",
                                  "blocking_isp", "blocking_local"), 0.0),
                 "blocking_general": 1.0, "analysis": {"blocking_type": blocking}}


@pytest.mark.parametrize("blocking", [False, 0, 0.0])
def test_probe_no_blocking(synth, blocking):
    assert ujson.dumps(score(synth, {"blocking": blocking})) == "{" + zeros() + "}"


@pytest.mark.parametrize("blocking", [True, "unknown", 1, [], {}])
def test_unsupported_blocking(synth, blocking):
    assert ujson.dumps(score(synth, {"blocking": blocking})) == (
        "{" + zeros() + ',"analysis":{"msg":"Unsupported blocking type"},"accuracy":0.0}')


def test_null_blocking(synth):
    assert ujson.dumps(score(synth, {"blocking": None})) == FAILED
    assert ujson.dumps(score(synth, {})) == FAILED
    # with a (non-confirming) match, a null verdict is not a failure
    s = score(synth, {"blocking": None}, body="FPBLOCK")
    assert list(s) == ["blocking_general", "blocking_global", "blocking_country", "blocking_isp",
                       "blocking_local", "fingerprints"]
    assert s["blocking_general"] == 0.0


def test_localities_and_sum(synth):
    s = score(synth, {"blocking": "dns"}, body="NATBLOCK ISPBLOCK INSTBLOCK PRODBLOCK FPBLOCK")
    assert [f["name"] for f in s["fingerprints"]] == ["nat", "isp", "inst", "prod", "fp"]
    assert (s["blocking_country"], s["blocking_isp"], s["blocking_local"]) == (1.0, 1.0, 1.0)
    assert s["blocking_general"] == 1.0 + 1.0 + 1.0 + 1.0  # probe dns + country + isp + local
    assert list(s)[5:] == ["fingerprints", "confirmed", "analysis"]
    # prod confirmed (IT expected) sets blocking_general = 1.0 before the probe verdict
    s = score(synth, {"blocking": False}, body="PRODBLOCK")
    assert s["blocking_general"] == 1.0 and s["confirmed"] is True


def test_non_confirming(synth):
    s = score(synth, {"blocking": False}, cc="IT", body="VBWBLOCK FPBLOCK")
    assert "confirmed" not in s and s["blocking_general"] == 0.0
    s = score(synth, {"blocking": False}, cc="FR", body="VBWBLOCK")
    assert s["confirmed"] is True and s["blocking_general"] == 1.0
    s = score(synth, {"blocking": False}, cc="ZZ", body="INSTBLOCK")
    assert "confirmed" not in s


def test_title_match(synth):
    for ok in (True, False, None, 1, 0):
        assert "accuracy" not in score(synth, {"blocking": False, "title_match": ok})
    s = score(synth, {"blocking": "dns", "title_match": "yes"}, body="NATBLOCK")
    # early return: no verdict, no sum
    assert ujson.dumps(s) == ("{" + zeros(c="1.0") + ',"fingerprints":[{"name":"nat",'
                              '"scope":"nat","location_found":"body","confidence_no_fp":5,'
                              '"expected_countries":[]}],"confirmed":true,"accuracy":0.0}')


def test_unknown_failure_and_accessible(synth):
    s = score(synth, {"blocking": False, "http_experiment_failure": "unknown_failure x"})
    assert s["accuracy"] == 0.0
    s = score(synth, {"blocking": False, "accessible": None})
    assert s["accuracy"] == 0.0
    s = score(synth, {"blocking": False, "accessible": None}, body="FPBLOCK")
    assert "accuracy" not in s
    s = score(synth, {"blocking": False})  # key absent: fine
    assert "accuracy" not in s


def test_bad_base64_body(fps):
    msm = {"probe_cc": "IT", "test_keys": {"blocking": False, "requests": [
        {"response": {"body": "GdF Stop Page"}},
        {"response": {"body": {"format": "base64", "data": "abc"}}}]}}
    # matching is abandoned (no fingerprints at all) and accuracy is appended last
    assert ujson.dumps(score_web_connectivity(msm, fps)) == "{" + zeros() + ',"accuracy":0.0}'
    msm["test_keys"]["blocking"] = "dns"
    assert ujson.dumps(score_web_connectivity(msm, fps)) == (
        "{" + zeros("1.0") + ',"analysis":{"blocking_type":"dns"},"accuracy":0.0}')


def test_base64_body_matches(fps):
    data = base64.b64encode(b"<html>GdF Stop Page</html>").decode()
    msm = {"probe_cc": "IT", "test_keys": {"blocking": False, "requests": [
        {"response": {"body": {"format": "base64", "data": data}}}]}}
    assert score_web_connectivity(msm, fps)["confirmed"] is True


def test_duplicates_kept_and_fresh(fps):
    resp = {"body": "GdF Stop Page"}
    msm = {"probe_cc": "IT", "test_keys": {"blocking": False, "requests": [
        {"response": resp}, {"response": resp}]}}
    s = score_web_connectivity(msm, fps)
    assert [f["name"] for f in s["fingerprints"]] == ["ooni.it_0", "ooni.it_0"]
    assert s["blocking_general"] == 1.0
    s["fingerprints"][0]["expected_countries"].clear()
    assert score_web_connectivity(msm, fps)["fingerprints"][0]["expected_countries"] == ["IT"]


@pytest.mark.parametrize("msm,exc", [
    ({"test_keys": {}}, KeyError),  # probe_cc required by matching
    ({"probe_cc": "IT", "test_keys": []}, AttributeError),
    ({"probe_cc": "IT", "test_keys": {"requests": [{"response": {"headers": [["a", "b"]]}}]}},
     AttributeError),
    ({"probe_cc": 5, "test_keys": {}}, AttributeError),
    ({"probe_cc": "IT", "test_keys": {"blocking": False, "dns_failure": 5}}, TypeError),
])
def test_malformed_raises_like_reference(fps, msm, exc):
    with pytest.raises(exc):
        score_web_connectivity(msm, fps)
