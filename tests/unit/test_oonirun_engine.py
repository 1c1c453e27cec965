"""engine-descriptor requests as OONI's service checks them, and dynamic lists filled in
(docs/current_services.md §7)."""

from __future__ import annotations

import pytest

from oonibackend.errors import Invalid, domain_status
from oonibackend.oonirun import engine

PROBE = {"is_charging": True, "run_type": "manual", "probe_cc": "it", "probe_asn": "AS30722",
         "network_type": "wifi", "website_category_codes": []}
UA = "ooniprobe-android,3.8.2,android,ooniprobe-engine,3.17.2,3.17.2_1"


def test_what_probe_cli_sends_is_accepted():
    req = engine.parse_request(PROBE, UA)
    assert (req.probe_cc, req.probe_asn, req.run_type, req.is_charging, req.category_codes) == (
        "IT", 30722, "manual", True, [])
    assert engine.parse_request({**PROBE, "probe_asn": "0"}).probe_asn == 0
    assert engine.parse_request({**PROBE, "website_category_codes": ["news", "GRP"]}
                                ).category_codes == ["NEWS", "GRP"]
    assert engine.parse_request({k: v for k, v in PROBE.items()
                                 if k != "website_category_codes"}).category_codes == []


@pytest.mark.parametrize("run_type,charging,limit", [
    ("manual", False, 9999), ("timed", True, 100), ("timed", False, 20), ("timed", 0, 20)])
def test_limits_are_check_in_s(run_type, charging, limit):
    req = engine.parse_request({**PROBE, "run_type": run_type, "is_charging": charging})
    assert req.url_limit == limit


@pytest.mark.parametrize("change,message", [
    ({"run_type": "sometimes"}, "Invalid run_type: timed or manual"),
    ({"network_type": "5g"}, "Invalid network_type"),
    ({"is_charging": "yes"}, "Invalid is_charging: a boolean"),
    ({"is_charging": None}, "Invalid is_charging: a boolean"),
    ({"probe_asn": "ASX"}, "Invalid probe_asn: AS<number>"),
    ({"probe_asn": 30722}, "Invalid probe_asn: AS<number>"),
    ({"probe_cc": "ITA"}, "Invalid probe_cc"),
    ({"website_category_codes": ["NE WS"]}, "Invalid category code"),
])
def test_bad_requests_are_400(change, message):
    with pytest.raises(Invalid) as e:
        engine.parse_request({**PROBE, **change})
    assert domain_status(e.value) == 400 and e.value.message.startswith(message)


@pytest.mark.parametrize("missing", ["run_type", "is_charging", "probe_cc", "probe_asn",
                                     "network_type"])
def test_required_fields(missing):
    with pytest.raises(Invalid, match=f"Missing {missing}"):
        engine.parse_request({k: v for k, v in PROBE.items() if k != missing})


@pytest.mark.parametrize("body", [None, [], "x"])
def test_the_body_is_an_object(body):
    with pytest.raises(Invalid, match="Invalid request body"):
        engine.parse_request(body)


@pytest.mark.parametrize("ua", ["", "ooniprobe", "a,b,c,d,e", UA + ",x",
                                "ooni probe,1,android,e,1,1", "a,1,andr;oid,e,1,1"])
def test_a_userAgent_header_must_have_six_fields(ua):
    with pytest.raises(Invalid, match="Invalid UserAgent header"):
        engine.parse_request(PROBE, ua)


def test_dynamic_lists_are_filled_in_and_others_kept():
    calls = []

    def lister(cc, asn, cats, limit):
        calls.append((cc, asn, list(cats), limit))
        return [{"url": "https://a.org/", "category_code": "NEWS", "country_code": "XX"},
                {"url": "https://b.it/", "category_code": "NEWS", "country_code": "IT"}]

    static = {"test_name": "signal", "inputs": [], "inputs_extra": None, "targets_name": None}
    dynamic = {"test_name": "web_connectivity", "inputs": None, "inputs_extra": None,
               "targets_name": "websites_list_prioritized", "options": {}}
    unknown = {**dynamic, "targets_name": "not_ours"}
    req = engine.parse_request({**PROBE, "run_type": "timed", "is_charging": False,
                                "website_category_codes": ["NEWS"]})
    out = engine.fill_targets([static, dynamic, unknown], req, lister)
    assert out[0] is static
    assert out[1]["inputs"] == ["https://a.org/", "https://b.it/"]
    assert out[1]["inputs_extra"] == [{"category_code": "NEWS", "country_code": "XX"},
                                      {"category_code": "NEWS", "country_code": "IT"}]
    assert out[1]["targets_name"] == "websites_list_prioritized" and out[1]["options"] == {}
    assert (out[2]["inputs"], out[2]["inputs_extra"]) == ([], [])
    assert calls == [("IT", 30722, ["NEWS"], 20)]
    assert dynamic["inputs"] is None  # the stored descriptor is not changed
