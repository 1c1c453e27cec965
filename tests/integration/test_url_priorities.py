"""URL priority rules (admin): list, add, change, delete, and check-in applying them within its
refresh interval (seen through /api/_/debug_prioritization's applicable rules)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from oonibackend.accounts.tokens import session_token
from tests.conftest import Backend

SECRET = "p" * 32


def bearer(role: str) -> str:
    now = int(time.time())
    return session_token("a" * 32, role, now, SECRET, now, 1, 1)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("prio"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET, "test_list_refresh": 0.5},
    })
    b.start()
    yield b
    b.stop()


def call(api, method, path, body=None, role="admin"):
    headers = {"Content-Type": "application/json"}
    if role:
        headers["Authorization"] = "Bearer " + bearer(role)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rules(api):
    status, body = call(api, "GET", "/api/_/url-priorities/list")
    assert status == 200
    return body["rules"]


def applied(api, cc: str) -> list[dict]:
    status, body = call(api, "GET", f"/api/_/debug_prioritization?probe_cc={cc}&probe_asn=AS1",
                        role=None)
    assert status == 200
    return body["prio_rules"]


def wait_applied(api, cc: str, predicate) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = applied(api, cc)
        if predicate(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"check-in never applied the change: {got}")


NEWS_IT = {"category_code": "NEWS", "cc": "IT", "domain": "", "url": "", "priority": 300}
STAR = {"category_code": "NEWS", "cc": "IT", "domain": "*", "url": "*", "priority": 300}


def test_both_routes_are_admin_only(api):
    for method, path, body in (("GET", "/api/_/url-priorities/list", None),
                               ("POST", "/api/_/url-priorities/update", {"new_entry": NEWS_IT})):
        assert call(api, method, path, body, role=None)[0] == 401
        assert call(api, method, path, body, role="user")[0] == 403


def test_add_change_and_delete_a_rule_and_check_in_follows(api):
    assert call(api, "POST", "/api/_/url-priorities/update", {"new_entry": NEWS_IT}) == (200, 1)
    assert STAR in rules(api)
    wait_applied(api, "IT", lambda r: STAR in r)

    changed = {**STAR, "priority": -50}
    assert call(api, "POST", "/api/_/url-priorities/update",
                {"old_entry": STAR, "new_entry": changed}) == (200, 1)
    assert changed in rules(api) and STAR not in rules(api)
    wait_applied(api, "it", lambda r: changed in r and STAR not in r)

    assert call(api, "POST", "/api/_/url-priorities/update", {"old_entry": changed}) == (200, 1)
    assert changed not in rules(api)
    wait_applied(api, "IT", lambda r: changed not in r)


def test_duplicates_missing_rules_and_no_ops_are_refused(api):
    rule = {"category_code": "", "cc": "", "domain": "example.org", "url": "", "priority": 7}
    assert call(api, "POST", "/api/_/url-priorities/update", {"new_entry": rule}) == (200, 1)
    status, body = call(api, "POST", "/api/_/url-priorities/update", {"new_entry": rule})
    assert status == 400 and body["err_str"] == "err_duplicate_rule"
    assert body["err_args"] == {"category_code": "*", "cc": "*", "domain": "example.org",
                                "url": "*", "priority": 7}
    status, body = call(api, "POST", "/api/_/url-priorities/update",
                        {"old_entry": {**rule, "priority": 8}})
    assert status == 404 and body["err_str"] == "err_rule_not_found"
    status, body = call(api, "POST", "/api/_/url-priorities/update", {})
    assert status == 400 and body["err_str"] == "err_no_proposed_changes"


@pytest.mark.parametrize("body", [
    {"new_entry": {**NEWS_IT, "bogus": 1}},
    {"new_entry": {**NEWS_IT, "priority": "high"}},
    {"new_entry": {**NEWS_IT, "cc": "ITALY"}},
    {"new_entry": {**NEWS_IT, "url": "javascript:alert(1)"}},
    {"new_entry": "NEWS"},
    {"something": {}},
])
def test_bad_rules_are_400_not_500(api, body):
    status, answer = call(api, "POST", "/api/_/url-priorities/update", body)
    assert status == 400 and answer["err_str"] == "err_request_params"
