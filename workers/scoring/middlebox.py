"""Middlebox tests: http_header_field_manipulation, http_invalid_request_line
(docs/fastpath.md §2.7.3-4)."""

from __future__ import annotations

from typing import Any

import ujson

from workers.scoring.helpers import scores_failed, scores_zero

# The helper does not always handle this header the way the probe sent it: never a change.
_CONNECTION_CLOSE = ("Connection", "close")


def score_http_header_field_manipulation(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.3: compare the headers the probe sent with those the helper echoed back.

    The request-level `failure` is deliberately not used.
    """
    tk = msm["test_keys"]
    msm["report_id"]  # must exist (KeyError otherwise), like the reference
    try:
        resp = tk["requests"][0].get("response", {})
    except (KeyError, IndexError, TypeError):
        return scores_failed()  # no usable requests: probe failure
    if resp is None:
        return scores_failed()

    scores = scores_zero()
    body = resp.get("body")
    if body is None:
        scores["total_tampering"] = True
        scores["blocking_general"] = 1.0
        scores["msg"] = "Empty body"
        return scores

    try:
        ctrl_headers = ujson.loads(body)["headers_dict"]
    except Exception:  # any parse or shape failure means the body was tampered with
        scores["blocking_general"] = 1.0
        scores["msg"] = "Malformed ctrl_headers"
        return scores

    ctrl = {(name, values[0]) for name, values in ctrl_headers.items()}
    sent_headers = tk["requests"][0].get("request", {}).get("headers", {})
    expected = set(sent_headers.items())
    ctrl.discard(_CONNECTION_CLOSE)
    expected.discard(_CONNECTION_CLOSE)
    if expected == ctrl:
        return scores

    scores["blocking_general"] = 1.1
    scores["msg"] = f"{len(expected ^ ctrl)} unexpected header change"
    return scores


def score_http_invalid_request_line(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.4: any difference between what was sent and what the echo helper received.

    The probe's own `tampering` flag is ignored (it is unreliable).
    """
    tk = msm["test_keys"]
    msm["report_id"]  # must exist
    sent = tk.get("sent", [])
    received = tk.get("received", [])
    if not len(sent) and not len(received):
        return scores_failed()
    scores = scores_zero()
    if any(s != r for s, r in zip(sent, received, strict=False)):
        scores["blocking_general"] = 1.0
    return scores
