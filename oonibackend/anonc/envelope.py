"""What submit_measurement spools: the legacy envelope plus the credential metadata that may
be kept.

`nym` and `zkp_request` identify a probe's credential, so they never reach the spool (and so
neither the WAL, the fastpath queue, postcans, jsonl files nor the database): the envelope
keeps `format`, `content` (the probe's string byte for byte when it sent one),
`manifest_version`, `protocol_version` and `is_verified` (docs/current_services.md §1). The
fastpath reads `is_verified` from this outer object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oonibackend import jsonutil

KEPT = ("manifest_version", "protocol_version")


def build(content: bytes, req: Mapping[str, Any], is_verified: str) -> bytes:
    """`{"format":"json","content":<content bytes>, kept fields, "is_verified"}`."""
    tail = {k: req[k] for k in KEPT if req.get(k) is not None}
    tail["is_verified"] = is_verified
    return b'{"format":"json","content":' + content + b"," + jsonutil.dumps(tail)[1:]
