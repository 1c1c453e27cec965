"""Date parameters as legacy's dateutil accepted them, and the literal `undefined` where
legacy answered it with a cheap 200 error (docs/api.md §2.8)."""

from __future__ import annotations

import datetime as dt

import pytest
from multidict import MultiDict

from oonibackend import validate
from oonibackend.errors import APIError
from oonibackend.routes.params import UNDEFINED_STATUS, Query


@pytest.mark.parametrize("value,expected", [
    ("2021-7-9", dt.datetime(2021, 7, 9)),
    ("2021-07-9", dt.datetime(2021, 7, 9)),
    ("2021-12-1", dt.datetime(2021, 12, 1)),
    ("2021-7-9T5:06:07Z", dt.datetime(2021, 7, 9, 5, 6, 7)),
    ("2021-7-9 05:06", dt.datetime(2021, 7, 9, 5, 6)),
    ("2021-7-9T23:00:00+02:00", dt.datetime(2021, 7, 9, 21)),
    ("20210709", dt.datetime(2021, 7, 9)),  # ISO's basic form, as before
    ("20210709T050000Z", dt.datetime(2021, 7, 9, 5)),
])
def test_dates_without_zero_padding(value, expected):
    assert validate.date_time(value) == expected


@pytest.mark.parametrize("value", ["2021-7-32", "2021-13-1", "2021-0-9", "2021-7-9T",
                                   "2021-7-9X", "2021-7-9T25:00", "21-7-9", "2021-007-09",
                                   "2021/7/9"])
def test_bad_dates_are_still_400(value):
    with pytest.raises(APIError) as e:
        Query(MultiDict([("since", value)])).date("since")
    assert e.value.status == 400 and "since" in e.value.message


def test_undefined_is_absent_by_default():
    p = Query(MultiDict([("since", "undefined"), ("until", "2024-01-01")]))
    assert p.date("since") is None and p.date("until") == dt.datetime(2024, 1, 1)


@pytest.mark.parametrize("pairs", [
    [("since", "undefined")],
    [("since", " undefined ")],
    [("since", "2024-01-01"), ("since", "undefined")],
])
def test_undefined_is_legacys_cheap_error_when_asked(pairs):
    with pytest.raises(APIError) as e:
        Query(MultiDict(pairs)).date("since", legacy_undefined=True)
    assert e.value.status == UNDEFINED_STATUS == 200
    assert "since" in e.value.message and "undefined" in e.value.message


def test_legacy_undefined_leaves_other_values_alone():
    p = Query(MultiDict([("since", ""), ("until", "null"), ("x", "undefined")]))
    assert p.date("since", legacy_undefined=True) is None
    assert p.date("until", legacy_undefined=True) is None
    assert Query(MultiDict([("since", "2021-7-9")])).date(
        "since", legacy_undefined=True) == dt.datetime(2021, 7, 9)
