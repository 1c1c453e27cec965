"""GET /api/_/measurement_feedback/{uid} against the real server: the summary Explorer's /m/
page always needs, and the caller's own feedback when it presents an account token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from oonibackend import config
from oonibackend.storage.http import HTTPDatabase
from tests.conftest import Backend

SECRET = "feedback-test-secret-0123456789abcdef"
UID = "20240101000002.422281_TW_webconnectivity_55232ce980f563d5"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(tmp_path_factory.mktemp("feedback"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET}}).start()
    yield b
    b.stop()


async def add_feedback(b: Backend, rows: list[tuple[str, str, str]]) -> None:
    db = HTTPDatabase(config.load(str(b.config), data_dir=str(b.data_dir)))
    try:
        await db.insert("msmt_feedback", [{"measurement_uid": u, "account_id": a, "status": s}
                                          for u, a, s in rows])
    finally:
        await db.close()


def token(account_id: str, secret: str = SECRET, **claims: Any) -> str:
    payload = {"aud": "user_auth", "account_id": account_id, "role": "user",
               "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def feedback(b: Backend, uid: str, bearer: str | None = None) -> tuple[int, dict, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    req = urllib.request.Request(f"{b.url}/api/_/measurement_feedback/{uid}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_no_feedback_yet_is_an_empty_summary(backend):
    status, headers, body = feedback(backend, UID)
    assert (status, body) == (200, {"summary": {}})
    assert headers["Cache-Control"] == "max-age=0, no-cache"
    assert headers["Content-Type"].startswith("application/json")


async def test_summary_counts_accounts_per_status(backend):
    uid = UID[:-1] + "1"
    await add_feedback(backend, [(uid, "acc1", "ok"), (uid, "acc2", "ok"),
                                 (uid, "acc3", "blocked"), (UID[:-1] + "2", "acc1", "down")])
    assert feedback(backend, uid)[2] == {"summary": {"blocked": 1, "ok": 2}}
    # an account's newer feedback replaces its earlier one
    await add_feedback(backend, [(uid, "acc1", "blocked.dns")])
    assert feedback(backend, uid)[2] == {"summary": {"blocked": 1, "blocked.dns": 1, "ok": 1}}


async def test_the_callers_own_feedback(backend):
    uid = UID[:-1] + "3"
    await add_feedback(backend, [(uid, "acc7", "down.unreachable"), (uid, "acc8", "ok")])
    assert feedback(backend, uid, token("acc7"))[2] == {
        "summary": {"down.unreachable": 1, "ok": 1}, "user_feedback": "down.unreachable"}
    # logged in, no feedback of its own on this measurement
    assert feedback(backend, uid, token("acc9"))[2] == {
        "summary": {"down.unreachable": 1, "ok": 1}}


@pytest.mark.parametrize("bearer", [
    "not-a-jwt", token("acc7", secret="another-secret-0123456789abcdef0123"),
    token("acc7", exp=int(time.time()) - 10), token("acc7", aud="probe_token"),
])
async def test_invalid_tokens_are_anonymous(backend, bearer):
    uid = UID[:-1] + "4"
    await add_feedback(backend, [(uid, "acc7", "ok")])
    status, _, body = feedback(backend, uid, bearer)
    assert (status, body) == (200, {"summary": {"ok": 1}})


@pytest.mark.parametrize("uid", ["short", "x" * 101, "bogus_uid", "a%20b%20c%20d%20e%20f",
                                 "a'%3B--12345678"])
def test_bad_uids_are_400(backend, uid):
    status, _, body = feedback(backend, uid)
    assert status == 400 and body == {"error": "Invalid measurement_uid"}


# ---- POST: logged-in users give feedback, one per account and measurement ----

POST_UID = "20240101000003.000001_IT_webconnectivity_0123456789abcdef"


def post(b: Backend, body: object, bearer: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    req = urllib.request.Request(f"{b.url}/api/_/measurement_feedback", method="POST",
                                 data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_feedback_needs_a_login(backend):
    assert post(backend, {"measurement_uid": POST_UID, "status": "ok"}, None) == \
        (401, {"error": "Authentication required"})


def test_the_last_feedback_of_an_account_wins(backend):
    alice, bob = token("a" * 32), token("b" * 32)
    assert post(backend, {"measurement_uid": POST_UID, "status": "blocked"}, alice) == (200, {})
    assert post(backend, {"measurement_uid": POST_UID, "status": "ok"}, bob) == (200, {})
    assert post(backend, {"measurement_uid": f" {POST_UID} ", "status": " blocked.dns.nxdomain "},
                alice) == (200, {})
    _, _, body = feedback(backend, POST_UID, alice)
    assert body == {"summary": {"blocked.dns.nxdomain": 1, "ok": 1},
                    "user_feedback": "blocked.dns.nxdomain"}
    assert feedback(backend, POST_UID)[2] == {"summary": {"blocked.dns.nxdomain": 1, "ok": 1}}


@pytest.mark.parametrize("body,error", [
    ({"measurement_uid": POST_UID, "status": "censored"}, "Invalid status"),
    ({"measurement_uid": POST_UID}, "Invalid status"),
    ({"measurement_uid": "../../etc", "status": "ok"}, "Invalid measurement_uid"),
    ({"status": "ok"}, "Invalid measurement_uid"),
    (["not", "an", "object"], "Invalid request"),
])
def test_bad_feedback_is_400(backend, body, error):
    assert post(backend, body, token("c" * 32)) == (400, {"error": error})
