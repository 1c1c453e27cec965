"""GET helpers of the read-route tests: status, JSON body and headers, and the checks every
answer of those routes must pass (JSON, its Cache-Control, `{"error": ...}` on 400)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import Backend


def get(backend: Backend, path: str) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(backend.url + path, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def get_raw(backend: Backend, path: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the body as bytes (for answers that are not JSON, or not yet)."""
    try:
        with urllib.request.urlopen(backend.url + path, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def ok(backend: Backend, path: str, max_age: int) -> Any:
    status, body, headers = get(backend, path)
    assert status == 200, (path, body)
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == f"max-age={max_age}", path
    return body


def bad(backend: Backend, path: str) -> str:
    status, body, headers = get(backend, path)
    assert status == 400, (path, status, body)
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-cache"
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    return body["error"]
