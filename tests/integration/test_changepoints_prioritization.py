"""GET /api/v1/detector/changepoints (docs/current_services.md §5) and
GET /api/_/show_countries_prioritization (docs/api.md §1.2 #43) against the real server and
database, with fixture rows (dated relative to today) loaded by `oonibackend db exec`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import Backend
from tests.integration.test_hostile_input import NASTY, check_all

TODAY = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0,
                                        microsecond=0)


def day(n: int, hour: int = 12) -> dt.datetime:
    return TODAY + dt.timedelta(days=n, hours=hour)


def ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


# (probe_asn, probe_cc, domain, ts, change_dir, block_type)
CHANGEPOINTS = [
    (8048, "VE", "twitter.com", day(-1), 1, "tcp_block"),
    (8048, "VE", "twitter.com", day(-3), -1, "tcp_block"),
    (8048, "VE", "www.bbc.com", day(-10), 1, "dns_isp_block"),
    (21826, "VE", "twitter.com", day(-5), 1, "tls_block"),
    (3320, "DE", "example.org", day(-20), -1, "dns_other_block"),
    (8048, "VE", "old.example", day(-45), 1, "tls_block"),   # before the default window
    (8048, "VE", "today.example", day(0, 6), 1, "tcp_block"),  # after the default until
]


def changepoints_sql() -> str:
    values = []
    for asn, cc, domain, t, direction, block_type in CHANGEPOINTS:
        values.append(f"({asn}, '{cc}', '{domain}', '{ts(t)}', 3, 1, 10, 0.9, nan, 0.1, NULL, "
                      f"{direction}, 'blocked', 1.5, 0, 2, '{block_type}')")
    return ("INSERT INTO event_detector_changepoints (probe_asn, probe_cc, domain, ts, "
            "count_isp_resolver, count_other_resolver, count, dns_isp_blocked, "
            "dns_other_blocked, tcp_blocked, tls_blocked, change_dir, current_state, s_pos, "
            "s_neg, h, block_type) VALUES\n" + ",\n".join(values) + ";\n")


CITIZENLAB = [  # domain, url, cc, category_code
    ("a.it", "https://a.it/", "it", "NEWS"),
    ("b.it", "https://b.it/", "it", "MISC"),
    ("g.org", "https://g.org/", "ZZ", "MISC"),
    ("h.org", "https://h.org/", "ZZ", "HUMR"),
]
RULES = [("NEWS", "*", "*", "*", 100), ("MISC", "*", "*", "*", 20),
         ("MISC", "US", "*", "*", -200), ("MISC", "IT", "b.it", "*", 500),
         ("HUMR", "*", "*", "*", 100)]


def prioritization_sql() -> str:
    rows, n = [], 0
    # (input, cc, days ago, anomaly): a.it 4 in Italy (1 anomalous), 1 older than a week.
    for input_, cc, ago, anomaly in [("https://a.it/", "IT", 1, "t"), ("https://a.it/", "IT", 2, "f"),
                                     ("https://a.it/", "IT", 3, "f"), ("https://a.it/", "IT", 4, "f"),
                                     ("https://a.it/", "IT", 9, "t"), ("https://a.it/", "DE", 1, "t"),
                                     ("https://g.org/", "ZZ", 1, "t")]:
        n += 1
        t = ts(TODAY - dt.timedelta(days=ago) + dt.timedelta(hours=1))
        rows.append(f"('20240101000000.{n:06d}_{cc}_webconnectivity_x', 'r{n}', '{input_}', "
                    f"'{cc}', 1, 'web_connectivity', '{t}', '{t}', '{anomaly}', 'f', 'f')")
    cl = ", ".join(f"('{d}', '{u}', '{c}', '{k}')" for d, u, c, k in CITIZENLAB)
    pr = ", ".join(f"(1, '{k}', '{c}', '{d}', '{u}', {p})" for k, c, d, u, p in RULES)
    return ("INSERT INTO fastpath (measurement_uid, report_id, input, probe_cc, probe_asn, "
            "test_name, test_start_time, measurement_start_time, anomaly, confirmed, "
            "msm_failure) VALUES\n" + ",\n".join(rows) + ";\n"
            f"INSERT INTO citizenlab (domain, url, cc, category_code) VALUES {cl};\n"
            "INSERT INTO url_priorities (sign, category_code, cc, domain, url, priority) "
            f"VALUES {pr};\n")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("changepoints"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"test_list_refresh": 0.5},
    })
    b.start()
    f = b.data_dir / "fixtures.sql"
    f.write_text(changepoints_sql() + prioritization_sql())
    r = subprocess.run([sys.executable, "-m", "oonibackend", "db", "exec", str(f), "--config",
                        str(b.config), "--data-dir", str(b.data_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    yield b
    b.stop()


def get(api, path):
    try:
        with urllib.request.urlopen(api.url + path, timeout=15) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def results(api, query: str = "") -> list[dict]:
    status, text, headers = get(api, "/api/v1/detector/changepoints" + query)
    assert status == 200, text
    assert "Cache-Control" not in headers
    return json.loads(text)["results"]


def domains(rows) -> list[str]:
    return sorted(r["domain"] + "@" + str(r["probe_asn"]) for r in rows)


def test_the_default_window_is_the_last_30_days_to_today(api):
    rows = results(api)
    assert domains(rows) == ["example.org@3320", "twitter.com@21826", "twitter.com@8048",
                             "twitter.com@8048", "www.bbc.com@8048"]
    r = next(x for x in rows if x["start_time"] == day(-1).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert r == {"probe_asn": 8048, "probe_cc": "VE", "domain": "twitter.com",
                 "start_time": day(-1).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "count_isp_resolver": 3, "count_other_resolver": 1, "count": 10,
                 "dns_isp_blocked": pytest.approx(0.9), "dns_other_blocked": None,
                 "tcp_blocked": pytest.approx(0.1), "tls_blocked": None, "change_dir": "up",
                 "current_state": "blocked", "s_pos": 1.5, "s_neg": 0.0, "h": 2.0,
                 "block_type": "tcp_block"}
    assert {x["change_dir"] for x in rows} == {"up", "down"}
    assert all(x["block_type"] for x in rows)


@pytest.mark.parametrize("asn", ["8048", "AS8048"])
def test_filters(api, asn):
    assert domains(results(api, f"?probe_asn={asn}")) == \
        ["twitter.com@8048", "twitter.com@8048", "www.bbc.com@8048"]
    assert domains(results(api, "?probe_cc=DE")) == ["example.org@3320"]
    assert domains(results(api, "?domain=twitter.com&probe_cc=VE")) == \
        ["twitter.com@21826", "twitter.com@8048", "twitter.com@8048"]
    assert len(results(api, "?probe_asn=0")) == 5  # 0: any network
    assert results(api, "?domain=nothing.example") == []


def test_explicit_window(api):
    since, until = day(-50).strftime("%Y-%m-%d"), day(1).strftime("%Y-%m-%d")
    assert len(results(api, f"?since={since}&until={until}")) == len(CHANGEPOINTS)
    # Both ends inclusive.
    exact = day(-5).strftime("%Y-%m-%dT%H:%M:%S")
    assert domains(results(api, f"?since={exact}&until={exact}")) == ["twitter.com@21826"]
    assert domains(results(api, f"?since={day(-4).strftime('%Y-%m-%d')}")) == \
        ["twitter.com@8048", "twitter.com@8048"]


@pytest.mark.parametrize("query", ["?probe_asn=ASX", "?probe_asn=abc", "?probe_cc=VEN",
                                   "?since=nope", "?until=2024-13-01",
                                   "?since=2024-02-01&until=2024-01-01"])
def test_bad_parameters_are_400(api, query):
    status, text, _ = get(api, "/api/v1/detector/changepoints" + query)
    assert status == 400 and json.loads(text)["error"]


def prioritization(api) -> list[dict]:
    # The rules reach the URL snapshot within test_list_refresh; wait for them.
    deadline = time.monotonic() + 15
    while True:
        status, text, headers = get(api, "/api/_/show_countries_prioritization")
        assert status == 200 and headers["Cache-Control"] == "max-age=1"
        items = json.loads(text)
        if any(i["priority"] for i in items) or time.monotonic() > deadline:
            return items
        time.sleep(0.3)


def test_show_countries_prioritization_json(api):
    items = prioritization(api)
    assert [(i["cc"], i["url"], i["priority"], i["msmt_cnt"], i["anomaly_perc"])
            for i in items] == [
        ("IT", "https://b.it/", 520, 0, 0),
        ("IT", "https://a.it/", 100, 4, 25),  # the measurement of 9 days ago is not counted
        ("ZZ", "https://h.org/", 100, 0, 0),
        ("ZZ", "https://g.org/", 20, 1, 100),  # global: only the rules holding everywhere
    ]
    assert all(sorted(i) == ["anomaly_perc", "category_code", "cc", "domain", "msmt_cnt",
                             "priority", "url"] for i in items)


def test_show_countries_prioritization_csv(api):
    prioritization(api)
    status, text, headers = get(api, "/api/_/show_countries_prioritization?format=CSV")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["cc"], r["domain"], r["priority"]) for r in rows] == [
        ("IT", "b.it", "520"), ("IT", "a.it", "100"), ("ZZ", "h.org", "100"),
        ("ZZ", "g.org", "20")]
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert get(api, "/api/_/show_countries_prioritization?format=XML")[0] == 400


@pytest.mark.parametrize("route,params", [
    ("/api/v1/detector/changepoints", ("probe_asn", "probe_cc", "domain", "since", "until")),
    ("/api/_/show_countries_prioritization", ("format",)),
])
def test_hostile_parameters_are_never_5xx(api, route, params):
    cases = [("GET", f"{route}?{name}={v}", None, None) for name in params for v in NASTY]
    cases += [("GET", f"{route}?{name}=1&{name}=2", None, None) for name in params]
    check_all(api, cases)
