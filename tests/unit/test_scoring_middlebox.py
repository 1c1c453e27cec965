"""HHFM and HIRL rules (docs/fastpath.md §2.7.3, §2.7.4): branches and malformed inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.scoring import score_measurement

ZERO = {"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0,
        "blocking_isp": 0.0, "blocking_local": 0.0}
FAILED = {**ZERO, "accuracy": 0.0}
SENT = {"Accept": "*/*", "Host": "example.com", "Connection": "close", "X-Test": "a"}


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d)


def hhfm(requests: Any, **top: Any) -> dict[str, Any]:
    msm = {"test_name": "http_header_field_manipulation", "report_id": "r", **top,
           "test_keys": {"requests": requests}}
    return score_measurement(msm, None)


def echo(headers: dict[str, Any], sent: dict[str, str] = SENT) -> list[dict[str, Any]]:
    body = json.dumps({"headers_dict": headers, "request_line": "GET / HTTP/1.1"})
    return [{"request": {"headers": sent}, "response": {"body": body, "code": 200}}]


def as_lists(headers: dict[str, str]) -> dict[str, list[str]]:
    return {k: [v] for k, v in headers.items()}


def test_hhfm_unchanged_headers() -> None:
    assert dumps(hhfm(echo(as_lists(SENT)))) == dumps(ZERO)
    # Connection: close dropped by the helper is not a change; only the first value counts
    echoed = as_lists({k: v for k, v in SENT.items() if k != "Connection"})
    echoed["X-Test"] = ["a", "b"]
    assert dumps(hhfm(echo(echoed))) == dumps(ZERO)


def test_hhfm_changed_headers() -> None:
    echoed = as_lists({**SENT, "X-Test": "A", "Via": "proxy"})
    del echoed["Accept"]
    expected = {**ZERO, "blocking_general": 1.1, "msg": "4 unexpected header change"}
    assert dumps(hhfm(echo(echoed))) == dumps(expected)
    # names are case-sensitive, and so is the ("Connection", "close") exception: 3 + 4 changes
    echoed = as_lists({k.lower(): v for k, v in SENT.items()})
    assert hhfm(echo(echoed))["msg"] == "7 unexpected header change"


def test_hhfm_empty_body() -> None:
    for resp in ({"code": 200}, {"body": None}):
        s = hhfm([{"request": {"headers": SENT}, "response": resp}])
        assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "total_tampering": True,
                                  "msg": "Empty body"})
        assert list(s)[-2:] == ["total_tampering", "msg"]


@pytest.mark.parametrize("body", ["", "not json", "[1, 2]", '{"headers": {}}',
                                  {"format": "base64", "data": "eA=="}, 5])
def test_hhfm_malformed_ctrl_headers(body: Any) -> None:
    s = hhfm([{"request": {"headers": SENT}, "response": {"body": body}}])
    assert dumps(s) == dumps({**ZERO, "blocking_general": 1.0, "msg": "Malformed ctrl_headers"})


@pytest.mark.parametrize("requests", [None, [], "", 5, [{"response": None}]])
def test_hhfm_failed(requests: Any) -> None:
    assert dumps(hhfm(requests)) == dumps(FAILED)


def test_hhfm_missing_request_key_and_response() -> None:
    body = json.dumps({"headers_dict": {}})
    assert dumps(hhfm([{"response": {"body": body}}])) == dumps(ZERO)
    s = hhfm([{"request": {"headers": SENT}}])  # response absent -> {} -> empty body
    assert s["msg"] == "Empty body"


def test_hhfm_malformed_raises() -> None:
    with pytest.raises(KeyError):
        score_measurement({"test_name": "http_header_field_manipulation",
                           "test_keys": {"requests": None}}, None)  # report_id must exist
    with pytest.raises(AttributeError):
        hhfm([None])
    with pytest.raises(AttributeError):  # headers_dict not an object
        hhfm(echo([]))  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # unhashable sent header value
        hhfm(echo(as_lists(SENT), sent={"X": ["a"]}))  # type: ignore[dict-item]


def hirl(tk: Any, **top: Any) -> dict[str, Any]:
    return score_measurement({"test_name": "http_invalid_request_line", "report_id": "r", **top,
                              "test_keys": tk}, None)


def test_hirl() -> None:
    assert dumps(hirl({"sent": ["a", "b"], "received": ["a", "b"]})) == dumps(ZERO)
    assert dumps(hirl({"sent": ["a", "b"], "received": ["a", "c"]})) == dumps(
        {**ZERO, "blocking_general": 1.0})
    # only the common prefix is compared; the tampering flag is ignored
    assert dumps(hirl({"sent": ["a", "b"], "received": ["a"], "tampering": True})) == dumps(ZERO)
    assert dumps(hirl({"sent": ["a"]})) == dumps(ZERO)
    assert dumps(hirl({})) == dumps(FAILED)
    assert dumps(hirl({"sent": [], "received": ""})) == dumps(FAILED)


def test_hirl_malformed_raises() -> None:
    with pytest.raises(TypeError):
        hirl({"sent": None, "received": None})
    with pytest.raises(AttributeError):
        hirl(None)
    with pytest.raises(KeyError):
        score_measurement({"test_name": "http_invalid_request_line", "test_keys": {}}, None)
