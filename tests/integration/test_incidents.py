"""Findings as Explorer uses them (docs/clients.md Explorer §1d): who sees what, who may change
what, server-side country and theme filters, slugs, and edits that do not overwrite each other."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from oonibackend.accounts.ids import account_id
from oonibackend.accounts.tokens import session_token
from tests.conftest import Backend

SECRET = "i" * 32
KEY = "CHANGEME"
ADMIN = "integtest@openobservatory.org"
USER = "nick@localhost.local"
OTHER = "other@example.org"


def token(email: str, role: str) -> str:
    now = int(time.time())
    return session_token(account_id(email, KEY), role, now, SECRET, now, 1, 1)


TOKENS = {"admin": token(ADMIN, "admin"), "user": token(USER, "user"),
          "other": token(OTHER, "user"), None: None}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("incidents"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET}, "accounts": {"hashing_key": KEY},
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


def finding(**kw):
    """What Explorer's findings form sends."""
    base = {"title": "Blocking of example.org in Italy", "short_description": "short",
            "text": "## Details\n<MAT link=...>", "reported_by": "Nick",
            "email_address": USER, "published": False, "start_time": "2020-01-01T00:00:00Z",
            "end_time": None, "tags": ["t1"], "themes": ["social_media"], "CCs": ["IT", "FR"],
            "ASNs": [1, 2], "test_names": ["web_connectivity"], "domains": ["example.org"],
            "links": ["https://example.org/report"], "event_type": "incident"}
    base.update(kw)
    return base


def search(api, query="", who=None):
    status, body = call(api, "GET", "/api/v1/incidents/search" + query, who=who)
    assert status == 200 and body["v"] == 1
    return body["incidents"]


def ids(items):
    return {i["id"] for i in items}


def test_a_user_creates_an_unpublished_finding_only_they_and_admins_see(api):
    status, body = call(api, "POST", "/api/v1/incidents/create", finding(), who="user")
    assert status == 200 and body["r"] == 1
    fid = body["id"]
    assert fid not in ids(search(api))
    assert fid not in ids(search(api, who="other"))
    mine = [i for i in search(api, "?only_mine=true", who="user") if i["id"] == fid][0]
    assert mine["mine"] is True and mine["email_address"] is None
    assert mine["published"] is False and mine["themes"] == ["social_media"]
    assert mine["slug"] == "blocking-of-example-org-in-italy"
    assert mine["start_time"] == "2020-01-01T00:00:00Z" and mine["end_time"] is None
    admin_view = [i for i in search(api, who="admin") if i["id"] == fid][0]
    assert admin_view["email_address"] == USER and admin_view["mine"] is False
    assert call(api, "GET", f"/api/v1/incidents/show/{fid}")[0] == 404
    status, shown = call(api, "GET", f"/api/v1/incidents/show/{fid}", who="user")
    assert status == 200 and shown["incident"]["text"].startswith("## Details")


def test_only_admins_publish_and_then_everyone_sees_it_by_id_or_slug(api):
    fid = call(api, "POST", "/api/v1/incidents/create",
               finding(title="Telegram blocked"), who="user")[1]["id"]
    assert call(api, "POST", "/api/v1/incidents/publish", {"id": fid}, who="user")[0] == 403
    assert call(api, "POST", "/api/v1/incidents/create", finding(published=True),
                who="user")[0] == 403
    assert call(api, "POST", "/api/v1/incidents/publish", {"id": fid}, who="admin") == \
        (200, {"r": 1, "id": fid})
    public = [i for i in search(api) if i["id"] == fid][0]
    assert public["published"] is True and public["email_address"] is None
    assert public["mine"] is False and "text" not in public
    by_slug = call(api, "GET", "/api/v1/incidents/show/telegram-blocked")
    assert by_slug[0] == 200 and by_slug[1]["incident"]["id"] == fid
    assert call(api, "POST", "/api/v1/incidents/unpublish", {"id": fid}, who="admin")[0] == 200
    assert fid not in ids(search(api))


def test_search_filters_by_country_and_theme_server_side(api):
    made = {}
    for title, ccs, themes in (("In Iran", ["IR"], ["news_media"]),
                               ("In Russia", ["RU", "BY"], ["circumvention"]),
                               ("In Iran and Russia", ["IR", "RU"], ["social_media"])):
        fid = call(api, "POST", "/api/v1/incidents/create",
                   finding(title=title, CCs=ccs, themes=themes, email_address=ADMIN,
                           published=True), who="admin")[1]["id"]
        made[title] = fid
    assert ids(search(api, "?country_code=IR")) == {made["In Iran"], made["In Iran and Russia"]}
    assert ids(search(api, "?country_code=by")) == {made["In Russia"]}
    assert ids(search(api, "?theme=circumvention")) == {made["In Russia"]}
    assert ids(search(api, "?country_code=RU&theme=social_media")) == \
        {made["In Iran and Russia"]}
    assert ids(search(api, "?country_code=&theme=undefined")) >= set(made.values())
    assert call(api, "GET", "/api/v1/incidents/search?country_code=ITALY")[0] == 400


def test_users_cannot_touch_other_people_s_findings(api):
    fid = call(api, "POST", "/api/v1/incidents/create", finding(), who="user")[1]["id"]
    upd = finding(id=fid, title="Hijacked", email_address=OTHER)
    assert call(api, "POST", "/api/v1/incidents/update", upd, who="other")[0] == 403
    assert call(api, "POST", "/api/v1/incidents/delete", {"id": fid}, who="other")[0] == 403
    assert call(api, "POST", "/api/v1/incidents/update", finding(id=fid), who=None)[0] == 401
    # An admin edit keeps the creator: the finding is still the user's.
    assert call(api, "POST", "/api/v1/incidents/update",
                finding(id=fid, title="Edited by admin"), who="admin")[0] == 200
    shown = call(api, "GET", f"/api/v1/incidents/show/{fid}", who="user")[1]["incident"]
    assert shown["mine"] is True and shown["title"] == "Edited by admin"
    assert call(api, "POST", "/api/v1/incidents/delete", {"id": fid}, who="user") == (200, {})
    assert call(api, "GET", f"/api/v1/incidents/show/{fid}", who="admin")[0] == 404


def test_an_update_keeps_create_time_and_moves_update_time(api):
    fid = call(api, "POST", "/api/v1/incidents/create", finding(), who="user")[1]["id"]
    before = call(api, "GET", f"/api/v1/incidents/show/{fid}", who="user")[1]["incident"]
    edited = {k: v for k, v in before.items() if k not in ("update_time", "mine")}
    edited.update(start_time="2020-01-02T00:00:00Z", text="new text")
    assert call(api, "POST", "/api/v1/incidents/update", edited, who="user") == \
        (200, {"r": 1, "id": fid})
    after = call(api, "GET", f"/api/v1/incidents/show/{fid}", who="user")[1]["incident"]
    assert after["create_time"] == before["create_time"]
    assert after["update_time"] > before["update_time"]
    assert after["start_time"] == "2020-01-02T00:00:00Z" and after["text"] == "new text"


def test_two_editors_cannot_silently_overwrite_each_other(api):
    fid = call(api, "POST", "/api/v1/incidents/create", finding(), who="user")[1]["id"]
    read = call(api, "GET", f"/api/v1/incidents/show/{fid}", who="user")[1]["incident"]
    first = {**{k: v for k, v in read.items() if k != "mine"}, "text": "first editor"}
    second = {**{k: v for k, v in read.items() if k != "mine"}, "text": "second editor"}
    assert call(api, "POST", "/api/v1/incidents/update", first, who="user")[0] == 200
    status, body = call(api, "POST", "/api/v1/incidents/update", second, who="admin")
    assert status == 409 and "changed by somebody else" in body["error"]
    now = call(api, "GET", f"/api/v1/incidents/show/{fid}", who="user")[1]["incident"]
    assert now["text"] == "first editor"
    # The same check through If-Match, with the version just read.
    assert call(api, "POST", "/api/v1/incidents/update",
                {**second, "update_time": None}, who="admin",
                headers={"If-Match": now["update_time"]})[0] == 200


@pytest.mark.parametrize("change,err", [
    ({"ASNs": [1, 2, "foo"]}, "Invalid ASNs"),
    ({"end_time": "2019-01-01T00:00:00Z"}, "end_time is before start_time"),
    ({"email_address": OTHER}, "email_address must be your own"),
    ({"title": ""}, "title must not be empty"),
    ({"extra": 1}, "Invalid keys: extra"),
    ({"CCs": ["Italy"]}, "Invalid CCs"),
    ({"slug": "Not A Slug"}, "Invalid slug: lowercase letters, digits and dashes"),
    ({"start_time": "yesterday"}, "Invalid start_time"),
])
def test_bad_findings_are_refused_with_a_message(api, change, err):
    status, body = call(api, "POST", "/api/v1/incidents/create", finding(**change), who="user")
    assert status == 400 and body["error"] == err


def test_unknown_actions_and_findings(api):
    assert call(api, "POST", "/api/v1/incidents/explode", {}, who="admin")[0] == 400
    assert call(api, "POST", "/api/v1/incidents/publish", {"id": "123"}, who="admin")[0] == 404
    assert call(api, "GET", "/api/v1/incidents/show/no-such-slug")[0] == 404
    assert call(api, "POST", "/api/v1/incidents/update", {"new_entry": finding()},
                who="admin")[0] == 400


def test_every_answer_is_no_cache_exactly(api):
    """docs/current_services.md §7: `Cache-Control: no-cache`, as OONI's findings service."""
    fid = call(api, "POST", "/api/v1/incidents/create", finding(), who="user")[1]["id"]
    for method, path, body, who in (
            ("GET", "/api/v1/incidents/search", None, None),
            ("GET", "/api/v1/incidents/search?only_mine=true", None, None),
            ("GET", f"/api/v1/incidents/show/{fid}", None, "user"),
            ("POST", "/api/v1/incidents/update", finding(id=fid), "user"),
            ("POST", "/api/v1/incidents/publish", {"id": fid}, "admin"),
            ("POST", "/api/v1/incidents/delete", {"id": fid}, "user")):
        h = {"Content-Type": "application/json"}
        if TOKENS[who]:
            h["Authorization"] = "Bearer " + TOKENS[who]
        req = urllib.request.Request(api.url + path, method=method, headers=h,
                                     data=json.dumps(body).encode() if body else None)
        with urllib.request.urlopen(req, timeout=15) as r:
            assert (r.status, r.headers["Cache-Control"]) == (200, "no-cache"), path


def test_arrays_come_back_as_sent(api):
    """Order and repeats kept (OONI's service does; Explorer shows CCs[0] as the flag)."""
    sent = finding(CCs=["IT", "gr", "AT", "IT"], ASNs=[30722, 1, 30722],
                   tags=["b", "a", "b"], domains=["z.org", "a.org"], email_address=ADMIN)
    fid = call(api, "POST", "/api/v1/incidents/create", sent, who="admin")[1]["id"]
    got = call(api, "GET", f"/api/v1/incidents/show/{fid}", who="admin")[1]["incident"]
    assert got["CCs"] == ["IT", "GR", "AT", "IT"]  # only upper-cased, so filters find them
    assert (got["ASNs"], got["tags"], got["domains"]) == (
        [30722, 1, 30722], ["b", "a", "b"], ["z.org", "a.org"])
    assert ids(search(api, "?country_code=GR", who="admin")) >= {fid}
    # The service's other two filters: asn and domain.
    assert fid in ids(search(api, "?asn=30722", who="admin"))
    assert fid in ids(search(api, "?asn=AS1&domain=z.org", who="admin"))
    assert fid not in ids(search(api, "?asn=2", who="admin"))
    assert fid not in ids(search(api, "?asn=1&domain=b.org", who="admin"))
    assert call(api, "GET", "/api/v1/incidents/search?asn=ASX")[0] == 400
