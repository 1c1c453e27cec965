"""The email login end to end, as Explorer does it (docs/clients.md Explorer §4), against the real
server and a real SMTP server (aiosmtpd) on loopback: register, follow the emailed link, use
and refresh the bearer, roles on the admin routes, forged / expired / expunged tokens."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import jwt
import pytest

from oonibackend.accounts.ids import account_id
from tests.conftest import Backend, free_port

HASHING_KEY = "CHANGEME"
SECRET = "j" * 32
EXPLORER = "https://explorer.ooni.org"


@pytest.fixture(scope="module")
def api(tmp_path_factory, inbox):
    data = tmp_path_factory.mktemp("auth")
    b = Backend(data, {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET},
        "accounts": {"hashing_key": HASHING_KEY, "expunge_refresh": 0.5,
                     "session_expiry_days": 2.0, "login_expiry_days": 7.0},
        "smtp": {"host": "127.0.0.1", "port": inbox.port,
                 "source_address": "contact@example.org"},
    })
    b.start()
    yield b
    b.stop()


def call(api, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def login(api, inbox, address: str, redirect_to: str = EXPLORER + "/m/abc") -> dict:
    """Register, read the emailed link, follow it: the user_login answer."""
    before = len(inbox.messages)
    status, body, _ = call(api, "POST", "/api/v1/user_register",
                           {"email_address": address, "redirect_to": redirect_to})
    assert (status, body) == (200, {"msg": "ok"})
    msg = inbox.wait(before)
    assert msg["To"] == address.lower() and msg["Subject"] == "OONI Account activation"
    text = msg.get_body(("plain",)).get_content()
    link = re.search(r"https://\S+", text).group(0)
    parts = urllib.parse.urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "explorer.ooni.org", "/login")
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    status, body, headers = call(api, "GET", "/api/v1/user_login?" +
                                 urllib.parse.urlencode({"k": token}))
    assert status == 200 and headers["Cache-Control"] == "max-age=0, no-cache"
    return body


def set_role(api, address: str, role: str) -> str:
    out = subprocess.run([sys.executable, "-m", "oonibackend", "account-role", address,
                          "--role", role, "--config", str(api.config),
                          "--data-dir", str(api.data_dir)],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def test_the_emailed_link_logs_the_user_in(api, inbox):
    body = login(api, inbox, "Alice@Example.org")
    assert body["email_address"] == "alice@example.org"
    assert body["redirect_to"] == EXPLORER + "/m/abc"
    status, meta, _ = call(api, "GET", "/api/_/account_metadata", token=body["bearer"])
    assert (status, meta) == (200, {"logged_in": True, "role": "user"})
    claims = jwt.decode(body["bearer"], SECRET, algorithms=["HS256"], audience="user_auth")
    assert claims["account_id"] == account_id("alice@example.org", HASHING_KEY)
    assert claims["exp"] - claims["iat"] == 2 * 86400


def test_the_email_address_is_stored_nowhere(api, inbox):
    login(api, inbox, "secret.person@example.org")
    hits = subprocess.run(["grep", "-rl", "secret.person", str(api.data_dir / "db")],
                          capture_output=True, text=True)
    assert hits.stdout == ""


def test_anonymous_callers_are_logged_out_not_errors(api):
    assert call(api, "GET", "/api/_/account_metadata")[:2] == \
        (200, {"logged_in": False, "role": ""})


def test_refresh_gives_a_new_working_bearer(api, inbox):
    bearer = login(api, inbox, "bob@example.org")["bearer"]
    time.sleep(1.1)  # whole-second iat: a new token differs
    status, body, _ = call(api, "GET", "/api/v1/user_refresh_token", token=bearer)
    assert status == 200 and body["bearer"] != bearer
    assert call(api, "GET", "/api/_/account_metadata", token=body["bearer"])[1]["logged_in"]


@pytest.mark.parametrize("token", [
    "garbage",
    jwt.encode({"aud": "user_auth", "account_id": "a" * 32, "role": "admin",
                "iat": int(time.time()), "exp": int(time.time()) + 3600}, "f" * 32,
               algorithm="HS256"),
    jwt.encode({"aud": "user_auth", "account_id": "a" * 32, "role": "admin",
                "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, SECRET,
               algorithm="HS256"),
])
def test_forged_and_expired_tokens_are_refused(api, token):
    assert call(api, "GET", "/api/v1/user_refresh_token", token=token)[:2] == \
        (401, {"error": "Authentication required"})
    assert call(api, "GET", "/api/_/account_metadata", token=token)[1]["logged_in"] is False
    assert call(api, "POST", "/api/v1/set_account_role",
                {"email_address": "x@example.org", "role": "admin"}, token=token)[0] == 401


def test_the_registration_token_is_not_a_bearer(api):
    reg = jwt.encode({"aud": "register", "account_id": "a" * 32, "email_address": "a@b.org",
                      "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    assert call(api, "GET", "/api/v1/user_refresh_token", token=reg)[0] == 401
    assert call(api, "GET", "/api/v1/user_login?k=" + reg)[0] == 200
    session = jwt.encode({"aud": "user_auth", "account_id": "a" * 32, "role": "user",
                          "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    assert call(api, "GET", "/api/v1/user_login?k=" + session)[:2] == \
        (401, {"error": "Invalid token type"})
    expired = jwt.encode({"aud": "register", "account_id": "a" * 32, "email_address": "a@b.org",
                          "exp": int(time.time()) - 1}, SECRET, algorithm="HS256")
    assert call(api, "GET", "/api/v1/user_login?k=" + expired)[:2] == \
        (401, {"error": "Expired token"})


@pytest.mark.parametrize("body,error", [
    ({"email_address": "a@example.org", "redirect_to": "https://evil.example/"},
     "Invalid request"),
    ({"email_address": "a@example.org", "redirect_to": "http://explorer.ooni.org/"},
     "Invalid request"),
    ({"email_address": "", "redirect_to": EXPLORER}, "Invalid request"),
    ({"email_address": "not an email", "redirect_to": EXPLORER}, "Invalid email address"),
])
def test_register_validates_its_input(api, body, error):
    assert call(api, "POST", "/api/v1/user_register", body)[:2] == (400, {"error": error})


def test_admin_routes_check_roles(api, inbox):
    user = login(api, inbox, "carol@example.org")["bearer"]
    for method, path, body in [
        ("POST", "/api/v1/set_account_role", {"email_address": "d@example.org", "role": "admin"}),
        ("GET", "/api/v1/get_account_role/carol@example.org", None),
        ("POST", "/api/v1/set_session_expunge", {"email_address": "carol@example.org"}),
        ("GET", "/api/_/quotas_summary", None),
    ]:
        assert call(api, method, path, body)[0] == 401, path
        assert call(api, method, path, body, token=user)[:2] == \
            (403, {"error": "Role not authorized"}), path

    assert "admin" in set_role(api, "admin@example.org", "admin")
    admin = login(api, inbox, "admin@example.org")["bearer"]
    assert call(api, "GET", "/api/_/account_metadata", token=admin)[1] == \
        {"logged_in": True, "role": "admin"}
    assert call(api, "POST", "/api/v1/set_account_role",
                {"email_address": "carol@example.org", "role": "admin"}, token=admin)[:2] == \
        (200, {})
    assert call(api, "GET", "/api/v1/get_account_role/Carol@example.org", token=admin)[:2] == \
        (200, {"role": "admin"})
    assert call(api, "GET", "/api/v1/get_account_role/nobody@example.org", token=admin)[:2] == \
        (400, {"error": "Account not found"})
    assert call(api, "POST", "/api/v1/set_account_role",
                {"email_address": "carol@example.org", "role": "root"}, token=admin)[:2] == \
        (400, {"error": "Invalid role"})
    # The new role applies at the next login.
    assert call(api, "GET", "/api/_/account_metadata", token=user)[1]["role"] == "user"
    assert login(api, inbox, "carol@example.org")["bearer"]


def test_expunged_sessions_must_log_in_again(api, inbox):
    set_role(api, "root@example.org", "admin")
    admin = login(api, inbox, "root@example.org")["bearer"]
    victim = login(api, inbox, "dave@example.org")["bearer"]
    time.sleep(1.1)  # tokens carry whole seconds
    assert call(api, "POST", "/api/v1/set_session_expunge",
                {"email_address": "dave@example.org"}, token=admin)[:2] == (200, {})
    assert call(api, "GET", "/api/_/account_metadata", token=victim)[1]["logged_in"] is False
    assert call(api, "GET", "/api/v1/user_refresh_token", token=victim)[0] == 401
    fresh = login(api, inbox, "dave@example.org")["bearer"]
    assert call(api, "GET", "/api/_/account_metadata", token=fresh)[1]["logged_in"] is True


def test_an_unreachable_mail_server_is_a_clear_error(tmp_path):
    b = Backend(tmp_path / "nomail", {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "smtp": {"host": "127.0.0.1", "port": free_port(), "timeout": 2.0},
    }, command="serve")
    b.start()
    try:
        assert call(b, "POST", "/api/v1/user_register",
                    {"email_address": "a@example.org", "redirect_to": EXPLORER})[:2] == \
            (400, {"error": "Unable to send the email"})
    finally:
        b.stop()
