"""Probe register / login tokens."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from oonibackend import probe_tokens as pt

KEY = "k" * 32


def test_client_id_roundtrip():
    now = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    cid = pt.new_client_id(KEY, now)
    assert pt.decode_client_id(KEY, cid) == int(now.timestamp())
    claims = jwt.decode(cid, KEY, algorithms=["HS256"], audience="probe_login")
    assert set(claims) == {"iat", "aud"}  # no expiry: the client id is long-lived


def test_client_id_errors():
    with pytest.raises(pt.NotAJWT):
        pt.decode_client_id(KEY, "legacy-username")
    other = pt.new_client_id("o" * 32)
    with pytest.raises(pt.TokenError) as e:
        pt.decode_client_id(KEY, other)
    assert not isinstance(e.value, pt.NotAJWT)
    assert e.value.message == "Invalid credentials"
    # A probe token is not a client id (the legacy API answered 500 here).
    token, _ = pt.new_probe_token(KEY, 1, 7)
    with pytest.raises(pt.TokenError):
        pt.decode_client_id(KEY, token)
    no_iat = jwt.encode({"aud": "probe_login"}, KEY, algorithm="HS256")
    with pytest.raises(pt.TokenError):
        pt.decode_client_id(KEY, no_iat)
    none_alg = jwt.encode({"aud": "probe_login", "iat": 1}, None, algorithm="none")
    with pytest.raises(pt.TokenError):
        pt.decode_client_id(KEY, none_alg)


def test_probe_token_has_expiry():
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token, expire = pt.new_probe_token(KEY, 123, 7, now)
    assert expire == now + dt.timedelta(days=7)
    claims = pt.verify_probe_token(KEY, token)
    assert claims["registration_time"] == 123
    assert claims["aud"] == "probe_token"
    assert claims["exp"] == int(expire.timestamp())


def test_probe_token_errors():
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    expired, _ = pt.new_probe_token(KEY, None, 7, old)
    with pytest.raises(pt.TokenError, match="expired"):
        pt.verify_probe_token(KEY, expired)
    forged, _ = pt.new_probe_token("f" * 32, None, 7)
    with pytest.raises(pt.TokenError, match="Invalid JWT signature"):
        pt.verify_probe_token(KEY, forged)
    with pytest.raises(pt.TokenError, match="Invalid credentials"):
        pt.verify_probe_token(KEY, pt.new_client_id(KEY))  # wrong audience
    with pytest.raises(pt.TokenError, match="Invalid credentials"):
        pt.verify_probe_token(KEY, "garbage")


def test_legacy_token_without_exp_is_accepted():
    legacy = jwt.encode({"registration_time": None, "aud": "probe_token"}, KEY, algorithm="HS256")
    assert pt.verify_probe_token(KEY, legacy)["aud"] == "probe_token"


def test_bearer_header():
    assert pt.bearer_token("Bearer abc") == "abc"
    with pytest.raises(LookupError):
        pt.bearer_token(None)
    with pytest.raises(LookupError):
        pt.bearer_token("  ")
    for bad in ("Basic abc", "bearer abc", "Bearer ", "abc"):
        with pytest.raises(ValueError):
            pt.bearer_token(bad)
