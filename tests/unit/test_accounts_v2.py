"""The v2 login's rules, the shared redirect validator and the login e-mail (pure)."""

import datetime as dt

import jwt
import pytest

from oonibackend.accounts import tokens, v2
from oonibackend.accounts.links import login_link, redirect_ok
from oonibackend.accounts.mailer import SUBJECT_V2, login_message
from oonibackend.config import AccountsConfig
from oonibackend.errors import DomainError, domain_status

KEY = "k" * 32
NOW = 1_700_000_000
HOSTS = AccountsConfig().redirect_hosts


def test_both_logins_share_one_host_list_with_ooni_s_v2_hosts():
    assert set(HOSTS) == {
        "explorer.ooni.org", "explorer.test.ooni.org", "explorer.dev.ooni.org", "run.ooni.io",
        "run.ooni.org", "run.test.ooni.org", "run-v2.ooni.org", "test-lists.ooni.org",
        "test-lists.test.ooni.org"}


@pytest.mark.parametrize("url,ok", [
    ("https://explorer.ooni.org", True),
    ("https://explorer.dev.ooni.org/m/abc?x=1", True),
    ("https://explorer.ooni.org:443/", True),
    ("https://explorer.ooni.org:8443/", False),
    ("http://explorer.ooni.org/", False),
    ("https://explorer.ooni.org.evil.example/", False),
    ("https://BOGUS.ooni.org/", False),
    ("https://explorer.ooni.org:99999/", False),
    ("https://" + "a" * 3000, False),
    (None, False), (42, False),
])
def test_redirect_validator(url, ok):
    assert redirect_ok(url, HOSTS) is ok


def test_the_link_keeps_only_the_host():
    assert login_link("https://run.ooni.org/v2/123?x=1", "T.K") == \
        "https://run.ooni.org/login?token=T.K"


def test_the_login_email_has_ooni_s_words_and_link_text():
    msg = login_message("from@example.org", "to@example.org", "https://e.org/login?token=a&b",
                        SUBJECT_V2)
    assert msg["Subject"] == "OONI Account activation email"
    html = msg.get_body(("html",)).get_content()
    assert '<a href="https://e.org/login?token=a&amp;b">Please login here</a>' in html
    text = msg.get_body(("plain",)).get_content()
    assert "Please login by following https://e.org/login?token=a&b\n" in text
    assert "will expire in 24 hours" in text
    assert login_message("a@b.org", "c@d.org", "https://x/")["Subject"] == \
        "OONI Account activation"


@pytest.mark.parametrize("body,field", [
    ({}, "email_address"),
    ({"email_address": 5, "redirect_to": "https://explorer.ooni.org"}, "email_address"),
    ({"email_address": "nick@localhost", "redirect_to": "https://explorer.ooni.org"},
     "email_address"),
    ({"email_address": "a@b", "redirect_to": "https://explorer.ooni.org"}, "email_address"),
    ({"email_address": "x" * 250 + "@example.org", "redirect_to": "https://explorer.ooni.org"},
     "email_address"),
    ({"email_address": "a@example.org"}, "redirect_to"),
    ({"email_address": "a@example.org", "redirect_to": "https://evil.example/"}, "redirect_to"),
])
def test_login_requests_are_validated(body, field):
    with pytest.raises(DomainError) as e:
        v2.parse_login_request(body, HOSTS)
    assert domain_status(e.value) == 400
    assert e.value.extra["detail"][0]["loc"] == ["body", field]


def test_login_request_lowercases_the_address():
    assert v2.parse_login_request({"email_address": " Nick@Example.ORG ",
                                   "redirect_to": "https://run.ooni.org/x"}, HOSTS) == \
        ("nick@example.org", "https://run.ooni.org/x")


def _err(token: str, now: int = NOW) -> tuple[int, str]:
    with pytest.raises(DomainError) as e:
        v2.decode_login_token(token, KEY, now)
    assert e.value.extra["detail"] == e.value.message
    return domain_status(e.value), e.value.message


def test_login_token_errors_are_401_never_500():
    good = tokens.registration_token("a@example.org", "acc", "https://x/", KEY, NOW)
    assert v2.decode_login_token(good, KEY, NOW)["email_address"] == "a@example.org"
    assert _err(good, NOW + 86400) == (401, "Expired token")
    assert _err("garbage") == (401, "Invalid credentials")
    assert _err("") == (401, "Invalid credentials")
    assert _err(tokens.registration_token("a@example.org", "acc", "", "o" * 32, NOW)) == \
        (401, "Invalid credentials")
    # A session token as login token (wrong audience) and a token not yet valid: OONI's 500s.
    session = tokens.session_token("acc", "user", NOW, KEY, NOW, 1, 1)
    assert _err(session) == (401, "Invalid credentials")
    future = jwt.encode({"nbf": NOW + 3600, "exp": NOW + 7200, "aud": "register",
                         "account_id": "acc", "email_address": "a@example.org"}, KEY,
                        algorithm="HS256")
    assert _err(future) == (401, "Invalid credentials")
    no_email = jwt.encode({"nbf": NOW, "exp": NOW + 60, "aud": "register", "account_id": "a"},
                          KEY, algorithm="HS256")
    assert _err(no_email) == (401, "Invalid credentials")


def test_v2_datetimes_have_six_digits_and_z():
    assert v2.iso_micro(NOW) == "2023-11-14T22:13:20.000000Z"
    assert dt.datetime.strptime(v2.iso_micro(0), "%Y-%m-%dT%H:%M:%S.%fZ").year == 1970


def test_session_tokens_carry_the_address_only_when_given():
    v2_token = tokens.session_token("acc", "admin", NOW, KEY, NOW, 10, 10, email="a@b.org")
    s = tokens.decode_session("Bearer " + v2_token, KEY, NOW)
    assert s is not None and (s.email, s.role, s.login_time) == ("a@b.org", "admin", NOW)
    legacy = tokens.session_token("acc", "user", NOW, KEY, NOW, 10, 10)
    assert "email_address" not in jwt.decode(legacy, KEY, algorithms=["HS256"],
                                             audience="user_auth", options={"verify_exp": False})
    assert tokens.decode_session("Bearer " + legacy, KEY, NOW).email == ""


def test_refresh_never_extends_past_the_login_expiry():
    t = tokens.session_token("acc", "user", NOW, KEY, NOW + 9 * 86400, 10, 10)
    claims = jwt.decode(t, KEY, algorithms=["HS256"], audience="user_auth",
                        options={"verify_exp": False})
    assert claims["exp"] == NOW + 10 * 86400
