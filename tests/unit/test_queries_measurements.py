"""The pure parts of the measurement routes: parameter parsing, SQL builders, answer shapes."""

from __future__ import annotations

import datetime as dt
import urllib.parse

import pytest
from multidict import MultiDict

from oonibackend import validate
from oonibackend.errors import APIError
from oonibackend.queries import measurements as mq
from oonibackend.routes.measurements import parse_list_query
from oonibackend.routes.params import Query
from oonibackend.storage.sql import render

TODAY = dt.datetime(2024, 3, 10)


def parse(qs: str) -> mq.ListQuery:
    return parse_list_query(Query(MultiDict(urllib.parse.parse_qsl(qs))), TODAY)


def status_of(qs: str) -> int:
    with pytest.raises(APIError) as e:
        parse(qs)
    return e.value.status


# ---- parsing --------------------------------------------------------------------------------


def test_default_window_is_30_days_before_tomorrow():
    lq = parse("")
    assert (lq.since, lq.until) == (dt.datetime(2024, 2, 10), dt.datetime(2024, 3, 11))
    assert (lq.limit, lq.offset, lq.order, lq.order_by) == (100, 0, "desc",
                                                            "measurement_start_time")


def test_since_defaults_to_30_days_before_until():
    lq = parse("until=2021-07-10")
    assert (lq.since, lq.until) == (dt.datetime(2021, 6, 10), dt.datetime(2021, 7, 10))
    assert parse("since=2021-07-01").until == dt.datetime(2024, 3, 11)


def test_report_id_search_is_unbounded_unless_dated():
    rid = "20210709T004340Z_webconnectivity_MY_4818_n1_YCM7J9mGcEHds2K3"
    assert (parse(f"report_id={rid}").since, parse(f"report_id={rid}").until) == (None, None)
    lq = parse(f"report_id={rid}&since=2021-07-09")
    assert (lq.since, lq.until) == (dt.datetime(2021, 7, 9), None)


def test_lists_and_normalisation():
    lq = parse("probe_cc=it,CH&probe_asn=AS3269,13030&test_name=signal,telegram"
               "&software_version=3.19.2,3.7.0&ooni_run_link_id=1,2&category_code=news")
    assert lq.probe_ccs == ("IT", "CH") and lq.probe_asns == (3269, 13030)
    assert lq.test_names == ("signal", "telegram")
    assert lq.software_versions == ("3.19.2", "3.7.0") and lq.ooni_run_link_ids == (1, 2)
    assert lq.category_codes == ("NEWS",)


def test_flags_are_tristate():
    lq = parse("anomaly=true&confirmed=False&failure=")
    assert (lq.anomaly, lq.confirmed, lq.failure) == (True, False, None)


def test_input_overrides_domain_and_category():
    lq = parse("input=https://x.org/&domain=y.org&category_code=NEWS")
    assert (lq.input, lq.domains, lq.category_codes) == ("https://x.org/", (), ())


@pytest.mark.parametrize("qs,status", [
    ("probe_cc=ZZ", 403), ("probe_cc=zz", 403), ("probe_asn=AS0", 403),
    ("probe_asn=AS1,0", 403),
    ("limit=101", 400), ("limit=0", 400), ("limit=-5", 400), ("offset=-1", 400),
    ("order=up", 400), ("order_by=scores", 400), ("test_name=a;b", 400),
    ("ooni_run_link_id=-1", 400), ("ooni_run_link_id=99999999999999999999", 400),
    ("since=tomorrow", 400), ("report_id=short", 400), ("failure=perhaps", 400),
])
def test_refusals(qs, status):
    assert status_of(qs) == status


def test_order_is_case_insensitive():
    assert parse("order=ASC").order == "asc"


# ---- SQL ------------------------------------------------------------------------------------


def test_list_sql_common_query_reads_in_key_order_without_joins():
    sql, params = mq.list_sql(parse("limit=50&failure=false&order=desc&probe_cc=IT"))
    assert "citizenlab" not in sql and "JOIN" not in sql
    assert sql.count("PREWHERE measurement_start_time > %(since)s AND "
                     "measurement_start_time <= %(until)s") == 2
    order = ("ORDER BY measurement_start_time DESC, report_id DESC, input DESC, "
             "measurement_uid DESC")
    assert sql.count(order) == 2
    assert "FROM fastpath FINAL" in sql and "msm_failure = 'f'" in sql
    assert "probe_cc = %(probe_cc)s" in sql and params["probe_cc"] == "IT"
    assert "probe_asn != 0" in sql and "probe_cc != 'ZZ'" not in sql
    # phase 1 over-fetches to make up for duplicates, phase 2 pages
    assert (params["candidates"], params["limit"], params["offset"]) == (100, 50, 0)
    assert sql.endswith("LIMIT %(limit)s OFFSET %(offset)s")


def test_list_sql_candidates_cover_the_offset():
    _, params = mq.list_sql(parse("limit=5&offset=40"))
    assert params["candidates"] == 40 + 5 + mq.MIN_SLACK


def test_list_sql_defaults_exclude_unknown_country_and_network():
    sql, _ = mq.list_sql(parse(""))
    assert "probe_cc != 'ZZ'" in sql and "probe_asn != 0" in sql


def test_list_sql_lists_use_in():
    sql, params = mq.list_sql(parse("probe_cc=IT,CH&test_name=signal,telegram"))
    assert "probe_cc IN %(probe_cc)s" in sql and params["probe_cc"] == ["IT", "CH"]
    assert "test_name IN %(test_name)s" in sql


def test_list_sql_category_is_a_semi_join():
    sql, params = mq.list_sql(parse("category_code=NEWS"))
    assert "input IN (SELECT url FROM citizenlab WHERE category_code = %(category_code)s)" \
        in sql and "JOIN" not in sql


def test_list_sql_other_orderings_break_ties_by_time():
    sql, _ = mq.list_sql(parse("order_by=probe_cc&order=asc"))
    assert "ORDER BY probe_cc ASC, measurement_start_time ASC, measurement_uid ASC" in sql


def test_list_sql_report_id_without_window_has_no_prewhere():
    rid = "20210709T004340Z_webconnectivity_MY_4818_n1_YCM7J9mGcEHds2K3"
    sql, params = mq.list_sql(parse(f"report_id={rid}"))
    assert "PREWHERE" not in sql and params["report_id"] == rid


def test_hostile_values_stay_literals():
    sql, params = mq.list_sql(parse("input=x' OR 1=1 --&software_version=a\\'b"))
    rendered = render(sql, params)
    assert "input = 'x\\' OR 1=1 --'" in rendered
    assert "software_version = 'a\\\\\\'b'" in rendered


# ---- answer shapes --------------------------------------------------------------------------


ROW = {"measurement_uid": "20240101000002.422281_TW_webconnectivity_55232ce980f563d5",
       "report_id": "20231231T221448Z_webconnectivity_TW_18182_n1_zBswL4awQc3qUCnU",
       "input": "", "probe_cc": "TW", "probe_asn": 18182, "test_name": "web_connectivity",
       "test_start_time": dt.datetime(2023, 12, 31, 22, 14, 47),
       "measurement_start_time": dt.datetime(2024, 1, 1, 0, 0, 1),
       "anomaly": "t", "confirmed": "f", "msm_failure": "f",
       "scores": '{"blocking_general":1.0}', "is_verified": "u"}


def test_list_item():
    item = mq.list_item(ROW, "https://api.ooni.io/")
    assert item == {
        "measurement_uid": ROW["measurement_uid"],
        "measurement_url": "https://api.ooni.io/api/v1/raw_measurement?measurement_uid="
                           + ROW["measurement_uid"],
        "report_id": ROW["report_id"], "probe_cc": "TW", "probe_asn": "AS18182",
        "test_name": "web_connectivity",
        "measurement_start_time": dt.datetime(2024, 1, 1, 0, 0, 1),
        "input": None, "anomaly": True, "confirmed": False, "failure": False,
        "scores": {"blocking_general": 1.0}, "verification_status": "unverified"}
    assert mq.list_item(dict(ROW, scores="not json"), "/")["scores"] == {}
    assert mq.list_item(dict(ROW, is_verified="f"), "/")["verification_status"] == "failed"


def test_page_metadata_legacy_rules():
    # three full pages, then an empty fourth one
    assert mq.page_metadata(200, 100, 100, 0.5, "next") == {
        "offset": 200, "limit": 100, "count": -1, "pages": -1, "current_page": 3,
        "next_url": "next", "query_time": 0.5}
    assert mq.page_metadata(300, 100, 0, 0.5, None) == {
        "offset": 300, "limit": 100, "count": 300, "pages": 3, "current_page": 4,
        "next_url": None, "query_time": 0.5}
    assert mq.page_metadata(0, 100, 0, 0.1, None) == {
        "offset": 0, "limit": 100, "count": 0, "pages": 0, "current_page": 1,
        "next_url": None, "query_time": 0.1}
    assert mq.page_metadata(10, 3, 2, 0.1, None)["current_page"] == 5  # ceil(10/3)+1


def test_next_url_keeps_every_argument():
    args = [("probe_cc", "IT"), ("limit", "50"), ("data", "x y"), ("probe_cc", "CH")]
    assert mq.next_url("https://api.ooni.io/", args, 0, 50) == (
        "https://api.ooni.io/api/v1/measurements?probe_cc=IT&limit=50&data=x+y&probe_cc=CH"
        "&offset=50")
    assert mq.next_url("https://x/", [("offset", "50"), ("offset", "7")], 50, 100) == \
        "https://x/api/v1/measurements?offset=150&limit=100"


def test_meta_object_keeps_scores_a_string_and_asn_an_int():
    obj = mq.meta_object(ROW, "NEWS")
    assert obj["scores"] == '{"blocking_general":1.0}' and obj["probe_asn"] == 18182
    assert (obj["anomaly"], obj["confirmed"], obj["failure"]) == (True, False, False)
    assert obj["category_code"] == "NEWS" and obj["input"] == ""
    assert obj["verification_status"] == "unverified"
    assert mq.meta_object(dict(ROW, is_verified="t"), None)["verification_status"] == "verified"


# ---- one measurement ------------------------------------------------------------------------


def test_ids_times():
    assert mq.uid_time(ROW["measurement_uid"]) == dt.datetime(2024, 1, 1, 0, 0, 2)
    assert mq.uid_time("temp-id-999999999999") is None
    assert mq.report_id_time(ROW["report_id"]) == dt.datetime(2023, 12, 31, 22, 14, 48)
    assert mq.report_id_time("20231399T221448Z_x") is None


def test_meta_by_uid_looks_near_the_uid_time_first():
    (hinted, hp), (full, fp) = mq.meta_by_uid(ROW["measurement_uid"])
    assert "PREWHERE" in hinted and "PREWHERE" not in full
    assert (hp["lo"], hp["hi"]) == (dt.datetime(2023, 12, 31, 0, 0, 2),
                                    dt.datetime(2024, 1, 1, 1, 0, 2))
    assert fp == {"uid": ROW["measurement_uid"]}
    assert "ORDER BY measurement_uid, update_time DESC" in full
    assert len(mq.meta_by_uid("temp-id-9999999999")) == 1


def test_meta_by_report_without_input_means_empty_input():
    lookups = mq.meta_by_report(ROW["report_id"], None)
    assert all(p["input"] == "" for _, p in lookups) and len(lookups) == 2


@pytest.mark.parametrize("uid,ok", [
    (ROW["measurement_uid"], True), ("temp-id-999999999999999999", True),
    ("short", False), ("x" * 101, False), ("../../etc/passwd", False),
    ("20240101000002.422281_TW_web%2F", False), ("a b c d e f g h", False),
])
def test_safe_ids(uid, ok):
    assert validate.is_measurement_uid(uid) is ok


def test_feedback_sql():
    sql, params = mq.feedback_sql("uid1234567", None)
    assert "FROM msmt_feedback FINAL" in sql and params == {"uid": "uid1234567", "account": ""}
