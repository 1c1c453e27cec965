"""Browser-based test and the fallback for unsupported tests (docs/fastpath.md §2.6, §2.7.21)."""

from __future__ import annotations

from typing import Any

from workers.scoring.helpers import scores_failed, scores_zero, vod


def score_browser_web(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.21: the page load result reported by the browser."""
    tk = msm["test_keys"]
    scores = scores_zero()
    result = vod(tk, "result", "")
    if result == "ok":
        pass
    elif result == "error":
        scores["blocking_general"] = 1.0
    else:
        scores["accuracy"] = 0.0
    scores["extra"] = {"browser_name": vod(tk, "browser_name", ""),
                       "load_time_ms": vod(tk, "load_time_ms", 0)}
    return scores


def score_unsupported(msm: dict[str, Any]) -> dict[str, Any]:
    """Any test without a rule (dnscheck, urlgetter, ...): stored as a failed measurement."""
    return scores_failed()
