"""OONI Run links: the legacy draft routes (docs/api.md §3.2, test_oonirun.py) and the v2
contract probe-cli uses (docs/clients.md Probe §7), over the real server and embedded database."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.error
import urllib.request

import pytest

from oonibackend.accounts.tokens import session_token
from oonibackend.storage.http import HTTPDatabase
from tests.conftest import Backend

SECRET = "r" * 32


def token(account: str, role: str = "user") -> str:
    now = int(time.time())
    return session_token(account * 32, role, now, SECRET, now, 1, 1)


TOKENS = {"alice": token("a"), "bob": token("b"), "admin": token("c", "admin"), None: None}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("oonirun"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET, "test_list_refresh": 1.0},
        "server": {"collector_id": "X"},
    })
    b.start()
    yield b
    b.stop()


def call(api, method, path, body=None, who=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if TOKENS[who]:
        h["Authorization"] = "Bearer " + TOKENS[who]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def descriptor(**kw):
    d = {"name": "Social media", "name_intl": {"it": "Social"},
         "short_description": "short", "short_description_intl": {"it": "breve"},
         "description": "long", "description_intl": {"it": "lungo"},
         "icon": "myicon", "author": "ooni",
         "nettests": [{"test_name": "web_connectivity",
                       "inputs": ["https://example.com/", "https://ooni.org/"],
                       "options": {"HTTP3Enabled": True}}]}
    d.update(kw)
    return d


# ---- draft routes -----------------------------------------------------------------------------

def test_draft_create_fetch_version_translate_archive(api):
    assert call(api, "POST", "/api/_/ooni_run/create", descriptor(name=""), "alice") == \
        (400, {"error": "'name' field must not be empty", "err_str": "err_request_params"})
    status, body = call(api, "POST", "/api/_/ooni_run/create",
                        descriptor(name_intl={"it": ""}), "alice")
    assert status == 400 and body["err_str"] == "err_empty_translation_field"
    status, body = call(api, "POST", "/api/_/ooni_run/create", descriptor(), "alice")
    assert status == 200 and body["v"] == 1
    link = body["ooni_run_link_id"]
    assert str(link).endswith("00")  # collector_id "X" is not numeric

    status, fetched = call(api, "GET", f"/api/_/ooni_run/fetch/{link}")
    assert status == 200
    assert sorted(fetched) == ["archived", "descriptor", "descriptor_creation_time", "mine",
                               "translation_creation_time", "v"]
    assert fetched["mine"] is False and fetched["archived"] is False
    assert fetched["descriptor"]["name"] == "Social media"
    assert fetched["descriptor_creation_time"].endswith("Z")
    same = call(api, "GET", f"/api/_/ooni_run/fetch/{link}?creation_time="
                + fetched["descriptor_creation_time"])[1]
    assert same["descriptor"] == fetched["descriptor"]
    assert call(api, "GET", f"/api/_/ooni_run/fetch/{link}", who="alice")[1]["mine"] is True

    # A new input: a new version, same link.
    more = descriptor(nettests=[{"test_name": "web_connectivity",
                                 "inputs": ["https://example.com/", "https://x.org/"]}])
    assert call(api, "POST", f"/api/_/ooni_run/create?ooni_run_link_id={link}", more,
                "alice") == (200, {"v": 1, "ooni_run_link_id": link})
    v2 = call(api, "GET", f"/api/_/ooni_run/fetch/{link}", who="alice")[1]
    assert v2["descriptor_creation_time"] > fetched["descriptor_creation_time"]
    assert v2["translation_creation_time"] > fetched["translation_creation_time"]
    # Somebody else cannot update it.
    assert call(api, "POST", f"/api/_/ooni_run/create?ooni_run_link_id={link}", more,
                "bob") == (400, {"error": "OONIRun descriptor not found"})
    # A translation-only change keeps the version.
    call(api, "POST", f"/api/_/ooni_run/create?ooni_run_link_id={link}",
         {**more, "name_intl": {"it": "Social (it)"}}, "alice")
    v2b = call(api, "GET", f"/api/_/ooni_run/fetch/{link}")[1]
    assert v2b["descriptor_creation_time"] == v2["descriptor_creation_time"]
    assert v2b["translation_creation_time"] > v2["translation_creation_time"]
    assert v2b["descriptor"]["name_intl"] == {"it": "Social (it)"}

    listed = call(api, "GET", f"/api/_/ooni_run/list?ooni_run_link_id={link}")[1]["descriptors"]
    assert len(listed) == 2 and sorted(listed[0]) == sorted(
        ["archived", "author", "descriptor_creation_time", "icon", "mine", "name",
         "ooni_run_link_id", "short_description", "translation_creation_time"])
    latest = call(api, "GET", f"/api/_/ooni_run/list?ooni_run_link_id={link}&only_latest=true"
                  )[1]["descriptors"]
    assert len(latest) == 1

    assert call(api, "POST", f"/api/_/ooni_run/archive/{link}", who="alice") == (200, {"v": 1})
    q = f"/api/_/ooni_run/list?ooni_run_link_id={link}"
    assert len(call(api, "GET", q + "&include_archived=true")[1]["descriptors"]) == 2
    assert call(api, "GET", q)[1]["descriptors"] == []
    assert call(api, "GET", q + "&include_archived=false")[1]["descriptors"] == []
    assert call(api, "GET", f"/api/_/ooni_run/fetch/{link}")[1]["archived"] is True


def test_draft_fetch_unknown_link(api):
    assert call(api, "GET", "/api/_/ooni_run/fetch/999999999999999")[0] == 404
    assert call(api, "GET", "/api/_/ooni_run/fetch/abc")[0] == 400


def test_draft_create_requires_login(api):
    assert call(api, "POST", "/api/_/ooni_run/create", descriptor())[0] == 401


# ---- v2 ----------------------------------------------------------------------------------------

PROBE_BODY = {"is_charging": True, "run_type": "manual", "probe_cc": "IT",
              "probe_asn": "AS30722", "network_type": "wifi", "website_category_codes": []}


def test_v2_revisions_and_the_probe_s_engine_descriptor(api):
    body = descriptor(nettests=[{"test_name": "web_connectivity", "inputs": ["https://a.org/"],
                                 "is_background_run_enabled_default": True}])
    status, link = call(api, "POST", "/api/v2/oonirun/links", body, "alice")
    assert status == 200 and link["revision"] == "1" and link["is_mine"] is True
    assert link["expiration_date"] is None and link["is_expired"] is False
    lid = link["oonirun_link_id"]
    assert isinstance(lid, str)

    status, eng = call(api, "POST", f"/api/v2/oonirun/links/{lid}/engine-descriptor/latest",
                       PROBE_BODY)
    assert status == 200
    assert (eng["name"], eng["author"], eng["revision"]) == ("Social media", "ooni", "1")
    assert eng["date_created"].endswith("Z")
    test = eng["nettests"][0]
    assert test["inputs"] == ["https://a.org/"]
    # Both spellings of each flag, for old and new probes alike.
    assert test["is_background_run_enabled"] is True
    assert test["is_background_run_enabled_default"] is True
    assert test["is_manual_run_enabled"] is False and test["is_manual_run_enabled_default"] is False

    # Texts only: same revision. Nettests: a new one.
    same = call(api, "PUT", f"/api/v2/oonirun/links/{lid}", {**body, "name": "Renamed"},
                "alice")[1]
    assert same["revision"] == "1" and same["name"] == "Renamed"
    changed = {**body, "nettests": [{"test_name": "signal"}]}
    newer = call(api, "PUT", f"/api/v2/oonirun/links/{lid}", changed, "alice")[1]
    assert newer["revision"] == "2"
    assert call(api, "GET", f"/api/v2/oonirun/links/{lid}/revisions")[1] == \
        {"revisions": ["2", "1"]}
    old = call(api, "POST", f"/api/v2/oonirun/links/{lid}/engine-descriptor/1", PROBE_BODY)[1]
    assert old["nettests"][0]["test_name"] == "web_connectivity" and old["revision"] == "1"
    assert call(api, "GET", f"/api/v2/oonirun/links/{lid}?revision=1")[1]["nettests"][0][
        "test_name"] == "web_connectivity"
    full = call(api, "GET", f"/api/v2/oonirun/links/{lid}/full-descriptor/latest")[1]
    assert full["revision"] == "2"
    # get and full-descriptor: date_created is the revision's, date_updated the link's.
    first = call(api, "GET", f"/api/v2/oonirun/links/{lid}/full-descriptor/1")[1]
    assert first["revision"] == "1" and first["date_created"] < full["date_created"]
    assert first["date_updated"] == full["date_updated"]
    listed = [x for x in call(api, "GET", "/api/v2/oonirun/links")[1]["oonirun_links"]
              if x["oonirun_link_id"] == lid][0]
    assert listed["revision"] == "2" and listed["date_created"] == first["date_created"]
    assert call(api, "POST", f"/api/v2/oonirun/links/{lid}/engine-descriptor/3",
                PROBE_BODY)[0] == 404

    # Only the owner or an admin edits.
    assert call(api, "PUT", f"/api/v2/oonirun/links/{lid}", changed, "bob")[0] == 403
    assert call(api, "PUT", f"/api/v2/oonirun/links/{lid}", {**changed, "name": "By admin"},
                "admin")[1]["name"] == "By admin"


def test_v2_links_expire_only_when_told_and_stay_visible(api):
    lid = call(api, "POST", "/api/v2/oonirun/links", descriptor(), "bob")[1]["oonirun_link_id"]
    mine = call(api, "GET", "/api/v2/oonirun/links?is_mine=true", who="bob")[1]["oonirun_links"]
    assert lid in {link["oonirun_link_id"] for link in mine}
    past = {**descriptor(), "expiration_date": "2020-01-01T00:00:00Z"}
    expired = call(api, "PUT", f"/api/v2/oonirun/links/{lid}", past, "bob")[1]
    assert expired["is_expired"] is True and expired["revision"] == "1"
    eng = call(api, "POST", f"/api/v2/oonirun/links/{lid}/engine-descriptor/latest",
               PROBE_BODY)
    assert eng[0] == 200 and eng[1]["is_expired"] is True

    def listed(query: str) -> set[str]:
        return {link["oonirun_link_id"]
                for link in call(api, "GET", "/api/v2/oonirun/links" + query)[1][
                    "oonirun_links"]}

    # As OONI's list: expired links only with is_expired=true, which lists the others too.
    fresh = call(api, "POST", "/api/v2/oonirun/links", descriptor(), "bob")[1]["oonirun_link_id"]
    assert {lid, fresh} <= listed("?is_expired=true")
    for query in ("", "?is_expired=false"):
        assert fresh in listed(query) and lid not in listed(query)


@pytest.mark.parametrize("body", [
    {**descriptor(), "nettests": []},
    {**descriptor(), "nettests": [{"test_name": "Web Connectivity"}]},
    {**descriptor(), "nettests": [{"test_name": "x", "inputs": "https://a.org/"}]},
    {**descriptor(), "nettests": [{"test_name": "x", "is_manual_run_enabled": "yes"}]},
    {**descriptor(), "color": "red"},
    {**descriptor(), "expiration_date": "soon"},
    "not an object",
    {k: v for k, v in descriptor().items() if k != "author"},
    {**descriptor(), "nettests": [{"test_name": "web_connectivity", "inputs": ["https://a.org/"],
                                   "targets_name": "websites_list_prioritized"}]},
    {**descriptor(), "nettests": [{"test_name": "web_connectivity", "targets_name": "mine"}]},
    {**descriptor(), "nettests": [{"test_name": "web_connectivity",
                                   "inputs": ["https://a.org/", "https://b.org/"],
                                   "inputs_extra": [{"category_code": "NEWS"}]}]},
])
def test_v2_bad_descriptors_are_400(api, body):
    status, err = call(api, "POST", "/api/v2/oonirun/links", body, "alice")
    assert status == 400 and isinstance(err["error"], str)
    # Edits are checked the same way.
    lid = call(api, "POST", "/api/v2/oonirun/links", descriptor(), "alice")[1]["oonirun_link_id"]
    assert call(api, "PUT", f"/api/v2/oonirun/links/{lid}", body, "alice")[0] == 400


@pytest.mark.parametrize("body,headers,message", [
    ({**PROBE_BODY, "run_type": "always"}, {}, "Invalid run_type: timed or manual"),
    ({**PROBE_BODY, "network_type": "5g"}, {}, "Invalid network_type"),
    ({k: v for k, v in PROBE_BODY.items() if k != "is_charging"}, {}, "Missing is_charging"),
    ({**PROBE_BODY, "probe_asn": "ASX"}, {}, "Invalid probe_asn"),
    (None, {}, "Invalid request body"),
    (PROBE_BODY, {"UserAgent": "ooniprobe/3.20"}, "Invalid UserAgent header"),
])
def test_v2_engine_descriptor_refuses_what_oonis_service_refuses(api, body, headers, message):
    lid = call(api, "POST", "/api/v2/oonirun/links", descriptor(), "alice")[1]["oonirun_link_id"]
    status, err = call(api, "POST", f"/api/v2/oonirun/links/{lid}/engine-descriptor/latest",
                       body, headers=headers)
    assert status == 400 and err["error"].startswith(message)
    # Checked before the lookup, as there.
    assert call(api, "POST", "/api/v2/oonirun/links/123/engine-descriptor/latest", body,
                headers=headers)[0] == 400
    ua = {"UserAgent": "ooniprobe-cli,3.20.0,linux,ooniprobe-engine,3.20.0,3.20.0"}
    assert call(api, "POST", f"/api/v2/oonirun/links/{lid}/engine-descriptor/latest",
                PROBE_BODY, headers=ua)[0] == 200


def test_v2_unknown_and_malformed_ids(api):
    assert call(api, "GET", "/api/v2/oonirun/links/123")[0] == 404
    assert call(api, "GET", "/api/v2/oonirun/links/../etc")[0] in (400, 404)
    assert call(api, "POST", "/api/v2/oonirun/links/abc/engine-descriptor/latest",
                PROBE_BODY)[0] == 400
    assert call(api, "POST", "/api/v2/oonirun/links", descriptor())[0] == 401
    lid = call(api, "POST", "/api/v2/oonirun/links", descriptor(), "alice")[1]["oonirun_link_id"]
    assert call(api, "GET", f"/api/v2/oonirun/links/{lid}/full-descriptor/abc") == (
        400, {"error": "Invalid revision: latest or a number"})
    assert call(api, "GET", f"/api/v2/oonirun/links/{lid}/full-descriptor/9") == (
        404, {"error": "Revision not found"})


# ---- dynamic lists -----------------------------------------------------------------------------

CITIZENLAB = [("a.org", "https://a.org/", "ZZ", "NEWS"), ("b.org", "https://b.org/", "ZZ", "HUMR"),
              ("c.org", "https://c.org/", "ZZ", "NEWS"), ("d.it", "https://d.it/", "it", "NEWS"),
              ("e.fr", "https://e.fr/", "fr", "NEWS")]
RULES = [{"category_code": "*", "cc": "*", "domain": "*", "url": "*", "priority": 10},
         {"category_code": "*", "cc": "*", "domain": "c.org", "url": "*", "priority": 1000}]


def _seed(api, table: str, rows: list[dict]) -> None:
    async def go() -> None:
        db = HTTPDatabase(api.cfg())
        try:
            await db.insert(table, rows)
        finally:
            await db.close()

    asyncio.run(go())


def _eventually(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (result := fn()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return result


def test_v2_websites_list_prioritized_is_check_in_s_list_for_the_probe(api):
    _seed(api, "citizenlab", [dict(zip(("domain", "url", "cc", "category_code"), r, strict=True))
                              for r in CITIZENLAB])
    _seed(api, "url_priorities", [dict(r, sign=1) for r in RULES])
    body = descriptor(nettests=[{"test_name": "web_connectivity",
                                 "targets_name": "websites_list_prioritized",
                                 "inputs": None, "inputs_extra": None},
                                {"test_name": "signal"}])
    status, link = call(api, "POST", "/api/v2/oonirun/links", body, "alice")
    assert status == 200
    lid = link["oonirun_link_id"]
    # Until a probe asks, a dynamic list has no inputs (the web UI can send the link back).
    shown = call(api, "GET", f"/api/v2/oonirun/links/{lid}")[1]["nettests"][0]
    assert (shown["inputs"], shown["inputs_extra"], shown["targets_name"]) == (
        None, None, "websites_list_prioritized")
    assert call(api, "PUT", f"/api/v2/oonirun/links/{lid}", {**body, "nettests": link["nettests"]},
                "alice")[1]["revision"] == "1"

    def engine(asn: str = "AS9999", **kw) -> dict:
        status, eng = call(api, "POST", f"/api/v2/oonirun/links/{lid}/engine-descriptor/latest",
                           {**PROBE_BODY, "probe_cc": "IT", "probe_asn": asn, **kw})
        assert status == 200
        return eng

    eng = _eventually(lambda: engine()["nettests"][0]["inputs"] and engine())
    assert eng, "the URL-list snapshot never picked up the seeded rows"
    wc, signal = eng["nettests"]
    assert wc["targets_name"] == "websites_list_prioritized" and eng["revision"] == "1"
    # The super-prioritised URL first, then the table order; the IT list but not the FR one.
    assert wc["inputs"] == ["https://c.org/", "https://a.org/", "https://b.org/", "https://d.it/"]
    assert wc["inputs_extra"] == [{"category_code": c, "country_code": cc} for c, cc in (
        ("NEWS", "XX"), ("NEWS", "XX"), ("HUMR", "XX"), ("NEWS", "IT"))]
    assert signal["inputs"] == [] and signal["inputs_extra"] is None
    # The same list check-in gives this probe: one prioritization, shared.
    status, checkin = call(api, "POST", "/api/v1/check-in", {
        "probe_cc": "IT", "probe_asn": "AS9999", "run_type": "manual", "charging": True})
    assert status == 200
    assert [u["url"] for u in checkin["tests"]["web_connectivity"]["urls"]] == wc["inputs"]
    # Categories, as sent or lower-cased.
    news = engine(website_category_codes=["news"])["nettests"][0]
    assert news["inputs"] == ["https://c.org/", "https://a.org/", "https://d.it/"]
    assert {e["category_code"] for e in news["inputs_extra"]} == {"NEWS"}

    # Measured a lot from AS1234 this week: c.org drops to the end there, not elsewhere.
    _seed(api, "counters_asn_test_list", [{
        "week": dt.datetime.now(dt.UTC).replace(tzinfo=None), "probe_cc": "IT",
        "probe_asn": 1234, "input": "https://c.org/", "msmt_cnt": 10**6}])
    assert _eventually(lambda: engine("AS1234")["nettests"][0]["inputs"][-1] == "https://c.org/")
    assert engine("AS9999")["nettests"][0]["inputs"][0] == "https://c.org/"
    assert engine("1234", run_type="timed", is_charging=False)["nettests"][0]["inputs"][0] == \
        "https://a.org/"
