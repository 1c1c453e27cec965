"""Circumvention rules (docs/fastpath.md §2.7.6, 11-13, 17-20) incl. the §6.4/§6.5 cases, and
malformed inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.scoring import score_measurement

ZERO = {"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0,
        "blocking_isp": 0.0, "blocking_local": 0.0}
FAILED = {**ZERO, "accuracy": 0.0}


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d)


def score(test_name: str, tk: Any, **top: Any) -> dict[str, Any]:
    return score_measurement({"test_name": test_name, **top, "test_keys": tk}, None)


# --- vanilla_tor ------------------------------------------------------------------------------

@pytest.mark.parametrize(("progress", "expected"), [
    (5, 0.98), (80, 1.0 - 80 * 0.004), (0, 1.0), ("40", 1.0 - 40 * 0.004), (-3, 1.0), (99.5, 0.602)])
def test_vanilla_tor_progress(progress: Any, expected: float) -> None:
    s = score("vanilla_tor", {"tor_logs": ["Jan 1 [notice] Bootstrapped 100% (done): Done"],
                              "tor_progress": progress})
    assert dumps(s) == dumps({**ZERO, "blocking_general": expected})


def test_vanilla_tor_progress_default_and_clamp() -> None:
    assert score("vanilla_tor", {"tor_log": "x"})["blocking_general"] == 1.0
    assert dumps(score("vanilla_tor", {"tor_log": "x", "tor_progress": 100})) == dumps(ZERO)
    assert dumps(score("vanilla_tor", {"tor_log": "x", "tor_progress": 250.0})) == dumps(ZERO)


@pytest.mark.parametrize("tk", [
    {"tor_log": "... Bootstrapped 100%: Done\n", "tor_progress": 0},
    {"tor_logs": "Bootstrapped 100% (done): Done", "tor_progress": 0},
    {"tor_logs": ["a", "Bootstrapped 100%: Done"], "tor_progress": 0},  # exact list element
    {"tor_logs": [], "tor_log": ["Bootstrapped 100% (done): Done"], "tor_progress": 0},
])
def test_vanilla_tor_done(tk: dict[str, Any]) -> None:
    assert dumps(score("vanilla_tor", tk)) == dumps(ZERO)


def test_vanilla_tor_no_logs() -> None:
    assert dumps(score("vanilla_tor", {"tor_progress": 100})) == dumps(FAILED)
    assert dumps(score("vanilla_tor", {"tor_logs": [], "tor_log": None})) == dumps(FAILED)


@pytest.mark.parametrize("tk", [None, {"tor_log": "x", "tor_progress": None},
                                {"tor_log": "x", "tor_progress": "abc"}, {"tor_logs": 5}])
def test_vanilla_tor_malformed_raises(tk: Any) -> None:
    with pytest.raises((AttributeError, TypeError, ValueError)):
        score("vanilla_tor", tk)


# --- tor --------------------------------------------------------------------------------------

def target(failure: Any) -> dict[str, Any]:
    return {"failure": failure, "network_events": []}


def test_tor_blocked_ratio_section_6_5() -> None:
    targets = {f"t{i}": target("generic_timeout_error" if i < 2 else None) for i in range(35)}
    targets["not_run"] = target(False)
    s = score("tor", {"targets": targets}, test_runtime=31.942783471)
    assert dumps(s) == dumps({**ZERO, "blocking_general": 0.05714285714285714,
                              "extra": {"test_runtime": 31.942783471}})


def test_tor_nothing_ran() -> None:
    s = score("tor", {"targets": {"a": target(False)}})
    assert dumps(s) == dumps({**FAILED, "extra": {"test_runtime": None}})


@pytest.mark.parametrize("tk", [{}, {"targets": None}, {"targets": {}}, {"targets": [target(None)]},
                                {"targets": {"a": {"failure": None}}},
                                {"targets": {"a": {"network_events": []}}}])
def test_tor_failed(tk: dict[str, Any]) -> None:
    assert dumps(score("tor", tk, test_runtime=1.0)) == dumps(FAILED)


def test_tor_empty_failure_is_dropped() -> None:
    with pytest.raises(AssertionError):
        score("tor", {"targets": {"a": target("")}})


@pytest.mark.parametrize("tk", [None, {"targets": "abc"}, {"targets": {"a": None}}])
def test_tor_malformed_raises(tk: Any) -> None:
    with pytest.raises((AttributeError, TypeError)):
        score("tor", tk)


# --- torsf ------------------------------------------------------------------------------------

def test_torsf_success_extra_order_section_6_5() -> None:
    s = score("torsf", {"bootstrap_time": 142.883336871, "failure": None},
              test_runtime=143.090651217)
    assert dumps(s) == dumps({**ZERO, "extra": {"bootstrap_time": 142.883336871,
                                                "test_runtime": 143.090651217}})


def test_torsf_android_383_bug() -> None:
    top = {"software_name": "ooniprobe-android-unattended", "software_version": "3.8.3"}
    assert dumps(score("torsf", {"failure": "x"}, **top)) == dumps(FAILED)
    top["software_version"] = "3.8.4"
    assert dumps(score("torsf", {"failure": "x"}, **top)) == dumps(
        {**ZERO, "blocking_general": 1.0})


def test_torsf_malformed() -> None:
    # null software fields default to "unknown"
    s = score("torsf", {}, software_name=None, software_version=None)
    assert dumps(s) == dumps({**ZERO, "extra": {"bootstrap_time": None, "test_runtime": None}})
    with pytest.raises(AttributeError):
        score("torsf", None)
    with pytest.raises(AttributeError):
        score("torsf", {}, software_name=5, software_version="3.8.3")


# --- meek -------------------------------------------------------------------------------------

def meek_req(code: Any = 200, server: Any = "ECAcc (bsa/EB24)", headers: Any = None) -> dict:
    if headers is None:
        headers = {"Server": server}
    return {"request": {"url": "https://a0.awsstatic.com"},
            "response": {"code": code, "headers": headers}}


def test_meek_empty_requests_integer_accuracy() -> None:
    for tk in ({}, {"requests": None}, {"requests": []}):
        s = score("meek_fronted_requests_test", tk)
        assert json.dumps(s) == json.dumps({**ZERO, "blocking_general": 1.0, "accuracy": 0})
        assert type(s["accuracy"]) is int


def test_meek_ok_and_server_header() -> None:
    assert dumps(score("meek_fronted_requests_test", {"requests": [meek_req()]})) == dumps(ZERO)
    s = score("meek_fronted_requests_test", {"requests": [meek_req(server="nginx"), meek_req(
        headers={})]})
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0})
    legacy = [["Content-Type", ["text/html"]], ["Server", ["ECAcc (bsa/EB24)", "x"]], ["Via", []]]
    s = score("meek_fronted_requests_test", {"requests": [meek_req(headers=legacy)]})
    assert dumps(s) == dumps(ZERO)
    # case-sensitive header name
    s = score("meek_fronted_requests_test", {"requests": [meek_req(headers={"server": "ECAcc x"})]})
    assert dumps(s) == dumps({**ZERO, "blocking_general": 0.5})


@pytest.mark.parametrize("request_", [{"response": None}, {"response": {}},
                                      meek_req(code=403), meek_req(code=None)])
def test_meek_blocked(request_: dict[str, Any]) -> None:
    s = score("meek_fronted_requests_test", {"requests": [meek_req(), request_, meek_req()]})
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0})


def test_meek_missing_response_key_is_code_0() -> None:
    s = score("meek_fronted_requests_test", {"requests": [{"request": {}}]})
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0})


@pytest.mark.parametrize("tk", [None, {"requests": [None]},
                                {"requests": [meek_req(headers={"Server": None})]}])
def test_meek_malformed_raises(tk: Any) -> None:
    with pytest.raises((AttributeError, TypeError)):
        score("meek_fronted_requests_test", tk)


# --- psiphon ----------------------------------------------------------------------------------

def test_psiphon_success_section_6_5() -> None:
    s = score("psiphon", {"bootstrap_time": 5.532639553, "failure": None},
              test_runtime=15.25602748, resolver_ip="1.2.3.4")
    assert dumps(s) == dumps({**ZERO, "accuracy": 1.0, "extra": {
        "test_runtime": 15.25602748, "bootstrap_time": 5.532639553}})


def test_psiphon_branches() -> None:
    s = score("psiphon", {"failure": "boom"}, resolver_ip="1.2.3.4")
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "accuracy": 1.0, "extra": {
        "test_runtime": None, "bootstrap_time": 0}})
    s = score("psiphon", {"failure": None, "bootstrap_time": 0}, resolver_ip="1.2.3.4",
              test_runtime=3)
    assert dumps(s) == dumps({**FAILED, "extra": {"test_runtime": 3, "bootstrap_time": 0}})
    s = score("psiphon", {"failure": "x", "bootstrap_time": 2.0})  # no resolver_ip key
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "accuracy": 0.0, "extra": {
        "test_runtime": None, "bootstrap_time": 2.0}})
    s = score("psiphon", {"bootstrap_time": None}, resolver_ip=None)  # null kept as-is
    assert dumps(s) == dumps({**ZERO, "accuracy": 1.0, "extra": {
        "test_runtime": None, "bootstrap_time": None}})
    with pytest.raises(AttributeError):
        score("psiphon", None)


# --- riseupvpn, openvpn, stunreachability -----------------------------------------------------

def test_riseupvpn_always_empty() -> None:
    assert score("riseupvpn", {"api_failure": "x"}) == {}
    assert score_measurement({"test_name": "riseupvpn"}, None) == {}


@pytest.mark.parametrize(("tk", "expected"), [
    ({"success": True}, ZERO),
    ({"success": False}, {**ZERO, "blocking_general": 1.0}),
    ({"success": None}, FAILED),
    ({}, FAILED),
    (None, FAILED),
    ({"success": "yes"}, ZERO),
])
def test_openvpn(tk: Any, expected: dict[str, Any]) -> None:
    s = score("openvpn", tk, test_runtime=37.975210163)
    assert dumps(s) == dumps({**expected, "extra": {"test_runtime": 37.975210163}})


def test_openvpn_malformed() -> None:
    s = score_measurement({"test_name": "openvpn"}, None)
    assert dumps(s) == dumps({**FAILED, "extra": {"test_runtime": None}})
    with pytest.raises(AttributeError):
        score("openvpn", ["success"])


def test_stunreachability_section_6_4() -> None:
    s = score_measurement({"test_name": "stunreachability", "test_keys": {
        "endpoint": "stun.l.google.com:19302", "failure": None}}, None)
    assert dumps(s) == dumps({**ZERO, "extra": {"endpoint": "stun.l.google.com:19302"}})


def test_stunreachability_fail_section_6_4() -> None:
    s = score_measurement({"test_name": "stunreachability", "test_keys": {"failure": "boo"}}, None)
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0,
                              "extra": {"endpoint": None, "failure": "boo"}})


def test_stunreachability_malformed() -> None:
    assert dumps(score("stunreachability", {"failure": ""})) == dumps({**ZERO, "extra": {
        "endpoint": None}})
    with pytest.raises(AttributeError):
        score("stunreachability", None)
