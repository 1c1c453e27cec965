"""CORS as Explorer (https://explorer.ooni.org, test hosts, localhost:3100) needs it: pre-flights
allow Authorization and Content-Type on every route, and every answer, errors included, carries
Access-Control-Allow-Origin."""

import urllib.error
import urllib.request

EXPLORER = "https://explorer.ooni.org"


def call(backend, path, method="GET", **headers):
    req = urllib.request.Request(backend.url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def test_preflight_for_a_json_post_with_a_bearer_token(read_backend):
    status, h = call(read_backend, "/api/_/measurement_feedback", "OPTIONS", Origin=EXPLORER,
                     **{"Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "authorization,content-type"})
    assert status == 204
    assert h["Access-Control-Allow-Origin"] == EXPLORER
    assert "POST" in h["Access-Control-Allow-Methods"]
    assert set(h["Access-Control-Allow-Headers"].lower().split(",")) >= {"authorization",
                                                                         "content-type"}


def test_preflight_without_requested_headers_allows_authorization_and_content_type(read_backend):
    status, h = call(read_backend, "/api/_/account_metadata", "OPTIONS",
                     Origin="http://localhost:3100", **{"Access-Control-Request-Method": "GET"})
    assert status == 204
    assert h["Access-Control-Allow-Origin"] == "*"
    assert h["Access-Control-Allow-Headers"] == "Authorization, Content-Type"


def test_configured_origins_are_echoed_others_get_a_wildcard(read_backend):
    _, h = call(read_backend, "/health", Origin="https://explorer.test.ooni.org")
    assert h["Access-Control-Allow-Origin"] == "https://explorer.test.ooni.org"
    assert h["Vary"] == "Origin"
    _, h = call(read_backend, "/health", Origin="https://example.com")
    assert h["Access-Control-Allow-Origin"] == "*"
    _, h = call(read_backend, "/health")
    assert "Access-Control-Allow-Origin" not in h


def test_errors_carry_cors_headers_so_the_browser_shows_the_message(read_backend):
    status, h = call(read_backend, "/api/v1/no_such_route", Origin=EXPLORER)
    assert status == 404
    assert h["Access-Control-Allow-Origin"] == EXPLORER
