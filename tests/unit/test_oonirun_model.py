"""OONI Run descriptors: what makes a new revision, and flags every probe version understands."""

import datetime as dt

import pytest

from oonibackend.errors import Invalid, domain_status
from oonibackend.oonirun import model

BASE = {"name": "n", "author": "a", "icon": "i",
        "nettests": [{"test_name": "web_connectivity", "inputs": ["https://a.org/"]}]}


def test_texts_update_in_place_nettests_author_icon_make_a_new_revision():
    d = model.descriptor(BASE)
    assert not model.is_new_version(d, model.descriptor({**BASE, "name": "other",
                                                         "name_intl": {"it": "altro"}}))
    for change in ({"author": "b"}, {"icon": "j"},
                   {"nettests": [{"test_name": "signal"}]}):
        assert model.is_new_version(d, model.descriptor({**BASE, **change}))


@pytest.mark.parametrize("given,expected", [
    ({}, (False, False)),
    ({"is_manual_run_enabled": True}, (False, True)),
    ({"is_background_run_enabled_default": True}, (True, False)),
    ({"is_manual_run_enabled": True, "is_manual_run_enabled_default": False}, (False, False)),
])
def test_both_flag_spellings_are_emitted(given, expected):
    d = model.descriptor({**BASE, "nettests": [{"test_name": "x", **given}]})
    t = model.engine_nettests(d)[0]
    assert (t["is_background_run_enabled"], t["is_manual_run_enabled"]) == expected
    assert (t["is_background_run_enabled_default"], t["is_manual_run_enabled_default"]) == \
        expected


def test_rows_written_by_another_backend_get_both_flags_too():
    t = model.engine_nettests({"nettests": [{"test_name": "x", "is_manual_run_enabled": True}]})
    assert t[0]["is_manual_run_enabled_default"] is True and t[0]["inputs"] == []


def test_expiry_is_explicit_only():
    now = dt.datetime(2026, 1, 1)
    assert not model.is_expired(model.descriptor(BASE), False, now)
    d = model.descriptor({**BASE, "expiration_date": "2025-12-31"})
    assert d["expiration_date"] == "2025-12-31T00:00:00Z" and model.is_expired(d, False, now)
    assert model.is_expired(model.descriptor(BASE), True, now)


@pytest.mark.parametrize("bad", [
    {**BASE, "name": " "}, {**BASE, "name_intl": {"it": ""}}, {**BASE, "name_intl": {"../": "x"}},
    {**BASE, "nettests": [{"test_name": "x", "options": "x"}]},
    {**BASE, "nettests": [{"test_name": "x"}] * 101},
])
def test_invalid_descriptors(bad):
    with pytest.raises(Invalid):
        model.descriptor(bad)


def _with(test: dict) -> dict:
    return {**BASE, "nettests": [{"test_name": "web_connectivity", **test}]}


@pytest.mark.parametrize("bad,message", [
    ({k: v for k, v in BASE.items() if k != "author"}, "'author' field must not be empty"),
    ({**BASE, "author": " "}, "'author' field must not be empty"),
    (_with({"inputs": ["https://a.org/"], "inputs_extra": []}),
     "When provided, inputs_extra should be the same length as inputs"),
    (_with({"inputs_extra": [{"x": 1}]}),
     "When provided, inputs_extra should be the same length as inputs"),
    (_with({"targets_name": "websites_list_prioritized", "inputs": ["https://a.org/"]}),
     "When targets_name is provided, you can't provide inputs or inputs_extra"),
    (_with({"targets_name": "websites_list_prioritized", "inputs_extra": [{"x": 1}]}),
     "When provided, inputs_extra should be the same length as inputs"),
    (_with({"targets_name": "somebody_elses_list"}),
     "Invalid targets_name in nettests: one of websites_list_prioritized"),
])
def test_refused_as_oonis_service_refuses(bad, message):
    with pytest.raises(Invalid) as e:
        model.descriptor(bad)
    assert domain_status(e.value) == 400 and e.value.message == message


def test_dynamic_list_nettests_have_no_inputs_until_a_probe_asks():
    for empty in ({}, {"inputs": None, "inputs_extra": None}, {"inputs": [], "inputs_extra": []}):
        d = model.descriptor(_with({"targets_name": "websites_list_prioritized", **empty}))
        t = model.engine_nettests(d)[0]
        assert (t["inputs"], t["inputs_extra"], t["targets_name"]) == (
            None, None, "websites_list_prioritized")


def test_inputs_extra_are_kept_aligned_and_null_when_absent():
    d = model.descriptor(_with({"inputs": ["https://a.org/", "https://b.org/"],
                                "inputs_extra": [{"a": 1}, {"b": 2}]}))
    assert model.engine_nettests(d)[0]["inputs_extra"] == [{"a": 1}, {"b": 2}]
    assert model.engine_nettests(model.descriptor(BASE))[0]["inputs_extra"] is None
    assert list(model.engine_nettests(model.descriptor(BASE))[0])[:7] == [
        "test_name", "inputs", "options", "is_background_run_enabled_default",
        "is_manual_run_enabled_default", "targets_name", "inputs_extra"]


def test_rows_of_the_older_format_are_not_a_new_revision():
    old = {**model.descriptor(BASE)}
    old["nettests"] = [{**old["nettests"][0], "inputs_extra": []}]
    assert not model.is_new_version(old, model.descriptor(BASE))
