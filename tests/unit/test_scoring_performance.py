"""DASH and NDT rules (docs/fastpath.md §2.7.8, §2.7.10), incl. §6.4 test_score_dash_no_keys."""

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


def dash(tk: Any) -> dict[str, Any]:
    return score_measurement({"test_name": "dash", "test_keys": tk}, None)


def test_dash_no_keys_section_6_4() -> None:
    assert dumps(score_measurement({"test_name": "dash"}, None)) == dumps(FAILED)
    assert dumps(dash(None)) == dumps(FAILED)
    assert dumps(dash({})) == dumps(FAILED)


def test_dash_success() -> None:
    assert dumps(dash({"failure": None, "simple": {}})) == dumps(ZERO)
    assert dumps(dash({"simple": {}})) == dumps(ZERO)


@pytest.mark.parametrize("failure", [
    "connection_aborted", "json_parse_error", "eof_error", "json_processing_error",
    "http_request_failed", "connect_error", "generic_timeout_error", "broken_pipe",
    "connection_refused", "ssl_error: bad cert", "x509: ssl_error"])
def test_dash_network_failures(failure: str) -> None:
    assert dumps(dash({"failure": failure})) == dumps(
        {**ZERO, "blocking_general": 0.1, "accuracy": 0.0})


def test_dash_other_failure_is_probe_error() -> None:
    assert dumps(dash({"failure": "dns_nxdomain_error"})) == dumps(
        {**ZERO, "msg": "Probe error", "accuracy": 0.0})
    assert dumps(dash({"failure": ""})) == dumps({**ZERO, "msg": "Probe error", "accuracy": 0.0})


def test_dash_malformed_raises() -> None:
    with pytest.raises(TypeError):
        dash({"failure": 5})
    with pytest.raises(AttributeError):
        dash([1])


@pytest.mark.parametrize("msm", [{"test_name": "ndt"}, {"test_name": "ndt", "test_keys": None},
                                 {"test_name": "ndt", "test_keys": {"failure": "x"}}])
def test_ndt_is_empty(msm: dict[str, Any]) -> None:
    assert score_measurement(msm, None) == {}
