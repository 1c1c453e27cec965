"""Legacy ooniprobe tests: http_requests, dns_consistency, tcp_connect
(docs/fastpath.md §2.7.9, 14, 15)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from workers.fingerprints import is_confirmed, locality
from workers.scoring.helpers import nested_vod, scores_failed, scores_zero, vod


class HttpFingerprintMatcher(Protocol):
    """What http_requests needs from the fingerprint index (§3.3 steps 2a and 2b only)."""

    def match_http_response(self, response: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Minified (fresh) body matches then header matches of one response, duplicates kept."""
        ...


def score_http_requests(msm: dict[str, Any],
                        fingerprints: HttpFingerprintMatcher | None) -> dict[str, Any]:
    """§2.7.14: body length and headers agreement with the control, plus fingerprints.

    Quirk (§8.3): control/experiment failures are read at the top level of the measurement,
    and confirmed fingerprints set the locality keys without raising `blocking_general`.
    """
    tk = msm["test_keys"]
    body_length_match = tk.get("body_length_match")
    headers_match = tk.get("headers_match")
    if (msm.get("control_failure") or msm.get("experiment_failure")
            or body_length_match is None or headers_match is None):
        return scores_failed()

    scores = scores_zero()
    if not (body_length_match and headers_match):
        scores["blocking_general"] = 1.0

    matches: list[dict[str, Any]] = []
    if fingerprints is not None:
        for request in vod(tk, "requests", []):
            if nested_vod(request, "request", "tor", "is_tor"):
                continue  # fetched over Tor: not the probe's network
            matches.extend(fingerprints.match_http_response(vod(request, "response", {})))
    if matches:
        scores["fingerprints"] = matches
        probe_cc = vod(msm, "probe_cc", "ZZ").upper()
        for fp in matches:
            if is_confirmed(probe_cc, fp):
                scores["blocking_" + locality(fp["scope"])] = 1.0
                scores["confirmed"] = True
    return scores


def score_dns_consistency(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.15: never implemented by the reference: always `SCORES_ZERO`."""
    return scores_zero()


_TCP_NETWORK_ERRORS = (
    "generic_timeout_error",
    "connection_refused_error",
    "connect_error",
    "tcp_timed_out_error",
)


def score_tcp_connect(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.9: connection result to a Tor bridge/endpoint; network errors score 0.8."""
    tk = msm["test_keys"]
    if not msm["input"]:
        raise AssertionError("tcp_connect without input")  # reference: dropped
    scores = scores_zero()
    connection = tk.get("connection")
    if connection == "success":
        return scores
    scores["blocking_general"] = 0.8 if connection in _TCP_NETWORK_ERRORS else 1.0
    return scores
