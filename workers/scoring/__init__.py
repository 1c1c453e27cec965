"""Pure scoring per test family: measurement dict -> scores dict (docs/fastpath.md §2.6, §2.7).

`score_measurement` dispatches on the exact `test_name`. The returned dict's key order and
float/int types are part of the contract: the pipeline serializes it as the `scores` column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workers.scoring.circumvention import (
    score_meek_fronted_requests_test,
    score_openvpn,
    score_psiphon,
    score_riseupvpn,
    score_stunreachability,
    score_tor,
    score_torsf,
    score_vanilla_tor,
)
from workers.scoring.helpers import SCORES_FAILED, SCORES_ZERO, scores_failed
from workers.scoring.im import (
    score_facebook_messenger,
    score_signal,
    score_telegram,
    score_whatsapp,
)
from workers.scoring.legacy import score_dns_consistency, score_http_requests, score_tcp_connect
from workers.scoring.middlebox import (
    score_http_header_field_manipulation,
    score_http_invalid_request_line,
)
from workers.scoring.misc import score_browser_web, score_unsupported
from workers.scoring.performance import score_dash, score_ndt

if TYPE_CHECKING:
    from workers.fingerprints import Fingerprints

__all__ = ["SCORES_FAILED", "SCORES_ZERO", "SCORERS", "score_measurement"]

Scorer = Callable[[dict[str, Any]], dict[str, Any]]

# Rules that need no fingerprints. web_connectivity and http_requests are dispatched below.
SCORERS: dict[str, Scorer] = {
    "telegram": score_telegram,
    "facebook_messenger": score_facebook_messenger,
    "http_header_field_manipulation": score_http_header_field_manipulation,
    "http_invalid_request_line": score_http_invalid_request_line,
    "whatsapp": score_whatsapp,
    "vanilla_tor": score_vanilla_tor,
    "ndt": score_ndt,
    "tcp_connect": score_tcp_connect,
    "dash": score_dash,
    "meek_fronted_requests_test": score_meek_fronted_requests_test,
    "psiphon": score_psiphon,
    "tor": score_tor,
    "dns_consistency": score_dns_consistency,
    "signal": score_signal,
    "stunreachability": score_stunreachability,
    "torsf": score_torsf,
    "riseupvpn": score_riseupvpn,
    "openvpn": score_openvpn,
    "browser_web": score_browser_web,
}


def score_measurement(msm: dict[str, Any], fingerprints: Fingerprints | None) -> dict[str, Any]:
    """Score one (unwrapped) measurement; `fingerprints` is the loaded fingerprint index.

    A missing `test_name` raises (KeyError); unsupported tests get `SCORES_FAILED`. An assertion
    whose message starts with `pbug ` (suspected probe bug) also gives `SCORES_FAILED`; every
    other exception propagates so that the pipeline drops (quarantines) the measurement.
    """
    test_name = msm["test_name"]
    try:
        if test_name == "web_connectivity":
            # Imported lazily: owned by another module, heavier, and needs the fingerprints.
            from workers.scoring.web_connectivity import score_web_connectivity

            return score_web_connectivity(msm, fingerprints)
        if test_name == "http_requests":
            return score_http_requests(msm, fingerprints)
        # A non-string test_name (list, object) is simply unsupported, as with `==` dispatch.
        scorer = SCORERS.get(test_name) if isinstance(test_name, str) else None
        return (scorer or score_unsupported)(msm)
    except AssertionError as exc:
        if str(exc).startswith("pbug "):
            return scores_failed()
        raise
