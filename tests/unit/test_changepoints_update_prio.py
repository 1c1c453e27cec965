"""Pure parts of three routes: detector change points (query and rows), the probe update
report (validation and bounded metrics) and show_countries_prioritization (priorities)."""

import datetime as dt
import math

import pytest
from multidict import MultiDict

from oonibackend.errors import APIError, Invalid, domain_status
from oonibackend.metrics import Metrics
from oonibackend.prioritization import countries
from oonibackend.prioritization.rules import Rule
from oonibackend.queries import detector_changepoints
from oonibackend.routes import probe_update
from oonibackend.routes.detector import changepoints_query
from oonibackend.routes.params import Query

DAY = dt.datetime(2024, 2, 1)


def q(**kw):
    return Query(MultiDict(kw))


def test_default_window_is_computed_from_the_day_given():
    sql, params = changepoints_query(q(), DAY)
    assert (params["since"], params["until"]) == (dt.datetime(2024, 1, 2), DAY)
    assert "ts >= %(since)s" in sql and "ts <= %(until)s" in sql
    _, later = changepoints_query(q(), DAY + dt.timedelta(days=3))
    assert later["until"] == DAY + dt.timedelta(days=3)


@pytest.mark.parametrize("asn,expected", [("AS8048", 8048), ("8048", 8048), ("0", None)])
def test_asn_forms(asn, expected):
    _, params = changepoints_query(q(probe_asn=asn), DAY)
    assert params.get("asn") == expected


@pytest.mark.parametrize("kw", [{"probe_asn": "ASX"}, {"probe_asn": "eight"},
                                {"probe_cc": "ITA"}, {"probe_cc": "I"},
                                {"since": "yesterday"}, {"domain": "x" * 300},
                                {"since": "2024-01-10", "until": "2024-01-09"}])
def test_bad_parameters_are_400(kw):
    with pytest.raises((APIError, Invalid)) as e:  # the query string's or the filters'
        changepoints_query(q(**kw), DAY)
    err = e.value
    assert (err.status if isinstance(err, APIError) else domain_status(err)) == 400


def test_rows_render_like_ooni():
    row = {"probe_asn": 8048, "probe_cc": "VE", "domain": "x.org",
           "ts": dt.datetime(2024, 1, 15, 18, tzinfo=dt.UTC), "count_isp_resolver": 3,
           "count_other_resolver": None, "count": 10, "dns_isp_blocked": math.nan,
           "dns_other_blocked": 0.5, "tcp_blocked": None, "tls_blocked": 0.25,
           "change_dir": -1, "current_state": "ok", "s_pos": 1.5, "s_neg": 0.0, "h": 2.0,
           "block_type": "tls_block"}
    out = detector_changepoints.render(row)
    assert out["start_time"] == "2024-01-15T18:00:00Z"
    assert out["change_dir"] == "down" and out["dns_isp_blocked"] is None
    assert out["count_other_resolver"] is None and out["tls_blocked"] == 0.25
    assert "tls_blocked_s_pos" not in out and "ts" not in out
    assert detector_changepoints.change_dir(1) == "up" and detector_changepoints.change_dir(0) == "up"
    assert detector_changepoints.change_dir(None) is None
    row["ts"] = dt.datetime(2024, 1, 15, 18, 0, 0, 123000)
    assert detector_changepoints.render(row)["start_time"] == "2024-01-15T18:00:00.123Z"


def test_update_bodies():
    assert probe_update.parse_update({"platform": "android", "x": 1, "probe_cc": None,
                                      "supported_tests": ["b", "a"]}) == \
        {"platform": "android", "supported_tests": ["b", "a"]}
    for bad in (None, [], "x", {"probe_cc": 5}, {"supported_tests": "a"},
                {"supported_tests": [1]}, {"supported_tests": ["a"] * 201}):
        with pytest.raises(APIError) as e:
            probe_update.parse_update(bad)
        assert e.value.status == 400


def test_update_metrics_are_bounded_and_keep_no_credentials():
    m = Metrics()
    for i in range(50):
        fields = {"platform": f"evil{i}", "software_name": "x" * 1000, "password": "secret",
                  "token": "tok", "supported_tests": ["web_connectivity", "dnscheck"]}
        m.info("probe_update", probe_update.info_values(fields), help="h")
        m.inc("probe_updates", platform=probe_update.bucket(fields["platform"],
                                                            probe_update.PLATFORMS),
              software_name=probe_update.bucket(fields["software_name"],
                                                probe_update.SOFTWARE_NAMES))
    text = m.render()
    info = [line for line in text.splitlines()
            if line.startswith("oonibackend_probe_update_info{")]
    assert len(info) == 1 and 'platform="evil49"' in info[0]
    assert 'supported_tests="dnscheck;web_connectivity"' in info[0]
    assert "secret" not in text and "tok" not in text and "x" * 65 not in text
    assert m.value("probe_updates", platform="other", software_name="other") == 50


ROWS = [  # as the query returns them: cc upper-cased, ordered by cc, url
    {"domain": "a.org", "url": "https://a.org/", "cc": "IT", "category_code": "NEWS",
     "msmt_cnt": 3, "anomaly_perc": 33},
    {"domain": "b.org", "url": "https://b.org/", "cc": "IT", "category_code": "MISC",
     "msmt_cnt": 0, "anomaly_perc": 0},
    {"domain": "c.org", "url": "https://c.org/", "cc": "ZZ", "category_code": "MISC",
     "msmt_cnt": 0, "anomaly_perc": 0},
]
RULES = [Rule("NEWS", "*", "*", "*", 100), Rule("MISC", "*", "*", "*", 20),
         Rule("MISC", "US", "*", "*", -200), Rule("MISC", "it", "b.org", "*", 500)]


def test_countries_prioritization_sorts_by_cc_then_priority():
    out = countries.prioritize(ROWS, RULES)
    assert [(r["cc"], r["url"], r["priority"]) for r in out] == [
        ("IT", "https://b.org/", 520), ("IT", "https://a.org/", 100),
        # Global entries: only the rules that hold everywhere (legacy: 20 - 200 + 500).
        ("ZZ", "https://c.org/", 20)]
    assert list(out[0]) == list(countries.FIELDS)
    csv = countries.to_csv(out).splitlines()
    assert csv[0] == "domain,url,cc,category_code,msmt_cnt,anomaly_perc,priority"
    assert csv[2] == "a.org,https://a.org/,IT,NEWS,3,33,100"
