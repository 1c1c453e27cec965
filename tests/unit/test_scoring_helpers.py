"""Helper semantics (docs/fastpath.md §2.8) and the nested getters of §6.4 (test_g, test_gn,
test_g_or)."""

from __future__ import annotations

import json

import pytest

from workers.scoring.helpers import (
    SCORES_FAILED,
    SCORES_ZERO,
    count_tcp_connect,
    detect_unknown_failure,
    nested_vod,
    scores_failed,
    scores_zero,
    vod,
)


def test_builders_order_types_and_freshness() -> None:
    assert json.dumps(scores_zero()) == (
        '{"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0, '
        '"blocking_isp": 0.0, "blocking_local": 0.0}')
    assert list(scores_failed()) == [*SCORES_ZERO, "accuracy"]
    assert scores_failed() == dict(SCORES_FAILED)
    a = scores_zero()
    a["blocking_general"] = 9.0
    assert scores_zero()["blocking_general"] == 0.0 and SCORES_ZERO["blocking_general"] == 0.0
    with pytest.raises(TypeError):
        SCORES_ZERO["x"] = 1.0  # type: ignore[index]


def test_g_default_v() -> None:
    assert nested_vod({}, "x", default="v") == "v"
    assert nested_vod({"x": {}}, "x", "y", default="v") == "v"
    assert nested_vod({"x": {"y": None}}, "x", "y", default="v") == "v"
    assert nested_vod({"x": {"y": "22"}}, "x", "y", default="v") == "22"


def test_gn_default_null() -> None:
    assert nested_vod({}, "x") is None
    assert nested_vod({}, "x", "y") is None
    assert nested_vod({"x": None}, "x", "y") is None
    assert nested_vod({"x": {}}, "x", "y") is None
    assert nested_vod({"x": {"y": None}}, "x", "y") is None
    assert nested_vod({"x": {"y": "v"}}, "x", "y") == "v"
    assert nested_vod({"x": "v"}, "x") == "v"
    assert nested_vod({"x": 0}, "x") == 0
    with pytest.raises(AttributeError):
        nested_vod({"x": []}, "x", "y")
    with pytest.raises(AttributeError):
        nested_vod({"x": "s"}, "x", "y")


def test_g_or() -> None:
    assert vod({}, "x", "y") == "y"
    assert vod({"x": None}, "x", "y") == "y"
    assert vod({"x": 0}, "x", "y") == 0
    assert vod({"x": ""}, "x", "y") == ""
    assert vod({"x": False}, "x", "y") is False


def test_detect_unknown_failure() -> None:
    assert not detect_unknown_failure({})
    assert not detect_unknown_failure({"x_failure": None, "failure": "unknown_failure x"})
    assert detect_unknown_failure({"a_failure": None, "http_experiment_failure": "unknown_failure: x"})
    assert not detect_unknown_failure({"dns_failure": "generic_timeout_error"})
    # falsy non-strings read as "" (reference `value or ""`); truthy non-strings raise
    assert not detect_unknown_failure({"x_failure": False, "y_failure": 0, "z_failure": []})
    with pytest.raises((TypeError, AttributeError)):
        detect_unknown_failure({"x_failure": True})


def test_count_tcp_connect() -> None:
    tk = {"tcp_connect": [
        {"status": {"success": True}}, {"status": {"success": False}},
        {"status": {"success": None}}, {"status": {"success": 1}}, {"status": {"success": True}},
    ]}
    assert count_tcp_connect(tk) == (2, 1)
    assert count_tcp_connect({}) == (0, 0)
    assert count_tcp_connect({"tcp_connect": None}) == (0, 0)
    with pytest.raises(KeyError):
        count_tcp_connect({"tcp_connect": [{"ip": "1.2.3.4"}]})
    with pytest.raises(TypeError):
        count_tcp_connect({"tcp_connect": [None]})

