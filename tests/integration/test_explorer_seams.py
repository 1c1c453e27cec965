"""Seams between Explorer and the aggregation routes (docs/api.md §2.8), against the real
server and the read fixture (tests/readdata.py):
* `since=undefined&until=undefined` (a chart's first render, before the page sets its dates)
  gets legacy's cheap 200 `{"error", "v": 0}`, never cached, instead of an all-time query;
* the aggregation CSV is `Content-Type: text/csv`, exactly;
* dates without zero padding (`2021-7-9`), which legacy's dateutil accepted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Backend
from tests.readcalls import get_raw as get


def ok_json(backend: Backend, path: str) -> Any:
    status, _, body = get(backend, path)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("query", [
    # the country page's blocked-categories chart and websites grid, the domain page's chart
    "probe_cc=IT&since=undefined&until=undefined&test_name=web_connectivity"
    "&axis_x=category_code",
    "axis_y=domain&axis_x=measurement_start_day&probe_cc=IT&since=undefined&until=undefined"
    "&test_name=web_connectivity&time_grain=day",
    "axis_x=measurement_start_day&axis_y=probe_cc&test_name=web_connectivity"
    "&domain=twitter.com&since=undefined&until=undefined&time_grain=day",
    "probe_cc=IT&since=2024-01-01&until=undefined",
])
def test_undefined_dates_get_legacys_cheap_error(read_backend, query):
    status, headers, body = get(read_backend, "/api/v1/aggregation?" + query)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-cache"  # not stored by Nginx as the answer
    doc = json.loads(body)
    assert doc["v"] == 0 and "undefined" in doc["error"] and "result" not in doc


def test_routes_with_a_default_window_treat_undefined_as_absent(read_backend):
    # /api/v1/measurements (30 days by default) and the /api/_/ statistics (no dates) answer.
    a = ok_json(read_backend, "/api/v1/measurements?limit=5&since=undefined&until=undefined")
    b = ok_json(read_backend, "/api/v1/measurements?limit=5")
    assert a["results"] == b["results"]
    assert ok_json(read_backend, "/api/_/country_overview?probe_cc=IT&since=undefined"
                                 "&until=undefined")["measurement_count"] == 87
    assert "results" in ok_json(read_backend, "/api/v1/aggregation/observations?"
                                              "since=undefined&until=undefined")


def test_aggregation_csv_is_exactly_text_csv(read_backend):
    for extra in ("", "&download=true", "&axis_x=probe_cc"):
        status, headers, _ = get(read_backend, "/api/v1/aggregation?probe_cc=IT"
                                               "&since=2024-01-01&until=2024-02-01&format=csv"
                                               + extra)
        assert status == 200 and headers["Content-Type"] == "text/csv"


@pytest.mark.parametrize("path", [
    "/api/v1/aggregation?since={since}&until={until}&axis_x=measurement_start_day",
    "/api/v1/aggregation?since={since}&until={until}&probe_cc=IT",
    "/api/v1/measurements?since={since}&until={until}&limit=100",
    "/api/v1/torsf_stats?since={since}&until={until}",
])
def test_dates_without_zero_padding(read_backend, path):
    loose = ok_json(read_backend, path.format(since="2021-7-8", until="2021-7-10"))
    padded = ok_json(read_backend, path.format(since="2021-07-08", until="2021-07-10"))
    for doc in (loose, padded):
        doc.pop("db_stats", None)
        doc.get("metadata", {}).pop("query_time", None)
    assert loose == padded


def test_category_code_listing_with_legacys_dates(read_backend):
    # Legacy's test_list_measurements_filter_category_code sends `2021-7-9`.
    doc = ok_json(read_backend, "/api/v1/measurements?category_code=NEWS&since=2021-7-8"
                                "&until=2021-7-10&limit=100")
    padded = ok_json(read_backend, "/api/v1/measurements?category_code=NEWS"
                                   "&since=2021-07-08&until=2021-07-10&limit=100")
    assert doc["results"] == padded["results"]
