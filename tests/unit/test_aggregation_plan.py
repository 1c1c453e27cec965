"""The aggregation planner (oonibackend.queries.aggregation `plan`, `build`): which requests
the rollups of migration 0012 answer, and how a window splits into the rollup's whole days
and fastpath's partial days. Pure; the answers themselves are compared with fastpath's in
tests/integration/test_rollups.py."""

import datetime as dt

import pytest

from oonibackend.queries import aggregation as aq

D = dt.datetime
DAY = dt.date
MONTH = {"since": D(2024, 1, 1), "until": D(2024, 2, 1)}
DAILY, DOMAIN = "fastpath_daily", "fastpath_daily_domain"


# Every route/param combination Explorer and the MAT send (docs/clients.md), and the
# rollup that answers it (None: fastpath).
@pytest.mark.parametrize("kw, table", [
    # country calendar, no time_grain (auto: day)
    (dict(probe_ccs=["IT"], axis_x="measurement_start_day", **MONTH), DAILY),
    # country blocked categories: citizenlab join
    (dict(probe_ccs=["IT"], test_names=["web_connectivity"], axis_x="category_code", **MONTH),
     None),
    # country websites grid
    (dict(axis_y="domain", axis_x="measurement_start_day", probe_ccs=["IT"],
          test_names=["web_connectivity"], time_grain="day", **MONTH), DOMAIN),
    # country apps charts
    (dict(axis_y="test_name", axis_x="measurement_start_day", probe_ccs=["IT"],
          test_names=["signal", "telegram"], time_grain="day", **MONTH), DAILY),
    # network page: all time by country
    (dict(probe_asns=[3269], axis_x="probe_cc"), DAILY),
    # network calendar over 12 years
    (dict(probe_asns=[3269], axis_x="measurement_start_day", since=D(2013, 1, 1),
          until=D(2025, 1, 2)), DAILY),
    # network page charts by domain / by test
    (dict(axis_y="domain", axis_x="measurement_start_day", probe_asns=[3269],
          test_names=["web_connectivity"], time_grain="day", **MONTH), DOMAIN),
    (dict(axis_y="test_name", axis_x="measurement_start_day", probe_asns=[3269],
          time_grain="day", **MONTH), DAILY),
    # domain page chart
    (dict(axis_x="measurement_start_day", axis_y="probe_cc", test_names=["web_connectivity"],
          domains=["twitter.com"], time_grain="day", **MONTH), DOMAIN),
    # thematic pages; the MAT's per-day by country
    (dict(axis_x="measurement_start_day", axis_y="probe_cc", test_names=["tor"],
          probe_ccs=["CN", "IR"], time_grain="day", **MONTH), DAILY),
    (dict(axis_x="measurement_start_day", axis_y="probe_cc", test_names=["web_connectivity"],
          time_grain="day", **MONTH), DAILY),
    # the MAT: weeks, months, years, ASN axis, no axis
    (dict(axis_x="measurement_start_day", axis_y="probe_asn", time_grain="week", **MONTH),
     DAILY),
    (dict(axis_x="measurement_start_day", since=D(2023, 1, 1), until=D(2025, 1, 1),
          time_grain="year"), DAILY),
    (dict(axis_x="measurement_start_day", time_grain="month", **MONTH), DAILY),
    (dict(probe_ccs=["IT"], **MONTH), DAILY),
    (dict(), DAILY),
    (dict(axis_x="domain"), DOMAIN),
    # hourly buckets, inputs, categories, blocking types, OONI Run links: fastpath
    (dict(axis_x="measurement_start_day", time_grain="hour", since=D(2024, 1, 1),
          until=D(2024, 1, 3)), None),
    (dict(axis_x="measurement_start_day", input="https://x.org/", **MONTH), None),
    (dict(axis_x="input", **MONTH), None),
    (dict(axis_x="probe_cc", category_codes=["NEWS"], **MONTH), None),
    (dict(axis_x="blocking_type", **MONTH), None),
    (dict(axis_x="probe_cc", ooni_run_link_ids=[7], **MONTH), None),
])
def test_which_rollup_answers(kw, table):
    a = aq.make(**kw)
    assert aq.plan(a).rollup == table
    assert aq.plan(a, rollups=False) == aq.Plan(None, raw=((a.since, a.until),))
    s, _ = aq.build(a)
    assert (f"FROM {table}" in s) if table else ("fastpath_daily" not in s)
    assert "fastpath_daily" not in aq.build(a, rollups=False)[0]


def test_whole_days_come_from_the_rollup_alone():
    p = aq.plan(aq.make(axis_x="probe_cc", **MONTH))
    assert p == aq.Plan(DAILY, (DAY(2024, 1, 1), DAY(2024, 2, 1)), ())
    s, params = aq.build(aq.make(axis_x="probe_cc", **MONTH))
    assert "fastpath.measurement_start_time" not in s and "UNION" not in s
    assert params == {"first_day": DAY(2024, 1, 1), "end_day": DAY(2024, 2, 1)}
    assert "sum(n_measurement) AS measurement_count" in s


def test_partial_days_at_the_ends_come_from_fastpath():
    since, until = D(2024, 1, 1, 10, 5), D(2024, 1, 31, 10, 5)
    a = aq.make(axis_x="measurement_start_day", axis_y="probe_cc", time_grain="day",
                since=since, until=until)
    assert aq.plan(a) == aq.Plan(DAILY, (DAY(2024, 1, 2), DAY(2024, 1, 31)),
                                 ((since, D(2024, 1, 2)), (D(2024, 1, 31), until)))
    s, p = aq.build(a)
    assert s.count("UNION ALL") == 2 and s.count("FROM fastpath\n") == 2
    assert (p["since_0"], p["until_0"], p["since_1"], p["until_1"]) == (
        since, D(2024, 1, 2), D(2024, 1, 31), until)
    assert s.endswith("GROUP BY measurement_start_day, probe_cc\n"
                      "ORDER BY measurement_start_day, probe_cc")


@pytest.mark.parametrize("since, until, days, raw", [
    (None, None, (None, None), ()),
    (None, D(2024, 2, 1), (None, DAY(2024, 2, 1)), ()),
    (D(2024, 1, 1), None, (DAY(2024, 1, 1), None), ()),
    (None, D(2024, 2, 1, 6), (None, DAY(2024, 2, 1)), ((D(2024, 2, 1), D(2024, 2, 1, 6)),)),
    (D(2024, 1, 1, 6), None, (DAY(2024, 1, 2), None), ((D(2024, 1, 1, 6), D(2024, 1, 2)),)),
    (D(2024, 1, 1, 6), D(2024, 1, 2, 6), (DAY(2024, 1, 2), DAY(2024, 1, 2)), "fastpath"),
    (D(2024, 1, 1), D(2024, 1, 1, 12), None, "fastpath"),
    (D(2024, 1, 1, 1), D(2024, 1, 1, 12), None, "fastpath"),
])
def test_windows(since, until, days, raw):
    p = aq.plan(aq.make(axis_x="probe_cc", since=since, until=until))
    if raw == "fastpath":  # no whole day: fastpath for all of it
        assert p == aq.Plan(None, raw=((since, until),))
    else:
        assert p == aq.Plan(DAILY, days, raw)


@pytest.mark.parametrize("grain, expr", [
    ("day", "day AS measurement_start_day"),
    ("week", "toStartOfWeek(day, 0) AS measurement_start_day"),
    ("month", "toStartOfMonth(day) AS measurement_start_day"),
    ("year", "toStartOfYear(day) AS measurement_start_day"),
])
def test_time_buckets_on_the_rollup(grain, expr):
    a = aq.make(axis_x="measurement_start_day", since=D(2023, 1, 1), until=D(2025, 6, 1),
                time_grain=grain)
    assert expr in aq.build(a)[0]


def test_filters_on_the_rollup():
    a = aq.make(probe_ccs=["IT"], probe_asns=[3269, 1], test_names=["web_connectivity"],
                domains=["twitter.com"], **MONTH)
    s, p = aq.build(a)
    for col in ("probe_cc", "probe_asn", "test_name", "domain"):
        assert f"{DOMAIN}.{col} IN %({col})s" in s
    assert p["probe_asn"] == [1, 3269]


def test_rebuild_recounts_the_days_from_fastpath_final():
    from oonibackend.storage import rollups

    stmts = rollups.rebuild_statements([dt.date(2024, 1, 3), dt.date(2024, 1, 1)])
    assert [s.split("\n")[0] for s, _, _ in stmts] == [
        "ALTER TABLE fastpath_daily DELETE WHERE day IN %(days)s",
        "INSERT INTO fastpath_daily (day, probe_cc, probe_asn, test_name, n_anomaly, "
        "n_confirmed, n_failure, n_ok, n_measurement)",
        "ALTER TABLE fastpath_daily_domain DELETE WHERE day IN %(days)s",
        "INSERT INTO fastpath_daily_domain (day, probe_cc, probe_asn, test_name, domain, "
        "n_anomaly, n_confirmed, n_failure, n_ok, n_measurement)",
    ]
    _, params, settings = stmts[1]
    assert "FROM fastpath FINAL" in stmts[1][0]
    assert params["days"] == [dt.date(2024, 1, 1), dt.date(2024, 1, 3)]
    assert (params["since"], params["until"]) == (D(2024, 1, 1), D(2024, 1, 4))
    assert settings["insert_deduplicate"] == 0  # a recount equal to an old block is kept
    assert stmts[0][2]["mutations_sync"] == 2
