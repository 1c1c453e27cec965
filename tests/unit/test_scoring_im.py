"""Instant-messaging rules (docs/fastpath.md §2.7.1, 2.7.2, 2.7.5, 2.7.16): branches and
malformed inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import SAMPLES
from workers.scoring import score_measurement

ZERO = {"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0,
        "blocking_isp": 0.0, "blocking_local": 0.0}
FAILED = {**ZERO, "accuracy": 0.0}


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d)


def score(test_name: str, tk: Any, **top: Any) -> dict[str, Any]:
    return score_measurement({"test_name": test_name, "report_id": "r", **top, "test_keys": tk},
                             None)


def tcp(*successes: Any) -> list[dict[str, Any]]:
    return [{"status": {"success": s, "failure": None}} for s in successes]


def req(url: str, failure: Any = None) -> dict[str, Any]:
    return {"request": {"url": url}, "failure": failure}


# --- telegram ---------------------------------------------------------------------------------

def test_telegram_ratios_web_failure_and_order() -> None:
    tk = {"telegram_web_status": "blocked", "tcp_connect": tcp(True, False, False, None),
          "telegram_tcp_blocking": False,  # ignored
          "requests": [req("http://149.154.167.99/", None), req("http://149.154.167.91/", "eof"),
                       req("https://web.telegram.org/", "connection_reset"),
                       req("http://web.telegram.org/", "generic_timeout_error"),
                       req("https://web.telegram.org/", None)]}
    expected = {**ZERO, "blocking_general": 2 / 3 + 0.5 + 1, "web_failure": "generic_timeout_error",
                "accessible_endpoints": 1, "unreachable_endpoints": 2, "http_success_cnt": 1,
                "http_failure_cnt": 1, "msg": "failure: generic_timeout_error"}
    assert dumps(score("telegram", tk)) == dumps(expected)


def test_telegram_nothing_counted_is_one_and_float() -> None:
    s = score("telegram", {"telegram_web_status": "ok"})
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "web_failure": None,
                              "accessible_endpoints": 0, "unreachable_endpoints": 0,
                              "http_success_cnt": 0, "http_failure_cnt": 0})


def test_telegram_all_ok_is_zero_float() -> None:
    s = score("telegram", {"tcp_connect": tcp(True), "requests": [req("http://x/")],
                           "telegram_web_status": None})
    assert s["blocking_general"] == 0.0 and isinstance(s["blocking_general"], float)
    assert "msg" not in s


@pytest.mark.parametrize("request_", [{"failure": None}, {"request": {}, "failure": None}])
def test_telegram_request_without_url_fails(request_: dict[str, Any]) -> None:
    assert dumps(score("telegram", {"requests": [req("http://x/"), request_]})) == dumps(FAILED)


def test_telegram_nourl_sample_reason() -> None:
    msm = json.loads((SAMPLES / "telegram_nourl.json").read_text())
    assert any("url" not in r.get("request", {}) for r in msm["test_keys"]["requests"])
    assert dumps(score_measurement(msm, None)) == dumps(FAILED)


@pytest.mark.parametrize("tk", [None, {"requests": [None]}, {"requests": [{"request": {"url": "u"}}]},
                                {"tcp_connect": [{"ip": "1.1.1.1"}]}, {"requests": "abc"}])
def test_telegram_malformed_raises(tk: Any) -> None:
    with pytest.raises((AttributeError, KeyError, TypeError)):
        score("telegram", tk)


# --- facebook_messenger -----------------------------------------------------------------------

FB_TRUE = ("facebook_b_api_dns_consistent", "facebook_b_api_reachable",
           "facebook_b_graph_dns_consistent", "facebook_b_graph_reachable",
           "facebook_dns_blocking", "facebook_edge_dns_consistent", "facebook_edge_reachable",
           "facebook_star_dns_consistent", "facebook_star_reachable",
           "facebook_stun_dns_consistent")


def test_facebook_false_positive_workaround() -> None:
    tk = dict.fromkeys(FB_TRUE, True) | {"facebook_tcp_blocking": False,
                                         "facebook_external_cdn_reachable": False}
    assert dumps(score("facebook_messenger", tk)) == dumps(ZERO)


def test_facebook_sums_and_extra_keys_in_order() -> None:
    tk = {"facebook_tcp_blocking": True, "facebook_stun_dns_consistent": False,
          "facebook_b_api_reachable": False, "facebook_dns_blocking": 1,  # not exactly true
          "facebook_edge_reachable": 0, "facebook_star_reachable": None}
    expected = {**ZERO, "blocking_general": 1.5, "facebook_b_api_reachable": False,
                "facebook_stun_dns_consistent": False, "facebook_tcp_blocking": True}
    assert dumps(score("facebook_messenger", tk)) == dumps(expected)


def test_facebook_all_consistent_but_tcp_blocking() -> None:
    tk = dict.fromkeys(FB_TRUE, True) | {"facebook_tcp_blocking": True}
    expected = {**ZERO, "blocking_general": 1.0, "facebook_tcp_blocking": True,
                "facebook_dns_blocking": True}
    assert dumps(score("facebook_messenger", tk)) == dumps(expected)


def test_facebook_empty_and_malformed() -> None:
    assert dumps(score("facebook_messenger", {})) == dumps(ZERO)
    with pytest.raises(AttributeError):
        score("facebook_messenger", None)
    with pytest.raises(KeyError):
        score_measurement({"test_name": "facebook_messenger"}, None)


# --- whatsapp ---------------------------------------------------------------------------------

WA_WEB = "https://web.whatsapp.com/"
WA_REG = "https://v.whatsapp.net/v2/register"
WA_ANALYSIS_OK = {"registration_server_accessible": True, "whatsapp_web_accessible": True,
                  "whatsapp_endpoints_accessible": True}


def wa(requests: Any = None, tcp_connect: Any = None, **extra: Any) -> dict[str, Any]:
    tk: dict[str, Any] = {"requests": requests if requests is not None else
                          [req(WA_WEB), req(WA_REG)], **extra}
    tk["tcp_connect"] = tcp(True, False) if tcp_connect is None else tcp_connect
    return tk


def test_whatsapp_ok() -> None:
    assert dumps(score("whatsapp", wa())) == dumps({**ZERO, "analysis": WA_ANALYSIS_OK})


def test_whatsapp_unknown_failure_continues() -> None:
    s = score("whatsapp", wa(registration_server_failure="unknown_failure: boom"))
    assert dumps(s) == dumps({**ZERO, "accuracy": 0.0, "analysis": WA_ANALYSIS_OK})


def test_whatsapp_ascii_bug_returns_early() -> None:
    s = score("whatsapp", wa(whatsapp_web_failure="unknown_failure 'ascii' codec can't decode"))
    assert dumps(s) == dumps(FAILED)


def test_whatsapp_no_requests() -> None:
    assert dumps(score("whatsapp", {"requests": None})) == dumps(FAILED)
    with pytest.raises(AssertionError):
        score("whatsapp", {"requests": []}, report_id="")


@pytest.mark.parametrize("failure_key", [{}, {"failure": "connection_reset"}, {"failure": "x"}])
def test_whatsapp_webapp_failure_blocks(failure_key: dict[str, Any]) -> None:
    web = {"request": {"url": WA_WEB}, **failure_key}  # absent failure key counts as a failure
    s = score("whatsapp", wa([web, req(WA_REG)]))
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0})


@pytest.mark.parametrize("ok_failure", [None, "", False, 0])
def test_whatsapp_webapp_falsy_failure_is_success(ok_failure: Any) -> None:
    s = score("whatsapp", wa([req(WA_WEB, ok_failure), req(WA_REG)]))
    assert s["blocking_general"] == 0.0 and s["analysis"]["whatsapp_web_accessible"] is True


def test_whatsapp_registration_failure_last_wins() -> None:
    s = score("whatsapp", wa([req(WA_REG), req(WA_WEB), req(WA_REG, "")]))
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0})
    s = score("whatsapp", wa([req(WA_REG, "x"), req(WA_WEB), {"request": {"url": WA_REG}}]))
    assert s["analysis"]["registration_server_accessible"] is True


def test_whatsapp_missing_endpoint_request() -> None:
    assert dumps(score("whatsapp", wa([req(WA_WEB)]))) == dumps(FAILED)
    assert dumps(score("whatsapp", wa([{"request": {}}, req(WA_REG)]))) == dumps(FAILED)


def test_whatsapp_tcp_endpoints() -> None:
    s = score("whatsapp", wa(tcp_connect=[]))
    assert dumps(s) == dumps({**ZERO, "accuracy": 0.0, "analysis": {
        **WA_ANALYSIS_OK, "whatsapp_endpoints_accessible": False}})
    s = score("whatsapp", wa(tcp_connect=tcp(False, False)))
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "analysis": {
        **WA_ANALYSIS_OK, "whatsapp_endpoints_accessible": False}})


@pytest.mark.parametrize("tk", [None, {"requests": [None]}, {"requests": [{"request": None}]},
                                {"x_failure": 5}])
def test_whatsapp_malformed_raises(tk: Any) -> None:
    with pytest.raises((AttributeError, TypeError)):
        score("whatsapp", tk)


# --- signal -----------------------------------------------------------------------------------

def sig(status: Any = "ok", tv: Any = "0.2.2", start: Any = "2022-11-18 10:44:20",
        ev: Any = "3.16.5", **tk: Any) -> dict[str, Any]:
    keys = {"failed_operation": None, "failure": None, "signal_backend_status": status, **tk}
    top: dict[str, Any] = {"test_version": tv, "annotations": {"engine_version": ev}}
    if start is not None:
        top["measurement_start_time"] = start
    return score("signal", keys, **top)


def test_signal_ok_and_blocked() -> None:
    assert dumps(sig()) == dumps(ZERO)
    assert dumps(sig("blocked", signal_backend_failure="eof")) == dumps(
        {**ZERO, "blocking_general": 1.0, "analysis": {"signal_backend_failure": "eof"}})
    assert dumps(sig("blocked")) == dumps(
        {**ZERO, "blocking_general": 1.0, "analysis": {"signal_backend_failure": None}})
    assert dumps(sig("weird")) == dumps(FAILED)
    assert dumps(sig(None)) == dumps(FAILED)


def test_signal_failure_flags_continue() -> None:
    assert dumps(sig("blocked", failure="x")) == dumps(
        {**ZERO, "blocking_general": 1.0, "accuracy": 0.0,
         "analysis": {"signal_backend_failure": None}})
    # absent failure keys count as failures
    s = score("signal", {"signal_backend_status": "ok"}, test_version="0.2.2",
              measurement_start_time="2022-11-18 10:44:20")
    assert dumps(s) == dumps(FAILED)


@pytest.mark.parametrize("kwargs", [
    {"start": None},
    {"start": "2022/11/18"},
    {"tv": "0.2.4"},
    {"tv": "0.2.3", "start": "2023-11-07 00:00:00", "ev": "3.20.0"},
    {"tv": "0.2.1", "start": "2022-10-19 00:00:00"},
    {"ev": "3.17.0-alpha", "start": "2023-05-02 00:00:00", "tv": "0.2.3"},
    {"tv": "not a version"},
    {"tv": 2},
])
def test_signal_known_bad_probes(kwargs: dict[str, Any]) -> None:
    assert dumps(sig("blocked", **kwargs)) == dumps(FAILED)


@pytest.mark.parametrize("kwargs", [
    {"tv": "0.2.3", "start": "2023-11-06 23:59:59", "ev": "3.20.0"},
    {"tv": "0.2.5", "start": "2024-01-01 00:00:00", "ev": "3.17.2"},
    {"tv": "0.2.1", "start": "2022-10-18 23:59:59"},
    {"ev": "3.17.0", "start": "2023-05-01 23:59:59", "tv": "0.2.3"},
])
def test_signal_good_probes(kwargs: dict[str, Any]) -> None:
    assert dumps(sig("blocked", **kwargs)) == dumps(
        {**ZERO, "blocking_general": 1.0, "analysis": {"signal_backend_failure": None}})


def test_signal_defaults_and_malformed() -> None:
    # no test_version -> "0.0.0" < 0.2.2 and start after 2022-10-19 -> inaccurate
    s = score("signal", {"failed_operation": None, "failure": None,
                         "signal_backend_status": "ok"},
              measurement_start_time="2022-11-18 10:44:20")
    assert dumps(s) == dumps(FAILED)
    with pytest.raises(AttributeError):
        score("signal", None)
