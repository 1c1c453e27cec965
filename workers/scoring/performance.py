"""Performance tests: dash, ndt (docs/fastpath.md §2.7.8, §2.7.10). They measure speed, not
blocking."""

from __future__ import annotations

from typing import Any

from workers.scoring.helpers import scores_failed, scores_zero, vod

# Network-level failures that may hint at interference (weak signal: 0.1).
_DASH_NETWORK_FAILURES = (
    "connection_aborted",
    "json_parse_error",
    "eof_error",
    "json_processing_error",
    "http_request_failed",
    "connect_error",
    "generic_timeout_error",
    "broken_pipe",
    "connection_refused",
)


def score_dash(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.10: any failure makes the measurement inaccurate (stored as msm_failure, not anomaly)."""
    tk = vod(msm, "test_keys", {})
    if tk == {}:
        return scores_failed()
    scores = scores_zero()
    failure = tk.get("failure")
    if failure is None:
        return scores
    if failure in _DASH_NETWORK_FAILURES or "ssl_error" in failure:
        scores["blocking_general"] = 0.1
        scores["accuracy"] = 0.0
    else:
        scores["msg"] = "Probe error"
        scores["accuracy"] = 0.0
    return scores


def score_ndt(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.8: no blocking keys at all (empty dict), so every derived flag is false."""
    return {}
