"""Account ids and the login tokens (pure)."""

import jwt
import pytest

from oonibackend.accounts import tokens
from oonibackend.accounts.ids import account_id, is_account_id, normalize_email

KEY = "k" * 32
NOW = 1_326_499_200  # 2012-01-14, the legacy tests' frozen time


def test_account_ids_are_ooni_s_for_the_same_hashing_key():
    assert account_id("integtest@openobservatory.org", "CHANGEME") == \
        "71e398652ecfb1be6a2359923c7df008"
    assert account_id("Nick@Localhost.local", "CHANGEME") == "ff266536c4bda24306b30187fca19f6b"
    assert is_account_id(account_id("a@b.org", "x"))


@pytest.mark.parametrize("raw,expected", [
    (" Foo.Bar+x@Example.ORG ", "foo.bar+x@example.org"),
    ("no-at-sign", None), ("a@b", None), ("a b@c.org", None), (None, None), (42, None),
    ("x" * 250 + "@e.org", None),
])
def test_emails_are_normalised_or_refused(raw, expected):
    assert normalize_email(raw) == expected


def test_registration_token_round_trip_and_one_day_validity():
    t = tokens.registration_token("a@b.org", "acc", "https://explorer.ooni.org/", KEY, NOW)
    claims = tokens.decode_registration(t, KEY, NOW + 3600)
    assert claims["email_address"] == "a@b.org" and claims["redirect_to"].endswith(".org/")
    with pytest.raises(tokens.TokenError, match="Expired token"):
        tokens.decode_registration(t, KEY, NOW + 86400)


def test_registration_token_errors_have_the_legacy_messages():
    t = tokens.registration_token("a@b.org", "acc", "https://x/", KEY, NOW)
    with pytest.raises(tokens.TokenError, match="Invalid credential signature"):
        tokens.decode_registration(t, "other" * 8, NOW)
    session = tokens.session_token("acc", "user", NOW, KEY, NOW, 2, 7)
    with pytest.raises(tokens.TokenError, match="Invalid token type"):
        tokens.decode_registration(session, KEY, NOW)
    with pytest.raises(tokens.TokenError, match="Invalid credentials"):
        tokens.decode_registration("garbage", KEY, NOW)


def test_session_expiry_is_capped_by_the_login_time():
    # Legacy example: 2 days per session, 7 days per login.
    t = tokens.session_token("acc", "user", NOW, KEY, NOW, 2, 7)
    s = tokens.decode_session("Bearer " + t, KEY, now=NOW + 86400)
    assert s == tokens.Session("acc", "user", NOW, NOW, NOW + 2 * 86400)
    assert tokens.decode_session("Bearer " + t, KEY, now=NOW + 2 * 86400) is None
    late = tokens.session_token("acc", "user", NOW, KEY, NOW + 6 * 86400, 2, 7)
    assert jwt.decode(late, KEY, algorithms=["HS256"], audience="user_auth",
                      options={"verify_exp": False})["exp"] == NOW + 7 * 86400


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic abc", "Bearer not.a.jwt",
    "Bearer " + jwt.encode({"aud": "user_auth", "account_id": "a", "role": "user",
                            "exp": NOW + 10}, "forged" * 6, algorithm="HS256"),
    "Bearer " + jwt.encode({"aud": "user_auth", "account_id": "a", "role": "root",
                            "exp": NOW + 10}, KEY, algorithm="HS256"),
    "Bearer " + jwt.encode({"aud": "user_auth", "account_id": "a", "role": "user"}, KEY,
                           algorithm="HS256"),
    "Bearer " + jwt.encode({"aud": "probe_token", "account_id": "a", "role": "user",
                            "exp": NOW + 10}, KEY, algorithm="HS256"),
])
def test_bad_session_headers_are_anonymous(header):
    assert tokens.decode_session(header, KEY, now=NOW) is None
