"""Instant-messaging tests: telegram, facebook_messenger, whatsapp, signal
(docs/fastpath.md §2.7)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from packaging.version import Version

from workers.scoring.helpers import (
    count_tcp_connect,
    detect_unknown_failure,
    scores_failed,
    scores_zero,
    vod,
)

_TELEGRAM_WEB_URLS = ("https://web.telegram.org/", "http://web.telegram.org/")


def score_telegram(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.1: TCP and HTTP failure ratios plus the web status; probe verdicts are ignored."""
    tk = msm["test_keys"]
    web_status = tk.get("telegram_web_status")
    web_blocking = web_status == "blocked"  # "ok" and unknown both add nothing
    accessible, unreachable = count_tcp_connect(tk)

    web_failure = None
    http_success = http_failure = 0
    for request in vod(tk, "requests", []):
        try:
            url = request["request"]["url"]
        except KeyError:
            return scores_failed()  # probe bug: request without url (telegram_nourl sample)
        if url in _TELEGRAM_WEB_URLS:
            if request["failure"] is not None:
                web_failure = request["failure"]  # the last failing web request wins
            continue
        if request["failure"] is None:
            http_success += 1
        else:
            http_failure += 1

    tcp_total = accessible + unreachable
    score = unreachable / tcp_total if tcp_total > 0 else 0.5
    http_total = http_failure + http_success
    score += http_failure / http_total if http_total > 0 else 0.5
    if web_blocking:
        score += 1

    scores = scores_zero()
    scores["blocking_general"] = score
    scores["web_failure"] = web_failure
    scores["accessible_endpoints"] = accessible
    scores["unreachable_endpoints"] = unreachable
    scores["http_success_cnt"] = http_success
    scores["http_failure_cnt"] = http_failure
    if web_failure is not None:
        scores["msg"] = f"failure: {web_failure}"
    return scores


_FB_CONSISTENCY_KEYS = (
    "facebook_b_api_dns_consistent",
    "facebook_b_api_reachable",
    "facebook_b_graph_dns_consistent",
    "facebook_b_graph_reachable",
    "facebook_edge_dns_consistent",
    "facebook_edge_reachable",
    "facebook_external_cdn_dns_consistent",
    "facebook_external_cdn_reachable",
    "facebook_scontent_cdn_dns_consistent",
    "facebook_scontent_cdn_reachable",
    "facebook_star_dns_consistent",
    "facebook_star_reachable",
    "facebook_stun_dns_consistent",
)
_FB_ANOMALY_KEYS = ("facebook_tcp_blocking", "facebook_dns_blocking")
# All true (including the probe's own facebook_dns_blocking!) plus tcp_blocking false is a known
# probe false positive: everything reachable and consistent.
_FB_WORKAROUND_TRUE_KEYS = (
    "facebook_b_api_dns_consistent",
    "facebook_b_api_reachable",
    "facebook_b_graph_dns_consistent",
    "facebook_b_graph_reachable",
    "facebook_dns_blocking",
    "facebook_edge_dns_consistent",
    "facebook_edge_reachable",
    "facebook_star_dns_consistent",
    "facebook_star_reachable",
    "facebook_stun_dns_consistent",
)


def score_facebook_messenger(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.2: +0.5 per inconsistent/unreachable endpoint and per probe anomaly flag."""
    tk = msm["test_keys"]
    scores = scores_zero()
    if (all(tk.get(k) is True for k in _FB_WORKAROUND_TRUE_KEYS)
            and tk.get("facebook_tcp_blocking") is False):
        return scores
    score = 0.0
    for key in _FB_CONSISTENCY_KEYS:
        if tk.get(key) is False:
            score += 0.5
            scores[key] = False
    for key in _FB_ANOMALY_KEYS:
        if tk.get(key) is True:
            score += 0.5
            scores[key] = True
    scores["blocking_general"] = score
    return scores


_WA_WEB_URL = "https://web.whatsapp.com/"
_WA_REGISTRATION_URL = "https://v.whatsapp.net/v2/register"


def score_whatsapp(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.5: web app and registration server must both succeed, then TCP endpoints decide."""
    tk = msm["test_keys"]
    scores = scores_zero()
    if detect_unknown_failure(tk):
        scores["accuracy"] = 0.0  # and keep scoring

    web_failure = tk.get("whatsapp_web_failure", "")
    if web_failure and "unknown_failure 'ascii' co" in web_failure:
        scores["accuracy"] = 0.0  # known probe crash while decoding
        return scores

    requests = tk.get("requests") or ()
    if not requests:
        if not msm["report_id"]:
            raise AssertionError("whatsapp without requests nor report_id")
        scores["accuracy"] = 0.0
        return scores

    webapp_ok = registration_ok = None
    for request in requests:  # the last request for each URL wins
        url = request.get("request", {}).get("url", "")
        if url == _WA_WEB_URL:
            # Quirk: a missing failure key counts as a failure; "" and false count as success.
            webapp_ok = request.get("failure", True) in (None, "", False)
        elif url == _WA_REGISTRATION_URL:
            registration_ok = request.get("failure") is None

    if webapp_ok is None or registration_ok is None:
        scores["accuracy"] = 0.0
        return scores
    if webapp_ok is not True or registration_ok is not True:
        scores["blocking_general"] = 1.0
        return scores

    accessible, unreachable = count_tcp_connect(tk)
    if not accessible and not unreachable:
        scores["accuracy"] = 0.0
    elif accessible == 0:
        scores["blocking_general"] = 1.0
    scores["analysis"] = {
        "registration_server_accessible": registration_ok,
        "whatsapp_web_accessible": webapp_ok,
        "whatsapp_endpoints_accessible": accessible > 0,
    }
    return scores


def _signal_known_bad_probe(msm: dict[str, Any]) -> bool:
    """True for probe versions known to report wrong Signal results at that date.

    Any exception (unparsable time or version, wrong types) also counts as bad, as in the
    reference where the whole block sits in a catch-all.
    """
    try:
        test_version = vod(msm, "test_version", "0.0.0")
        start = msm.get("measurement_start_time")
        if start is None:
            return True
        start_time = datetime.strptime(start, "%Y-%m-%d %H:%M:%S")
        if test_version == "0.2.4":
            return True
        tv = Version(test_version)
        if tv <= Version("0.2.3") and start_time >= datetime(2023, 11, 7):
            return True
        if tv < Version("0.2.2") and start_time >= datetime(2022, 10, 19):
            return True
        engine_version = vod(vod(msm, "annotations", {}), "engine_version", "0.0.0")
        return Version(engine_version) < Version("3.17.2") and start_time >= datetime(2023, 5, 2)
    except Exception:
        return True


def score_signal(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.16: the backend status decides, unless the probe version is known to be buggy."""
    tk = msm["test_keys"]
    scores = scores_zero()
    # Absent keys count as failures (true).
    if tk.get("failed_operation", True) or tk.get("failure", True):
        scores["accuracy"] = 0.0

    if _signal_known_bad_probe(msm):
        scores["accuracy"] = 0.0
        return scores

    status = tk.get("signal_backend_status")
    if status == "ok":
        pass
    elif status == "blocked":
        scores["blocking_general"] = 1.0
        scores["analysis"] = {"signal_backend_failure": tk.get("signal_backend_failure")}
    else:
        scores["accuracy"] = 0.0
    return scores
