"""The MAT's observation and analysis SQL builders and result shaping (pure), and the
routes' parsing (docs/current_services.md §6)."""

from __future__ import annotations

import datetime as dt

import pytest
from multidict import MultiDict

from oonibackend.errors import APIError
from oonibackend.queries import analysis as qa
from oonibackend.queries import mat
from oonibackend.queries import observations as qo
from oonibackend.routes import mat as route
from oonibackend.storage import sql

TODAY = dt.datetime(2026, 12, 6)
S, U = dt.datetime(2024, 11, 1), dt.datetime(2024, 11, 10)
HOSTILE = "x') OR 1=1 --"


def rendered(query: tuple[str, dict]) -> str:
    return sql.render(*query)


# ---- observations ----

def test_default_is_the_failure_label_over_addressable_observations():
    text, params = qo.build(qo.Observations(since=S, until=U))
    assert "AS failure" in text and "count() AS observation_count" in text
    assert "(obs_web.dns_failure IS NOT NULL OR obs_web.ip IS NOT NULL)" in text
    assert "ORDER BY observation_count DESC, failure" in text
    assert params == {"since": "2024-11-01 00:00:00.000", "until": "2024-11-10 00:00:00.000"}
    assert ">= toDateTime64(%(since)s, 3, 'UTC')" in text
    assert "< toDateTime64(%(until)s, 3, 'UTC')" in text


def test_one_valued_filters_are_keys_several_are_not():
    o = qo.Observations(group_by=("timestamp",), probe_cc=("IT",), probe_asn=(1, 2),
                        hostname=("a.org",), resolver_asn=(15169,))
    assert o.keys == ("timestamp", "probe_cc", "hostname", "resolver_asn")
    text, params = qo.build(o)
    assert "obs_web.probe_asn IN %(probe_asn)s" in text and params["probe_asn"] == [1, 2]
    assert "GROUP BY timestamp, probe_cc, hostname, resolver_asn" in text
    assert "obs_web.hostname IS NOT NULL" in text  # a key is never null
    # no failure grouping: HTTP-only observations count
    assert "dns_failure IS NOT NULL OR" not in text


def test_group_by_keeps_its_order_and_drops_repeats():
    o = qo.Observations(group_by=("hostname", "failure", "hostname"), hostname=("a.org",))
    assert o.keys == ("hostname", "failure")


def test_category_code_joins_the_applicable_lists_once():
    text, params = qo.build(qo.Observations(group_by=("category_code",), probe_cc=("IR",),
                                            category_code=("NEWS",)))
    assert "SELECT DISTINCT url, category_code FROM citizenlab" in text
    assert "ON citizenlab.url = obs_web.input" in text
    assert params["citizenlab_ccs"] == ["ZZ", "ir"] and params["category_codes"] == ["NEWS"]


@pytest.mark.parametrize("grain,fn", [("hour", "toStartOfHour"), ("day", "toStartOfDay"),
                                      ("week", "toStartOfWeek"), ("month", "toStartOfMonth"),
                                      ("year", "toStartOfYear"), ("auto", "toStartOfDay")])
def test_time_buckets(grain, fn):
    text = mat.time_bucket("t", grain)
    assert fn in text and text.startswith("toDateTime(") and text.endswith(", 'UTC')")
    assert ("toStartOfWeek(toDateTime(t, 'UTC'), 0)" in text) == (grain == "week")


def test_hostile_values_stay_literals():
    o = qo.Observations(hostname=(HOSTILE,), input=(HOSTILE,), ooni_run_link_id=(HOSTILE,))
    text, params = qo.build(o)
    assert HOSTILE not in text and params["hostname"] == [HOSTILE]
    assert "'x\\') OR 1=1 --'" in rendered((text, params))


def test_ctrl_sql_and_rendering():
    text, params = qo.build_ctrl(("twitter.com",), S, U)
    assert "GROUP BY hostname, ip, port" in text and params["hostname"] == ["twitter.com"]
    base = {"hostname": "h.org", "asn": 13335, "as_org_name": "Cloudflare, Inc.",
            "tcp_success_count": 1, "tcp_failure_count": 0, "tls_success_count": 0,
            "tls_failure_count": 0, "dns_success_count": 0, "dns_nxdomain_count": 0,
            "dns_other_failure_count": 0}
    rows = [
        {**base, "ip": "", "port": None, "asn": None, "as_org_name": None, "tcp_success_count": 0,
         "dns_nxdomain_count": 2},
        {**base, "ip": "1.1.1.1", "port": 443, "tls_success_count": 1, "dns_success_count": 1},
        {**base, "ip": "1.1.1.1", "port": 80},
        {**base, "ip": "2.2.2.2", "port": None, "asn": 64500, "as_org_name": None},
    ]
    out = qo.render_ctrl(rows)
    assert [(r["ip"], r.get("port")) for r in out] == [("1.1.1.1", 443), ("1.1.1.1", 80),
                                                       ("2.2.2.2", None)]
    assert [r["tls_consistent"] for r in out] == [True, True, False]
    assert [r["in_dns_answers"] for r in out] == [True, True, False]
    assert [r["is_cloud_provider"] for r in out] == [True, True, False]
    assert all(r["dns_nxdomain_count"] == 2 and r["dns_success_count"] == 1 for r in out)
    assert "port" not in out[2] and "as_org_name" not in out[2]  # nulls omitted


# ---- analysis ----

def test_analysis_keys_follow_oonis_order():
    a = qa.Analysis(axis_x="probe_cc", axis_y="domain", probe_cc=("IT",), test_name=("x",),
                    probe_asn=(3,), domain=("a.org", "b.org"))
    assert a.keys == ("probe_cc", "probe_asn", "test_name", "domain")
    text, params = qa.build(a)
    assert "GROUP BY probe_cc, probe_asn, test_name, domain" in text
    assert params["domain"] == ["a.org", "b.org"]


def test_analysis_select_quantiles_and_weighted_outcomes():
    text, _ = qa.build(qa.Analysis(since=S, until=U, time_grain="hour"))
    assert "round(quantile(0.95)(toFloat64(dns_blocked)), 6) AS q_dns_blocked" in text
    assert "topKWeighted(1)" in text and "toUInt64(greatest(tls_blocked, 0) * 100)" in text
    assert "'dns_nxdomain_error'), 'nxdomain'" in text and "'got_answer'" in text
    assert "toStartOfHour" in text


@pytest.mark.parametrize("a,message", [
    (qa.Analysis(axis_x="category"), "Invalid axis_x"),
    (qa.Analysis(axis_x="probe_cc", axis_y="probe_cc"), "cannot be the same"),
    (qa.Analysis(since=U, until=S), "since and until"),
])
def test_analysis_validation(a, message):
    with pytest.raises(qa.InvalidAnalysis, match=message):
        qa.build(a)


def row(**kw):
    base = {f"q_{layer}_{state}": 0.0 for layer in qa.LAYERS for state in qa.STATES}
    base.update({f"{layer}_blocked_outcome": "" for layer in qa.LAYERS})
    base.update(kw)
    return base


def test_loni_ranks_the_layers_over_the_threshold():
    loni = qa.loni(row(q_dns_blocked=0.5, q_tcp_blocked=0.6, q_tls_blocked=0.9,
                       tcp_blocked_outcome="generic_timeout_error",
                       tls_blocked_outcome="connection_reset", dns_blocked_outcome="nxdomain"))
    assert loni["likely_blocked_protocols"] == [["tls.connection_reset", 0.9],
                                                ["tcp.generic_timeout_error", 0.6]]
    assert (loni["blocked_max_outcome"], loni["blocked_max"]) == ("tls.connection_reset", 0.9)
    nothing = qa.loni(row(q_dns_ok=float("nan")))
    assert (nothing["blocked_max_outcome"], nothing["blocked_max"]) == ("none", 0.0)
    assert nothing["dns_ok"] is None  # NaN is null


def test_result_items_carry_every_key():
    item = qa.result({**row(), "probe_cc": "IT", "count": 3}, ("probe_cc",))
    assert item["probe_cc"] == "IT" and item["count"] == 3.0
    assert item["measurement_start_day"] is None and item["domain"] is None
    assert "category_code" not in item
    item = qa.result({**row(), "category_code": "NEWS", "count": 1}, ("category_code",))
    assert item["category_code"] == "NEWS"


# ---- the routes' parsing ----

def q(*pairs):
    return MultiDict(pairs)


def test_parse_observations_as_explorer_sends_them():
    o = route.parse_observations(q(("group_by", "failure"), ("group_by", "timestamp"),
                                   ("hostname", "Twitter.com"), ("hostname", "x.org"),
                                   ("probe_asn", "AS12389"), ("data", "observations"),
                                   ("since", "2024-11-01"), ("until", "2024-11-10"),
                                   ("time_grain", "auto"), ("category_code", "")), TODAY)
    assert o.group_by == ("failure", "timestamp") and o.time_grain == "day"
    assert o.hostname == ("twitter.com", "x.org") and o.probe_asn == (12389,)
    assert (o.since, o.until) == (S, U)


def test_parse_default_windows():
    o = route.parse_observations(q(), TODAY)
    assert (o.since, o.until) == (dt.datetime(2026, 11, 6), TODAY)
    assert o.group_by == ("failure",)
    uid = "20241015080003.123456_RU_webconnectivity_e5a31751aaa97a66"
    o = route.parse_observations(q(("measurement_uid", uid)), TODAY)
    assert (o.since, o.until) == (None, None)
    a = route.parse_analysis(q(("measurement_uid", uid), ("since", "2024-01-01")), TODAY)
    assert (a.since, a.until) == (dt.datetime(2024, 1, 1), None)
    hosts, since, until, fixed = route.parse_ctrl(q(("hostname", "a.org")), TODAY)
    assert (hosts, until - since, fixed) == (("a.org",), dt.timedelta(hours=1), False)


def test_parse_analysis_accepts_explorers_values():
    a = route.parse_analysis(q(("axis_x", "category_code"), ("axis_y", "probe_asn"),
                               ("domain", "b.org,a.org"), ("probe_asn", "AS3"),
                               ("format", "CSV"), ("download", "true")), TODAY)
    assert (a.axis_x, a.axis_y, a.domain, a.probe_asn) == (
        "category_code", "probe_asn", ("a.org", "b.org"), (3,))


@pytest.mark.parametrize("pairs", [
    (("group_by", "input"),), (("ip", "1.2.3"),), (("measurement_uid", "x"),),
    (("since", "2024-11-10"), ("until", "2024-11-01")), (("time_grain", "minute"),),
])
def test_parse_observation_errors_are_400(pairs):
    with pytest.raises(APIError) as e:
        route.parse_observations(q(*pairs), TODAY)
    assert e.value.status == 400


@pytest.mark.parametrize("pairs", [
    (("axis_x", "blocking_type"),), (("axis_y", "measurement_start_day"),),
    (("anomaly_sensitivity", "x"),), (("probe_cc", "ITA"),),
])
def test_parse_analysis_errors_are_400(pairs):
    with pytest.raises(APIError) as e:
        route.parse_analysis(q(*pairs), TODAY)
    assert e.value.status == 400


def test_parse_ctrl_needs_a_hostname():
    with pytest.raises(APIError) as e:
        route.parse_ctrl(q(("hostname", "")), TODAY)
    assert e.value.status == 400


def test_queries_carry_the_aggregation_caps_and_a_result_cap():
    from oonibackend import config
    from oonibackend.appkeys import CONFIG

    cfg = config.load(None)
    s = route.settings({CONFIG: cfg})  # type: ignore[arg-type]
    assert s["max_execution_time"] == cfg.aggregation.max_execution_time
    assert s["max_rows_to_read"] == cfg.aggregation.max_rows_to_read
    assert (s["max_result_rows"], s["result_overflow_mode"]) == (route.MAX_RESULT_ROWS, "throw")
