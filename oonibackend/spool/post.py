"""A spooled measurement's body: the `.post` file the API writes and the line it is published
and served as.

A `.post` file holds what the probe sent, `{"format": "json", "content": {...}}`. The
uploader publishes `content` with `measurement_uid` added as one jsonl line, and the read API
serves a body still in a spool as that very line, so a measurement reads the same before and
after the upload.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def measurement_of(body: bytes) -> dict[str, Any] | None:
    """The measurement of a `.post` body `{"format": "json", "content": {...}}`; None when
    the body holds something else (YAML reports, garbage): those go to the postcan only."""
    try:
        post = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # integers beyond 64 bits, which orjson refuses
            post = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(post, dict):
        return None
    content = post.get("content")
    if post.get("format", "json") != "json" or not isinstance(content, dict):
        return None
    return content


def published_line(content: dict[str, Any], uid: str) -> bytes:
    """`content` + measurement_uid as the uploader's jsonl line (without the newline):
    orjson, or the standard library for what orjson refuses (integers beyond 64 bits)."""
    msm = dict(content)
    msm["measurement_uid"] = uid
    try:
        return orjson.dumps(msm)
    except TypeError:
        return json.dumps(msm, separators=(",", ":"), ensure_ascii=False).encode()
