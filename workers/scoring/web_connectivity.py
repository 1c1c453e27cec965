"""Web Connectivity scoring (docs/fastpath.md §2.7.7), with blocking fingerprints (§3.3, §3.4).

The probe's own verdict (`test_keys.blocking`) is the primary signal; fingerprint matches add
a `fingerprints` list and, when confirmed for the probe's country or scope, set the locality
scores, which are then added into `blocking_general`. Key insertion order is part of the
contract (it is serialized byte for byte): zeros, `fingerprints`, `confirmed`, then `analysis`
and/or `accuracy` in the order the steps set them.
"""

from __future__ import annotations

import binascii
from typing import Any

from workers.fingerprints import Fingerprint, Fingerprints
from workers.scoring.helpers import detect_unknown_failure, scores_zero, vod

_PROBE_BLOCKING_TYPES = ("tcp_ip", "dns", "http-diff", "http-failure")
_EMPTY = Fingerprints.empty()


def score_web_connectivity(msm: dict[str, Any], fingerprints: Fingerprints | None) -> dict[str, Any]:
    """Scores of one web_connectivity measurement. Pure; raises on malformed input where the
    reference raises (the pipeline then drops / quarantines the measurement)."""
    fps = fingerprints if fingerprints is not None else _EMPTY
    try:
        matches = fps.match_entries(msm)
    except binascii.Error:
        # Undecodable base64 body or header: score without fingerprints, then flag.
        scores = _score(msm, [])
        scores["accuracy"] = 0.0
        return scores
    return _score(msm, matches)


def _score(msm: dict[str, Any], matches: list[Fingerprint]) -> dict[str, Any]:
    scores = scores_zero()
    tk = vod(msm, "test_keys", {})
    if matches:
        scores["fingerprints"] = [fp.minified_copy() for fp in matches]  # duplicates kept
    probe_cc = vod(msm, "probe_cc", "ZZ").upper()
    for fp in matches:
        if fp.confirmed(probe_cc):
            scores["blocking_" + fp.locality] = 1.0
            scores["confirmed"] = True

    if "title_match" in tk and tk["title_match"] not in (True, False, None):
        scores["accuracy"] = 0.0
        return scores

    blocking = tk.get("blocking")
    if blocking in _PROBE_BLOCKING_TYPES:
        scores["blocking_general"] = 1.0
        scores["analysis"] = {"blocking_type": blocking}
    elif blocking == False:  # noqa: E712 - reference quirk §8.7: the number 0 counts as false
        pass
    elif blocking is None:
        if not matches:
            scores["accuracy"] = 0.0
    else:
        scores["analysis"] = {"msg": "Unsupported blocking type"}
        scores["accuracy"] = 0.0

    if detect_unknown_failure(tk):
        scores["accuracy"] = 0.0

    scores["blocking_general"] += (scores["blocking_country"] + scores["blocking_global"]
                                   + scores["blocking_isp"] + scores["blocking_local"])

    if "accessible" in tk and tk["accessible"] is None and not matches:
        scores["accuracy"] = 0.0
    return scores
