"""Legacy rules: http_requests with fingerprints (docs/fastpath.md §2.7.14), dns_consistency,
tcp_connect."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import SAMPLES
from workers.fingerprints import Fingerprints
from workers.scoring import score_measurement

ZERO = {"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0,
        "blocking_isp": 0.0, "blocking_local": 0.0}
FAILED = {**ZERO, "accuracy": 0.0}
MY_0 = {"confidence_no_fp": 5, "expected_countries": ["MY"], "location_found": "body",
        "name": "ooni.my_0", "scope": "nat"}
DOC_MOVED = {"confidence_no_fp": 5, "expected_countries": [], "location_found": "body",
             "name": "cp.fp_x_document_moved", "scope": "fp"}
AE_2 = {"confidence_no_fp": 5, "expected_countries": ["AE"], "location_found": "header.location",
        "name": "ooni.ae_2", "scope": "isp"}


@pytest.fixture(scope="module")
def fps() -> Fingerprints:
    return Fingerprints.from_json_files(SAMPLES / "fingerprints_dns.json",
                                        SAMPLES / "fingerprints_http.json")


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d)


def hr_request(body: Any = "", headers: Any = None, is_tor: Any = False,
               response: Any = "default") -> dict[str, Any]:
    req: dict[str, Any] = {"request": {"url": "http://x.org", "tor": {"is_tor": is_tor}}}
    req["response"] = {"body": body, "headers": headers or {}} if response == "default" \
        else response
    return req


def http_requests(requests: Any, fps: Any, blm: Any = True, hm: Any = True,
                  **top: Any) -> dict[str, Any]:
    msm = {"test_name": "http_requests", "probe_cc": "MY", **top,
           "test_keys": {"body_length_match": blm, "headers_match": hm, "requests": requests}}
    return score_measurement(msm, fps)


def test_http_requests_confirmed_does_not_raise_general(fps: Fingerprints) -> None:
    """Quirk §8.3: a confirmed nat match with matching bodies -> general 0.0, not an anomaly."""
    s = http_requests([hr_request("foo Makluman/Notification foo")], fps)
    assert dumps(s) == dumps({**ZERO, "blocking_country": 1.0, "fingerprints": [MY_0],
                              "confirmed": True})


def test_http_requests_mismatch_plus_fingerprints(fps: Fingerprints) -> None:
    moved = "<html><head><title>Document Moved</title></head></html>"
    reqs = [hr_request(moved), hr_request(moved, {"Location": "http://lighthouse.du.ae/x"}),
            hr_request("Makluman/Notification", is_tor=True)]  # Tor request: not matched
    s = http_requests(reqs, fps, blm=False, probe_cc="ae")
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "blocking_isp": 1.0,
                              "fingerprints": [DOC_MOVED, DOC_MOVED, AE_2], "confirmed": True})


def test_http_requests_non_confirming_and_null_response(fps: Fingerprints) -> None:
    moved = "<head><title>Document Moved</title></head>"
    s = http_requests([hr_request(response=None), hr_request(moved), {"request": {}}], fps,
                      hm=False, probe_cc=None)
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "fingerprints": [DOC_MOVED]})


def test_http_requests_without_fingerprints() -> None:
    s = http_requests([hr_request("Makluman/Notification")], None)
    assert dumps(s) == dumps(ZERO)


@pytest.mark.parametrize(("kwargs", "top"), [
    ({"blm": None}, {}), ({"hm": None}, {}),
    ({}, {"control_failure": "generic_timeout_error"}),
    ({}, {"experiment_failure": "dns_lookup_error"}),
])
def test_http_requests_failed(fps: Fingerprints, kwargs: dict[str, Any],
                              top: dict[str, Any]) -> None:
    s = http_requests([hr_request("Makluman/Notification")], fps, **kwargs, **top)
    assert dumps(s) == dumps(FAILED)


def test_http_requests_failures_inside_test_keys_are_ignored(fps: Fingerprints) -> None:
    """Quirk §8.3: only top-level control/experiment failures count."""
    msm = {"test_name": "http_requests", "probe_cc": "IT",
           "test_keys": {"body_length_match": True, "headers_match": True,
                         "control_failure": "x", "experiment_failure": "y"}}
    assert dumps(score_measurement(msm, fps)) == dumps(ZERO)


def test_http_requests_sample_with_fingerprints(fps: Fingerprints) -> None:
    msm = json.loads((SAMPLES / "http_requests_1.json").read_text())
    assert dumps(score_measurement(msm, fps)) == dumps(FAILED)


@pytest.mark.parametrize("requests", [[None], [{"request": "x", "response": {}}],
                                      [hr_request(headers=[["Location", ["x"]]])]])
def test_http_requests_malformed_raises(fps: Fingerprints, requests: Any) -> None:
    with pytest.raises((AttributeError, TypeError)):
        http_requests(requests, fps)


def test_dns_consistency_is_zero() -> None:
    for tk in ({}, None, {"inconsistent": ["8.8.8.8"]}):
        s = score_measurement({"test_name": "dns_consistency", "test_keys": tk}, None)
        assert dumps(s) == dumps(ZERO)


def tcp(connection: Any, inp: Any = "109.105.109.165:22") -> dict[str, Any]:
    return score_measurement({"test_name": "tcp_connect", "input": inp,
                              "test_keys": {"connection": connection}}, None)


@pytest.mark.parametrize("inp", ["109.105.109.165:22", "obfs4 83.212.101.3:50000",
                                 "178.209.52.110:22", "obfs4 178.209.52.110:443"])
def test_tcp_connect_network_errors_section_6_5(inp: str) -> None:
    assert dumps(tcp("generic_timeout_error", inp)) == dumps({**ZERO, "blocking_general": 0.8})


@pytest.mark.parametrize(("connection", "general"), [
    ("success", 0.0), ("connection_refused_error", 0.8), ("connect_error", 0.8),
    ("tcp_timed_out_error", 0.8), ("dns_lookup_error", 1.0), (None, 1.0), (True, 1.0)])
def test_tcp_connect(connection: Any, general: float) -> None:
    assert dumps(tcp(connection)) == dumps({**ZERO, "blocking_general": general})


def test_tcp_connect_malformed() -> None:
    msm = {"test_name": "tcp_connect", "input": "1.2.3.4:22", "test_keys": {}}
    assert dumps(score_measurement(msm, None)) == dumps({**ZERO, "blocking_general": 1.0})
    for inp in ("", None):
        with pytest.raises(AssertionError):  # not a `pbug `: the measurement is dropped
            tcp("success", inp)
    with pytest.raises(KeyError):
        score_measurement({"test_name": "tcp_connect", "test_keys": {}}, None)
    with pytest.raises(AttributeError):
        score_measurement({"test_name": "tcp_connect", "input": "x", "test_keys": None}, None)
