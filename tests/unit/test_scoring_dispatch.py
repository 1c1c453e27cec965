"""score_measurement dispatch (docs/fastpath.md §2.6) and the browser_web rule (§2.7.21)."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest

import workers.scoring as scoring
from workers.scoring import SCORERS, score_measurement

ZERO = {"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0,
        "blocking_isp": 0.0, "blocking_local": 0.0}
FAILED = {**ZERO, "accuracy": 0.0}


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d)


def test_every_rule_of_section_2_6_is_dispatched() -> None:
    assert set(SCORERS) | {"web_connectivity", "http_requests"} == {
        "telegram", "facebook_messenger", "http_header_field_manipulation",
        "http_invalid_request_line", "whatsapp", "vanilla_tor", "web_connectivity", "ndt",
        "tcp_connect", "dash", "meek_fronted_requests_test", "psiphon", "tor", "http_requests",
        "dns_consistency", "signal", "stunreachability", "torsf", "riseupvpn", "openvpn",
        "browser_web"}


@pytest.mark.parametrize("test_name", ["dnscheck", "urlgetter", "echcheck", "dns_n_http",
                                       "http_host", "", "Telegram", "telegram ", None, 5,
                                       ["telegram"], {"a": 1}])
def test_unsupported_tests_are_failed(test_name: Any) -> None:
    s = score_measurement({"test_name": test_name, "test_keys": None}, None)
    assert dumps(s) == dumps(FAILED)


def test_missing_test_name_raises() -> None:
    with pytest.raises(KeyError):
        score_measurement({"test_keys": {}}, None)
    with pytest.raises(TypeError):
        score_measurement(None, None)  # type: ignore[arg-type]


def test_fresh_dicts_every_call() -> None:
    a = score_measurement({"test_name": "dnscheck"}, None)
    a["blocking_general"] = 5.0
    assert score_measurement({"test_name": "dnscheck"}, None)["blocking_general"] == 0.0
    assert scoring.SCORES_FAILED["blocking_general"] == 0.0


def test_pbug_assertions_become_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(msm: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("pbug probe sent nonsense")

    def broken(msm: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("something else")

    monkeypatch.setitem(SCORERS, "telegram", buggy)
    assert dumps(score_measurement({"test_name": "telegram"}, None)) == dumps(FAILED)
    monkeypatch.setitem(SCORERS, "telegram", broken)
    with pytest.raises(AssertionError, match="something else"):
        score_measurement({"test_name": "telegram"}, None)


def test_web_connectivity_is_delegated_with_fingerprints(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []

    def fake(msm: dict[str, Any], fingerprints: Any) -> dict[str, Any]:
        calls.append((msm, fingerprints))
        if msm.get("bug"):
            raise AssertionError("pbug from web_connectivity")
        return {"x": 1}

    module = types.ModuleType("workers.scoring.web_connectivity")
    module.score_web_connectivity = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.scoring.web_connectivity", module)
    fps = object()
    msm = {"test_name": "web_connectivity"}
    assert score_measurement(msm, fps) == {"x": 1}
    assert calls == [(msm, fps)]
    assert dumps(score_measurement({"test_name": "web_connectivity", "bug": 1}, fps)) == dumps(
        FAILED)


def test_http_requests_receives_fingerprints() -> None:
    class Matcher:
        def __init__(self) -> None:
            self.responses: list[Any] = []

        def match_http_response(self, response: Any) -> list[dict[str, Any]]:
            self.responses.append(response)
            return [{"name": "n", "scope": "inst", "expected_countries": ["IT"]}]

    m = Matcher()
    msm = {"test_name": "http_requests", "probe_cc": "it", "test_keys": {
        "body_length_match": True, "headers_match": True,
        "requests": [{"response": {"body": "b"}}, {"response": None}]}}
    s = score_measurement(msm, m)
    assert m.responses == [{"body": "b"}, {}]
    assert dumps(s) == dumps({**ZERO, "blocking_local": 1.0, "fingerprints": [
        {"name": "n", "scope": "inst", "expected_countries": ["IT"]}] * 2, "confirmed": True})


# --- browser_web ------------------------------------------------------------------------------

@pytest.mark.parametrize(("result", "expected"), [
    ("ok", ZERO), ("error", {**ZERO, "blocking_general": 1.0}), ("timeout", FAILED),
    (None, FAILED), ("", FAILED)])
def test_browser_web(result: Any, expected: dict[str, Any]) -> None:
    tk = {"result": result, "load_time_ms": 12.5, "browser_name": "firefox"}
    s = score_measurement({"test_name": "browser_web", "test_keys": tk}, None)
    assert dumps(s) == dumps({**expected, "extra": {"browser_name": "firefox",
                                                    "load_time_ms": 12.5}})


def test_browser_web_defaults_and_malformed() -> None:
    s = score_measurement({"test_name": "browser_web", "test_keys": {
        "result": "ok", "browser_name": None, "load_time_ms": None}}, None)
    assert dumps(s) == dumps({**ZERO, "extra": {"browser_name": "", "load_time_ms": 0}})
    assert type(s["extra"]["load_time_ms"]) is int
    with pytest.raises(AttributeError):
        score_measurement({"test_name": "browser_web", "test_keys": None}, None)
    with pytest.raises(KeyError):
        score_measurement({"test_name": "browser_web"}, None)
