"""GET /version and the `server.metrics_allow` restriction of /metrics, on the real API
process (`oonibackend serve`: neither route needs the database)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from oonibackend import __version__
from tests.conftest import Backend, free_port


def get(backend: Backend, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(backend.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_version(serve_factory, tmp_path):
    b = serve_factory(free_port(), tmp_path / "v").start()
    status, headers, body = get(b, "/version")
    assert status == 200
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Content-Type"].startswith("application/json")
    doc: dict[str, Any] = json.loads(body)
    assert set(doc) == {"version", "build_label", "package_name"}
    assert doc["version"] == __version__ and doc["package_name"] == "oonibackend"
    assert doc["build_label"] is None or isinstance(doc["build_label"], str)


def test_metrics_restricted_to_the_allowed_peers(serve_factory, tmp_path):
    refused = serve_factory(free_port(), tmp_path / "refused",
                            server={"metrics_allow": ["10.9.9.9/32"]}).start()
    allowed = serve_factory(free_port(), tmp_path / "allowed",
                            server={"metrics_allow": ["127.0.0.1"]}).start()

    status, headers, body = get(refused, "/metrics")
    assert status == 403
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"error": "Forbidden"}
    # Forwarded addresses are not believed, even from a trusted proxy (loopback).
    spoof = {"X-Forwarded-For": "10.9.9.9", "X-Real-IP": "10.9.9.9"}
    assert get(refused, "/metrics", spoof)[0] == 403
    # /version is not restricted
    assert get(refused, "/version")[0] == 200

    status, headers, body = get(allowed, "/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    assert b"http_requests_total" in body
