"""Circumvention tools: vanilla_tor, tor, torsf, meek, psiphon, riseupvpn, openvpn, STUN
(docs/fastpath.md §2.7)."""

from __future__ import annotations

from typing import Any

from workers.scoring.helpers import nested_vod, scores_failed, scores_zero, vod

_TOR_DONE = ("Bootstrapped 100%: Done", "Bootstrapped 100% (done): Done")


def score_vanilla_tor(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.6: bootstrap completion, else blocking decreasing with the bootstrap progress."""
    tk = msm["test_keys"]
    logs = tk.get("tor_logs") or tk.get("tor_log")
    if logs is None:
        return scores_failed()
    scores = scores_zero()
    # Quirk (§8.4): `in` is a substring test on a string log but exact element equality on a
    # list of lines; modern lines carry timestamps, so lists never match and progress decides.
    if any(done in logs for done in _TOR_DONE):
        return scores
    # float() raises on tor_progress: null (reference drops the measurement).
    progress = min(100, max(0, float(tk.get("tor_progress", 0))))
    if progress == 100:
        return scores
    scores["blocking_general"] = 1.0 - progress * 0.004
    return scores


def score_tor(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.13: share of the Tor targets (bridges, directory authorities) that failed."""
    tk = msm["test_keys"]
    targets = tk.get("targets", {})
    if not targets or isinstance(targets, list):  # a list is the early experimental format
        return scores_failed()

    blocked = success = 0
    for target in targets.values():
        if "failure" not in target or "network_events" not in target:
            return scores_failed()
        failure = target["failure"]
        if failure is False:
            continue  # target not run
        if failure is None:
            success += 1
        elif failure == "":
            raise AssertionError("tor target with an empty failure")  # reference: dropped
        else:
            blocked += 1

    scores = scores_zero()
    if blocked + success > 0:
        scores["blocking_general"] = blocked / (blocked + success)
    else:
        scores["accuracy"] = 0.0
    scores["extra"] = {"test_runtime": msm.get("test_runtime")}
    return scores


def score_torsf(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.18: Tor over Snowflake; ooniprobe-android 3.8.3 reports are known to be wrong."""
    if (vod(msm, "software_version", "unknown") == "3.8.3"
            and vod(msm, "software_name", "unknown").startswith("ooniprobe-android")):
        return scores_failed()
    tk = msm["test_keys"]
    scores = scores_zero()
    if tk.get("failure"):
        scores["blocking_general"] = 1.0
        return scores
    scores["extra"] = {"bootstrap_time": tk.get("bootstrap_time"),
                       "test_runtime": msm.get("test_runtime")}
    return scores


def _headers_dict(headers: Any) -> Any:
    """Legacy `[[name, [value, ...]], ...]` headers to `{name: first value}`, skipping empties."""
    if not isinstance(headers, list):
        return headers
    return {item[0]: item[1][0] for item in headers if item and item[1]}


def score_meek_fronted_requests_test(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.11: every fronted request must get a 200 from the expected CDN server."""
    tk = msm["test_keys"]
    scores = scores_zero()
    requests = tk.get("requests") or ()
    if len(requests) == 0:
        scores["blocking_general"] = 1.0
        scores["accuracy"] = 0  # quirk (§8.5): integer 0, serialized "0" not "0.0"
        return scores
    # The probe's `success` flag only affected logging in the reference.
    for request in requests:
        resp = request.get("response", {})
        if resp is None or resp.get("code", 0) != 200:
            scores["blocking_general"] = 1.0
            return scores
        server = _headers_dict(resp.get("headers", {})).get("Server", "")
        if not server.startswith("ECAcc "):
            scores["blocking_general"] += 0.5
    return scores


def score_psiphon(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.12: psiphon bootstrap; `accuracy` is always present (1.0 on success)."""
    tk = msm["test_keys"]
    scores = scores_zero()
    failure = tk.get("failure")
    bootstrap_time = tk.get("bootstrap_time", 0)
    if failure is None:
        # Success without a bootstrap time should not happen: probe bug.
        scores["accuracy"] = 0.0 if bootstrap_time == 0 else 1.0
    else:
        scores["accuracy"] = 1.0
        scores["blocking_general"] = 1.0
    if "resolver_ip" not in msm:
        scores["accuracy"] = 0.0
    scores["extra"] = {"test_runtime": msm.get("test_runtime"), "bootstrap_time": bootstrap_time}
    return scores


def score_riseupvpn(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.19: scoring disabled by the reference since 2023-10-17: empty scores."""
    return {}


def score_openvpn(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.20: the probe's overall `success` flag decides."""
    scores = scores_zero()
    success = nested_vod(msm, "test_keys", "success")
    if success is False:
        scores["blocking_general"] = 1.0
    elif success is None:
        scores["accuracy"] = 0.0
    scores["extra"] = {"test_runtime": msm.get("test_runtime")}
    return scores


def score_stunreachability(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.7.17: any failure reaching the STUN endpoint is blocking."""
    tk = msm["test_keys"]
    scores = scores_zero()
    scores["extra"] = {"endpoint": tk.get("endpoint")}
    failure = tk.get("failure")
    if failure:
        scores["blocking_general"] = 1.0
        scores["extra"]["failure"] = failure
    return scores
