"""Scores of every sample scored by the non-web_connectivity rules (docs/fastpath.md §6.1, §6.2,
§6.6).

Comparisons are on `json.dumps` without sorting: key order, 0 vs 0.0 and true vs 1 all matter,
because the pipeline stores the serialized dict byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import SAMPLES
from workers.scoring import score_measurement

ZERO = {"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0,
        "blocking_isp": 0.0, "blocking_local": 0.0}
FAILED = {**ZERO, "accuracy": 0.0}

EXPECTED: dict[str, dict[str, Any]] = {
    "telegram_nourl.json": FAILED,
    "http_header_field_manipulation_1.json": FAILED,
    "http_requests_1.json": FAILED,
    "whatsapp.json": {**ZERO, "analysis": {"registration_server_accessible": True,
                                           "whatsapp_web_accessible": True,
                                           "whatsapp_endpoints_accessible": True}},
    "vanilla_tor.json": {**ZERO, "blocking_general": 0.98},
    "signal_022.json": ZERO,
    "tor.json": {**ZERO, "extra": {"test_runtime": 0.767114298}},
    "riseupvpn.json": {},
    "meek.json": {**ZERO, "blocking_general": 1.0},
    "torsf_1.json": {**ZERO, "blocking_general": 1.0},
    "openvpn.json": {**ZERO, "extra": {"test_runtime": 37.975210163}},
    "browser_web.json": {**ZERO, "extra": {"browser_name": "chrome",
                                           "load_time_ms": 357.40000000037253}},
    "mbx-2.json": {**ZERO, "blocking_general": 1.0},
}


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_scores(name: str) -> None:
    msm = json.loads((SAMPLES / name).read_text())
    assert dumps(score_measurement(msm, None)) == dumps(EXPECTED[name])


def test_serialized_strings_of_section_6_6() -> None:
    """Byte-level strings observed on the reference (§6.3, §6.6)."""
    observed = {
        "vanilla_tor.json": '{"blocking_general":0.98,"blocking_global":0.0,"blocking_country":0.0,'
                            '"blocking_isp":0.0,"blocking_local":0.0}',
        "riseupvpn.json": "{}",
        "tor.json": '{"blocking_general":0.0,"blocking_global":0.0,"blocking_country":0.0,'
                    '"blocking_isp":0.0,"blocking_local":0.0,"extra":{"test_runtime":0.767114298}}',
        "whatsapp.json": '{"blocking_general":0.0,"blocking_global":0.0,"blocking_country":0.0,'
                         '"blocking_isp":0.0,"blocking_local":0.0,"analysis":'
                         '{"registration_server_accessible":true,"whatsapp_web_accessible":true,'
                         '"whatsapp_endpoints_accessible":true}}',
        "browser_web.json": '{"blocking_general":0.0,"blocking_global":0.0,"blocking_country":0.0,'
                            '"blocking_isp":0.0,"blocking_local":0.0,"extra":{"browser_name":'
                            '"chrome","load_time_ms":357.40000000037253}}',
        "openvpn.json": '{"blocking_general":0.0,"blocking_global":0.0,"blocking_country":0.0,'
                        '"blocking_isp":0.0,"blocking_local":0.0,"extra":'
                        '{"test_runtime":37.975210163}}',
    }
    for name, text in observed.items():
        msm = json.loads((SAMPLES / name).read_text())
        assert dumps(score_measurement(msm, None)) == text, name


def _yaml_measurements(name: str) -> list[dict[str, Any]]:
    """Header merged into each entry, non-schema entry keys under test_keys (a minimal §5)."""
    yaml = pytest.importorskip("yaml")
    header, *entries = yaml.safe_load_all((SAMPLES / name).read_text())
    out = []
    for entry in entries:
        if entry is None:
            continue
        tk = {k: v for k, v in entry.items() if k not in ("input", "test_runtime",
                                                           "test_start_time")}
        msm = {**header, "input": entry.get("input"), "test_keys": tk}
        out.append(msm)
    return out


def test_http_invalid_request_line_yaml() -> None:
    """§6.1: sent != received (bytes in `received` decoded ignoring errors) -> 1.0."""
    [msm] = _yaml_measurements("http_invalid_request_line.yaml")
    tk = msm["test_keys"]
    tk["received"] = [r.decode("utf-8", "ignore") if isinstance(r, bytes) else r
                      for r in tk["received"]]
    assert dumps(score_measurement(msm, None)) == dumps({**ZERO, "blocking_general": 1.0})


def test_binary_city_yaml_http_requests() -> None:
    """§6.1: matching bodies and headers, no requests, no fingerprints -> SCORES_ZERO."""
    [msm] = _yaml_measurements("binary_city.yaml")
    assert msm["test_name"] == "http_requests"
    assert dumps(score_measurement(msm, None)) == dumps(ZERO)
