"""OONI's v2 e-mail login and the probe update report, against the real server, its database
and a real SMTP server (aiosmtpd) on loopback (docs/current_services.md §4): the e-mailed
link's token → session → GET session → refresh; sessions shared with the legacy login
(roles, expunge, bearer tokens); bad input; PUT /api/v1/update and its metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

import jwt
import pytest

from oonibackend.accounts.ids import account_id
from tests.conftest import Backend, free_port
from tests.integration.test_hostile_input import BAD_BODIES, _variants, check_all

HASHING_KEY = "v2-hashing-key"
SECRET = "s" * 32
V2 = "/api/v2/ooniauth"
TIME_A = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture(scope="module")
def api(tmp_path_factory, inbox):
    b = Backend(tmp_path_factory.mktemp("authv2"), {
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


def call(api, method, path, body=None, token=None, raw=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


class FirstLink(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.href: str | None = None
        self.text = ""
        self._in = False

    def handle_starttag(self, tag, attrs):
        if tag == "a" and self.href is None:
            self.href, self._in = dict(attrs)["href"], True

    def handle_data(self, data):
        if self._in:
            self.text += data

    def handle_endtag(self, tag):
        self._in = False


def link_of(msg) -> tuple[str, str]:
    """(href, link text) of the first <a> of the HTML part."""
    parser = FirstLink()
    parser.feed(msg.get_body(("html",)).get_content())
    return parser.href, parser.text


def v2_login_token(api, inbox, address: str, redirect_to: str) -> str:
    before = len(inbox.messages)
    status, body, headers = call(api, "POST", f"{V2}/user-login",
                                 {"email_address": address, "redirect_to": redirect_to})
    assert status == 200, body
    assert body["email_address"] == address.lower()
    assert TIME_A.fullmatch(body["login_token_expiration"])
    expires = time.mktime(time.strptime(body["login_token_expiration"][:19],
                                        "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(expires - (time.time() + 86400)) < 10
    msg = inbox.wait(before)
    assert msg["Subject"] == "OONI Account activation email"
    assert msg["To"] == address.lower() and msg["From"] == "contact@example.org"
    href, text = link_of(msg)
    assert text == "Please login here"
    parts = urllib.parse.urlsplit(href)
    assert (parts.scheme, parts.path) == ("https", "/login")
    assert parts.netloc == urllib.parse.urlsplit(redirect_to).hostname
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    assert len(token) > 200
    return token


def v2_login(api, inbox, address: str, redirect_to: str = "https://run.ooni.org/v2/42") -> dict:
    token = v2_login_token(api, inbox, address, redirect_to)
    status, body, headers = call(api, "POST", f"{V2}/user-session", {"login_token": token})
    assert status == 200, body
    assert "no-cache" in headers["Cache-Control"]
    return body


def set_role(api, address: str, role: str) -> None:
    subprocess.run([sys.executable, "-m", "oonibackend", "account-role", address, "--role", role,
                    "--config", str(api.config), "--data-dir", str(api.data_dir)],
                   capture_output=True, text=True, timeout=60, check=True)


def test_login_session_get_and_refresh(api, inbox):
    s = v2_login(api, inbox, "Alice@Example.org", "https://explorer.dev.ooni.org/m/x?y=1")
    acc = account_id("alice@example.org", HASHING_KEY)
    assert s["redirect_to"] == "https://explorer.dev.ooni.org/m/x?y=1"
    assert (s["email_address"], s["account_id"], s["role"], s["is_logged_in"]) == \
        ("alice@example.org", acc, "user", True)
    assert TIME_A.fullmatch(s["login_time"])
    claims = jwt.decode(s["session_token"], SECRET, algorithms=["HS256"], audience="user_auth")
    assert claims["email_address"] == "alice@example.org" and claims["account_id"] == acc
    assert claims["exp"] - claims["iat"] == 2 * 86400 and claims["nbf"] == claims["iat"]

    status, got, _ = call(api, "GET", f"{V2}/user-session", token=s["session_token"])
    assert status == 200
    assert got == {"session_token": "", "redirect_to": "", "email_address": "alice@example.org",
                   "account_id": acc, "role": "user", "login_time": s["login_time"],
                   "is_logged_in": True}

    time.sleep(1.1)  # whole-second iat: the refreshed token differs
    status, fresh, _ = call(api, "POST", f"{V2}/user-session", token=s["session_token"])
    assert status == 200 and fresh["session_token"] != s["session_token"]
    assert fresh["redirect_to"] == "" and fresh["login_time"] == s["login_time"]
    new = jwt.decode(fresh["session_token"], SECRET, algorithms=["HS256"], audience="user_auth")
    assert new["login_time"] == claims["login_time"] and new["iat"] > claims["iat"]
    # The v2 session is a session of the legacy API too.
    assert call(api, "GET", "/api/_/account_metadata", token=fresh["session_token"])[1] == \
        {"logged_in": True, "role": "user"}


def test_a_legacy_bearer_is_a_v2_session_and_roles_are_shared(api, inbox):
    set_role(api, "boss@example.org", "admin")
    s = v2_login(api, inbox, "boss@example.org")
    assert s["role"] == "admin"
    # The legacy link and bearer work with v2 (no address in the legacy token).
    before = len(inbox.messages)
    assert call(api, "POST", "/api/v1/user_register",
                {"email_address": "boss@example.org",
                 "redirect_to": "https://explorer.ooni.org"})[:2] == (200, {"msg": "ok"})
    msg = inbox.wait(before)
    href, text = link_of(msg)
    assert msg["Subject"] == "OONI Account activation" and text == "Please login here"
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)["token"][0]
    legacy = call(api, "GET", "/api/v1/user_login?k=" + token)[1]["bearer"]
    got = call(api, "GET", f"{V2}/user-session", token=legacy)[1]
    assert (got["is_logged_in"], got["role"], got["email_address"]) == (True, "admin", "")
    # ...and the link token of the legacy mail logs in through v2 as well.
    assert call(api, "POST", f"{V2}/user-session", {"login_token": token})[1]["role"] == "admin"
    # The role is recomputed on every call: a demotion shows at once.
    set_role(api, "boss@example.org", "user")
    assert call(api, "GET", f"{V2}/user-session", token=s["session_token"])[1]["role"] == "user"
    assert call(api, "POST", f"{V2}/user-session", token=s["session_token"])[1]["role"] == "user"


def test_a_legacy_expunge_ends_v2_sessions(api, inbox):
    set_role(api, "root@example.org", "admin")
    admin = v2_login(api, inbox, "root@example.org")["session_token"]
    victim = v2_login(api, inbox, "dave@example.org")["session_token"]
    time.sleep(1.1)  # tokens carry whole seconds
    assert call(api, "POST", "/api/v1/set_session_expunge",
                {"email_address": "dave@example.org"}, token=admin)[:2] == (200, {})
    assert call(api, "GET", f"{V2}/user-session", token=victim)[1]["is_logged_in"] is False
    status, body, _ = call(api, "POST", f"{V2}/user-session", token=victim)
    assert (status, body) == (401, {"error": "no valid session found",
                                    "detail": "no valid session found"})
    fresh = v2_login(api, inbox, "dave@example.org")["session_token"]
    assert call(api, "GET", f"{V2}/user-session", token=fresh)[1]["is_logged_in"] is True


LOGGED_OUT = {"session_token": "", "redirect_to": "", "email_address": "", "account_id": "",
              "role": "", "login_time": None, "is_logged_in": False}


def _token(claims: dict, key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def test_no_invalid_or_expired_sessions(api):
    now = int(time.time())
    user = {"aud": "user_auth", "account_id": "a" * 32, "role": "user", "login_time": now,
            "iat": now, "nbf": now, "exp": now + 3600, "email_address": "a@example.org"}
    for token in (None, "garbage", _token(user, "f" * 32),
                  _token({**user, "exp": now - 10, "iat": now - 100}),
                  _token({**user, "aud": "register"})):
        assert call(api, "GET", f"{V2}/user-session", token=token)[:2] == (200, LOGGED_OUT)
        assert call(api, "POST", f"{V2}/user-session", token=token)[:2] == \
            (401, {"error": "no valid session found", "detail": "no valid session found"})
    assert call(api, "POST", f"{V2}/user-session", {"login_token": None})[0] == 401


@pytest.mark.parametrize("claims,key,detail", [
    ({"aud": "register", "exp": -10}, SECRET, "Expired token"),
    ({"aud": "register"}, "x" * 32, "Invalid credentials"),
    ({"aud": "user_auth"}, SECRET, "Invalid credentials"),  # wrong audience: OONI's 500
    ({"aud": "register", "nbf": 3600}, SECRET, "Invalid credentials"),  # OONI's 500 too
    ({"aud": "register", "email_address": None}, SECRET, "Invalid credentials"),
])
def test_bad_login_tokens_are_401(api, claims, key, detail):
    now = int(time.time())
    base = {"nbf": now, "exp": now + 3600, "account_id": "a" * 32,
            "email_address": "a@example.org", "redirect_to": "https://explorer.ooni.org"}
    merged = {**base, **claims}
    for k in ("exp", "nbf"):
        if k in claims:
            merged[k] = now + claims[k]
    merged = {k: v for k, v in merged.items() if v is not None}
    status, body, _ = call(api, "POST", f"{V2}/user-session",
                           {"login_token": _token(merged, key)})
    assert (status, body) == (401, {"error": detail, "detail": detail})
    assert call(api, "POST", f"{V2}/user-session", {"login_token": "x.y.z"})[0] == 401


@pytest.mark.parametrize("body,field", [
    ({"email_address": "nick@localhost", "redirect_to": "https://explorer.ooni.org"},
     "email_address"),
    ({"email_address": "not an email", "redirect_to": "https://explorer.ooni.org"},
     "email_address"),
    ({"redirect_to": "https://explorer.ooni.org"}, "email_address"),
    ({"email_address": "a@example.org", "redirect_to": "https://BOGUS.ooni.org/"},
     "redirect_to"),
    ({"email_address": "a@example.org", "redirect_to": "http://explorer.ooni.org/"},
     "redirect_to"),
    ({"email_address": "a@example.org", "redirect_to": "https://explorer.ooni.org:8443/"},
     "redirect_to"),
    ({"email_address": "a@example.org"}, "redirect_to"),
])
def test_login_input_is_validated(api, inbox, body, field):
    before = len(inbox.messages)
    status, got, _ = call(api, "POST", f"{V2}/user-login", body)
    assert status == 400 and got["error"]
    assert got["detail"][0]["loc"] == ["body", field]
    assert len(inbox.messages) == before


@pytest.mark.parametrize("raw", [b"", b"[1]", b"{nope", b'{"login_token": 5}'])
def test_malformed_bodies_are_400(api, raw):
    status, got, _ = call(api, "POST", f"{V2}/user-login", raw=raw)
    assert status == 400 and "detail" in got
    if raw:
        status, got, _ = call(api, "POST", f"{V2}/user-session", raw=raw)
        assert status == 400 and "detail" in got


def test_an_unreachable_mail_server_is_a_clear_error(tmp_path):
    b = Backend(tmp_path / "nomail", {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "smtp": {"host": "127.0.0.1", "port": free_port(), "timeout": 2.0},
    }, command="serve")
    b.start()
    try:
        status, body, _ = call(b, "POST", f"{V2}/user-login",
                               {"email_address": "a@example.org",
                                "redirect_to": "https://explorer.ooni.org"})
        assert (status, body) == (503, {"error": "Unable to send the email",
                                        "detail": "Unable to send the email"})
    finally:
        b.stop()


# ---- PUT /api/v1/update/{client_id} ----

def metrics(api) -> str:
    with urllib.request.urlopen(api.url + "/metrics", timeout=10) as r:
        return r.read().decode()


def test_update_reports_become_bounded_metrics(api):
    body = {"probe_cc": "IT", "probe_asn": "AS30722", "platform": "android",
            "software_name": "ooniprobe-android", "software_version": "3.8.0",
            "supported_tests": ["web_connectivity", "dnscheck"], "password": "hunter2",
            "token": "secret-token", "unknown": {"ignored": True}, "network_type": None}
    status, got, headers = call(api, "PUT", "/api/v1/update/any-client-id", body)
    assert (status, got) == (200, {"status": "ok"}) and "Cache-Control" not in headers
    text = metrics(api)
    info = [x for x in text.splitlines() if x.startswith("oonibackend_probe_update_info{")]
    assert len(info) == 1
    assert 'supported_tests="dnscheck;web_connectivity"' in info[0]
    assert 'probe_asn="AS30722"' in info[0] and "network_type" not in info[0]
    assert "hunter2" not in text and "secret-token" not in text
    assert re.search(r'oonibackend_probe_updates_total\{platform="android",'
                     r'software_name="ooniprobe-android"\} 1\.0', text)
    # Hostile values: still one info series, values cut, unknown values counted as "other".
    for i in range(20):
        assert call(api, "PUT", f"/api/v1/update/{i}",
                    {"platform": f"p{i}" + "x" * 500, "software_name": f"s{i}"})[0] == 200
    text = metrics(api)
    info = [x for x in text.splitlines() if x.startswith("oonibackend_probe_update_info{")]
    assert len(info) == 1 and "x" * 65 not in info[0] and 'software_name="s19"' in info[0]
    assert re.search(r'oonibackend_probe_updates_total\{platform="other",'
                     r'software_name="other"\} 20\.0', text)


@pytest.mark.parametrize("raw", [b"", b"[]", b'"x"', b"{bad", b'{"probe_cc": 5}',
                                 b'{"supported_tests": "web_connectivity"}',
                                 b'{"supported_tests": [1, 2]}'])
def test_update_refuses_bad_bodies(api, raw):
    status, got, _ = call(api, "PUT", "/api/v1/update/x", raw=raw)
    assert status == 400 and got["error"]


@pytest.mark.parametrize("method,path,valid", [
    ("POST", f"{V2}/user-login", {"email_address": "sweep@example.org",
                                  "redirect_to": "https://explorer.ooni.org/"}),
    ("POST", f"{V2}/user-session", {"login_token": "x"}),
    ("PUT", "/api/v1/update/x", {"probe_cc": "IT", "supported_tests": ["dnscheck"]}),
])
def test_hostile_bodies_are_never_5xx(api, method, path, valid):
    cases = [(method, path, body, None) for body in BAD_BODIES]
    cases += [(method, path, v, None) for v in _variants(valid)]
    check_all(api, cases)
