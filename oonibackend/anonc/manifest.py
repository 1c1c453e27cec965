"""The manifest: the public document probes fetch before asking for a credential.

`{"nym_scope", "submission_policy", "public_parameters"}` as in OONI's service
(docs/current_services.md §1). OONI keeps it in a versioned bucket and uses the object's
version id as the manifest version; here the version is a hash of the document's bytes, so it
changes whenever the manifest does and two hosts serving the same file agree on it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from oonibackend.anonc.policy import PolicyError, Rule, parse_rules

NYM_SCOPE = "ooni.org/{probe_cc}/{probe_asn}"


class ManifestError(ValueError):
    """A manifest document that cannot be served (message says why)."""


@dataclass(frozen=True)
class Manifest:
    document: dict[str, Any]
    version: str
    last_modified: dt.datetime
    rules: tuple[Rule, ...]

    @property
    def public_parameters(self) -> str:
        return self.document["public_parameters"]


def version_of(data: bytes) -> str:
    """The manifest version: 32 hex characters of the SHA-256 of the document's bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def render(public_parameters: str, submission_policy: list[dict[str, Any]]) -> bytes:
    """The document's bytes (validated first, so a bad policy is never published)."""
    parse_rules(submission_policy)
    doc = {"nym_scope": NYM_SCOPE, "submission_policy": submission_policy,
           "public_parameters": public_parameters}
    return (json.dumps(doc, indent=2) + "\n").encode()


def parse(data: bytes, last_modified: dt.datetime) -> Manifest:
    """A validated Manifest from a document's bytes; ManifestError says what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError("the manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ManifestError("the manifest must be a JSON object")
    missing = {"nym_scope", "submission_policy", "public_parameters"} - set(doc)
    if missing:
        raise ManifestError(f"the manifest lacks {', '.join(sorted(missing))}")
    if not isinstance(doc["nym_scope"], str) or not doc["nym_scope"]:
        raise ManifestError("nym_scope must be a non-empty string")
    pp = doc["public_parameters"]
    try:
        if not isinstance(pp, str) or not base64.b64decode(pp, validate=True):
            raise ValueError
    except (ValueError, binascii.Error):
        raise ManifestError("public_parameters must be base64") from None
    try:
        rules = parse_rules(doc["submission_policy"])
    except PolicyError as e:
        raise ManifestError(str(e)) from None
    return Manifest(doc, version_of(data), last_modified, rules)
