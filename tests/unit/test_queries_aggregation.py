"""The aggregation query builder (oonibackend.queries.aggregation), the route's parsing and
CSV rendering, and the domain check: pure functions, no database."""

import datetime as dt

import pytest
from multidict import MultiDict

from oonibackend import validate
from oonibackend.errors import APIError
from oonibackend.queries import aggregation as aq
from oonibackend.routes import aggregation as route
from oonibackend.routes.params import Query
from oonibackend.storage import sql

D = dt.datetime
SINCE = D(2024, 1, 1)


def span(**kw) -> tuple[dt.datetime, dt.datetime]:
    return SINCE, SINCE + dt.timedelta(**kw)


# ---- time grain ----

@pytest.mark.parametrize("length, allowed, auto", [
    (dict(hours=1), ("hour", "day"), "day"),
    (dict(days=7), ("hour", "day"), "day"),
    (dict(days=7, seconds=1), ("day", "week"), "day"),
    (dict(days=30), ("day", "week"), "day"),
    (dict(days=31), ("day", "week", "month"), "day"),
    (dict(days=365), ("day", "week", "month"), "day"),
    (dict(days=366), ("day", "week", "month", "year"), "day"),
])
def test_allowed_grains_by_range_length(length, allowed, auto):
    assert aq.allowed_time_grains(*span(**length)) == (allowed, auto)


def test_auto_and_explicit_grains():
    assert aq.resolve_time_grain(*span(days=2), "auto") == "day"
    assert aq.resolve_time_grain(*span(days=2), "hour") == "hour"
    assert aq.resolve_time_grain(*span(days=400), "year") == "year"
    assert aq.resolve_time_grain(*span(days=20), "week") == "week"


def test_a_grain_outside_the_range_lists_the_choices():
    with pytest.raises(aq.InvalidAggregation) as e:
        aq.resolve_time_grain(*span(days=2), "year")
    assert str(e.value) == "Choose time_grain between hour, day, auto for the given time range"
    with pytest.raises(aq.InvalidAggregation, match="between day, week, month, year, auto"):
        aq.resolve_time_grain(*span(days=730), "hour")


@pytest.mark.parametrize("since, until", [(None, SINCE), (SINCE, None), (SINCE, SINCE),
                                          (SINCE, SINCE - dt.timedelta(days=1))])
def test_the_time_axis_needs_an_ordered_range(since, until):
    with pytest.raises(aq.InvalidAggregation, match="since and until"):
        aq.make(axis_x="measurement_start_day", since=since, until=until)


# ---- validation ----

def test_unknown_and_identical_axes():
    with pytest.raises(aq.InvalidAggregation, match="Invalid axis name for axis_x"):
        aq.make(axis_x="probe_ip")
    with pytest.raises(aq.InvalidAggregation, match="Invalid axis name for axis_y"):
        aq.make(axis_x="probe_cc", axis_y="scores")
    with pytest.raises(aq.InvalidAggregation, match="^Axis X and Y cannot be the same$"):
        aq.make(axis_x="domain", axis_y="domain")


def test_dates_are_optional_without_a_time_axis():
    a = aq.make(axis_x="probe_cc", probe_asns=[3269])
    assert a.since is None and a.until is None
    assert "measurement_start_time" not in aq.build(a)[0]


def test_requests_are_normalised_into_equal_cache_keys():
    a = aq.make(probe_ccs=["RU", "CN", "IR", "CN"], test_names=["tor", "psiphon"])
    b = aq.make(probe_ccs=["CN", "IR", "RU"], test_names=["psiphon", "tor"], time_grain=None)
    assert a == b and hash(a) == hash(b)
    assert a.probe_ccs == ("CN", "IR", "RU")


# ---- SQL (fastpath alone; the rollups: tests/unit/test_aggregation_plan.py) ----

def test_no_axis_is_one_aggregate_row_without_group_by():
    s, p = aq.build(aq.make(probe_ccs=["IT"], since=SINCE, until=D(2024, 2, 1)), rollups=False)
    assert "GROUP BY" not in s and "ORDER BY" not in s
    assert "fastpath.measurement_start_time >= %(since)s" in s
    assert "fastpath.measurement_start_time < %(until)s" in s
    assert p == {"since": SINCE, "until": D(2024, 2, 1), "probe_cc": ["IT"]}


def test_the_five_measures_are_legacys():
    s, _ = aq.build(aq.make(), rollups=False)
    assert "countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS anomaly_count" in s
    assert "countIf(confirmed = 't' AND msm_failure = 'f') AS confirmed_count" in s
    assert "countIf(msm_failure = 't') AS failure_count" in s
    assert "countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS ok_count" in s
    assert "count() AS measurement_count" in s


def test_no_final_and_no_join_unless_categories_are_needed():
    s, p = aq.build(aq.make(axis_x="probe_cc", test_names=["web_connectivity"]))
    assert "FINAL" not in s and "citizenlab" not in s
    assert "citizenlab_ccs" not in p


@pytest.mark.parametrize("grain, expr", [
    ("hour", "toStartOfHour(measurement_start_time)"),
    ("day", "toDate(measurement_start_time)"),
    ("week", "toStartOfWeek(measurement_start_time, 0)"),  # Sunday, like dayjs
    ("month", "toStartOfMonth(measurement_start_time)"),
    ("year", "toStartOfYear(measurement_start_time)"),
])
def test_time_buckets(grain, expr):
    since, until = (SINCE, D(2024, 1, 2)) if grain == "hour" else (SINCE, D(2025, 6, 1))
    a = aq.make(axis_x="measurement_start_day", axis_y="probe_cc", since=since, until=until,
                time_grain=grain)
    s, _ = aq.build(a, rollups=False)
    assert f"{expr} AS measurement_start_day" in s
    assert "GROUP BY measurement_start_day, probe_cc\nORDER BY measurement_start_day, probe_cc" in s
    assert aq.time_grain_of(a) == grain


def test_filters_are_in_lists():
    a = aq.make(probe_ccs=["IT"], probe_asns=[3269, 1], test_names=["web_connectivity"],
                domains=["twitter.com"], ooni_run_link_ids=[7], input="https://x.org/")
    s, p = aq.build(a)
    for col in ("probe_cc", "probe_asn", "test_name", "domain", "ooni_run_link_id"):
        assert f"fastpath.{col} IN %({col})s" in s
    assert "fastpath.input = %(input)s" in s
    assert p["probe_asn"] == [1, 3269] and p["input"] == "https://x.org/"


def test_category_filter_joins_the_global_and_lower_cased_country_lists():
    s, p = aq.build(aq.make(category_codes=["NEWS"], probe_ccs=["IT", "BR"]))
    assert "INNER JOIN (SELECT DISTINCT url, category_code FROM citizenlab" in s
    assert "ON citizenlab.url = fastpath.input" in s
    assert p["citizenlab_ccs"] == ["ZZ", "br", "it"]
    assert p["category_codes"] == ["NEWS"]


def test_category_axis_without_countries_uses_the_global_list_only():
    s, p = aq.build(aq.make(axis_x="category_code"))
    assert "citizenlab.category_code AS category_code" in s
    assert p["citizenlab_ccs"] == ["ZZ"] and "category_codes" not in p


def test_blocking_type_axis_is_extracted_from_the_scores():
    s, _ = aq.build(aq.make(axis_y="blocking_type"))
    assert "JSONExtractString(scores, 'analysis', 'blocking_type') AS blocking_type" in s


def test_rendered_sql_quotes_hostile_values():
    s, p = aq.build(aq.make(input="x' OR 1=1 --", domains=["a.org"]))
    rendered = sql.render(s, p)
    assert "fastpath.input = 'x\\' OR 1=1 --'" in rendered


def test_columns_follow_the_axes():
    a = aq.make(axis_x="probe_cc", axis_y="probe_asn")
    assert aq.columns(a) == ["probe_cc", "probe_asn", "anomaly_count", "confirmed_count",
                             "failure_count", "ok_count", "measurement_count"]


def test_torsf_window_is_since_exclusive_until_inclusive():
    s, p = aq.torsf_stats("IT", SINCE, D(2024, 2, 1))
    assert "test_name = 'torsf'" in s
    assert "measurement_start_time > %(since)s" in s
    assert "measurement_start_time <= %(until)s" in s
    assert "count() AS measurement_count" in s
    assert p == {"since": SINCE, "until": D(2024, 2, 1), "probe_cc": "IT"}
    s, p = aq.torsf_stats(None, None, None)
    assert p == {} and "%(" not in s


# ---- the route's parsing and rendering ----

def parse(**kw):
    return route.parse(MultiDict(kw))


def test_parse_explorer_query_strings():
    a, fmt, download = parse(probe_asn="AS3269,3270", axis_x="probe_cc", data="anomalies",
                             format="csv", download="true", since="")
    assert (fmt, download) == ("CSV", True)
    assert a.probe_asns == (3269, 3270) and a.since is None and a.axis_x == "probe_cc"
    # since=undefined: legacy's cheap 200 {"error", "v": 0} (docs/api.md §2.8)
    with pytest.raises(APIError) as e:
        parse(axis_x="probe_cc", since="undefined")
    assert (e.value.status, e.value.extra) == (200, {"v": 0})
    a, fmt, download = parse(test_name="signal,telegram", probe_cc="", time_grain="DAY",
                             axis_x="measurement_start_day", since="2024-01-01",
                             until="2024-02-01")
    assert (fmt, download) == ("JSON", False)
    assert a.test_names == ("signal", "telegram") and a.probe_ccs == () and a.time_grain == "day"


@pytest.mark.parametrize("kw", [dict(format="xml"), dict(axis_x="x", axis_y="x"),
                                dict(test_name="BOGUS"), dict(time_grain="minute"),
                                dict(ooni_run_link_id="1,b")])
def test_parse_errors_are_400_with_v0(kw):
    with pytest.raises(APIError) as e:
        parse(**kw)
    assert e.value.status == 400 and e.value.extra == {"v": 0}


def test_csv_header_is_sorted_and_dates_match_json():
    rows = [{"measurement_start_day": D(2024, 1, 1, 5), "probe_cc": "IT", "anomaly_count": 1,
             "confirmed_count": 0, "failure_count": 0, "ok_count": 2, "measurement_count": 3},
            {"measurement_start_day": dt.date(2024, 1, 2), "probe_cc": "a,b", "anomaly_count": 0,
             "confirmed_count": 0, "failure_count": 0, "ok_count": 1, "measurement_count": 1}]
    cols = ["measurement_start_day", "probe_cc", *aq.MEASURES]
    assert route.to_csv(cols, rows).decode().split("\r\n") == [
        "anomaly_count,confirmed_count,failure_count,measurement_count,measurement_start_day,"
        "ok_count,probe_cc",
        "1,0,0,3,2024-01-01T05:00:00Z,2,IT",
        '0,0,0,1,2024-01-02,1,"a,b"',
        ""]


def test_cost_cap_settings_come_from_config():
    from oonibackend.config import Config

    cfg = Config()
    cfg.aggregation.max_rows_to_read = 10
    s = route.settings(cfg)
    assert s == {"max_execution_time": 20, "timeout_overflow_mode": "throw",
                 "max_rows_to_read": 10, "read_overflow_mode": "throw", "priority": 4}


# ---- the domain check ----

@pytest.mark.parametrize("value", [
    "foo.org", "8.8.4.4", "doh-de.blahdns.com", "8.8.8.8:853", "[2a00:5a60::ad2:0ff]:853",
    "stun.voip.blackberry.com:3478", "_dmarc.example.com", "xn--p1ai.xn--p1ai", "пример.рф",
    "2001:db8::1", "WWW.Example.COM"])
def test_valid_domains(value):
    assert validate.host(value) == value.lower()


@pytest.mark.parametrize("value", [
    "foo..org", "-bad-.org", "1.2.3", "x.org:99999", "x.org:0", "<script>", "a b.org",
    "[::1", "[zz::1]:53", "[::1]x", "host.", "a" * 64 + ".org", "x.org:ab"])
def test_invalid_domains(value):
    with pytest.raises(APIError) as e:
        Query(MultiDict(domain=value)).domain()
    assert e.value.status == 400
