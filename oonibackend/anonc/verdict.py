"""The ordered rules that decide a submission's `verification_status` (pure functions).

docs/current_services.md §1: no credential fields at all -> unverified; manifest version not
the current one -> unverified `manifest_not_found`; fields missing or no probe_cc/probe_asn ->
unverified `incomplete_anonc_fields`; protocol version unparsable / below the minimum ->
unverified `invalid_protocol_version` / `protocol_version_too_old`; otherwise the library
checks the proof under the policy of the measurement's own cc and asn: verified, or failed
with the library's error. The measurement is stored in every case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ooniauth_py

from oonibackend import validate
from oonibackend.anonc.policy import Rule, match

CREDENTIAL_FIELDS = ("nym", "zkp_request", "manifest_version", "protocol_version")
_VERSION = re.compile(r"v?([0-9]{1,6}(?:\.[0-9]{1,6}){0,3})", re.ASCII)

VERIFIED, FAILED, UNVERIFIED = "verified", "failed", "unverified"
_CODES = {VERIFIED: "t", FAILED: "f", UNVERIFIED: "u"}


@dataclass(frozen=True)
class Verdict:
    status: str
    error: str | None = None
    submit_response: str | None = None

    @property
    def code(self) -> str:
        """`fastpath.is_verified`: t, f or u."""
        return _CODES[self.status]


@dataclass(frozen=True)
class Check:
    """A proof the library must check (the arguments of handle_submit_request_with_hash)."""
    nym: str
    zkp_request: str
    probe_cc: str
    probe_asn: str
    content: str
    age: tuple[int, int]
    min_measurement_count: int


def parse_version(value: str) -> tuple[int, ...] | None:
    """`0.1.0` -> (0, 1, 0); None when it is not a dotted version."""
    m = _VERSION.fullmatch(value.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def _padded(v: tuple[int, ...]) -> tuple[int, ...]:
    return v + (0,) * (4 - len(v))


def _library_metadata(cc: str, asn: str) -> bool:
    """What the library accepts without panicking (its docs): two uppercase letters; "AS"
    and an integer without leading zeros, 3-12 characters."""
    try:
        number = validate.asn(asn, prefixes=("AS",), bounded=False)
    except validate.InvalidValue:
        return False
    return validate.is_country_code(cc, case="upper") and asn == f"AS{number}"


def precheck(req: Mapping[str, Any], content: Mapping[str, Any], content_text: str,
             current_version: str | None, rules: Sequence[Rule],
             min_protocol: tuple[int, ...]) -> Verdict | Check:
    """A final verdict, or the Check the library must make. `current_version` is None when
    no manifest is served (credentials disabled)."""
    fields = {k: req.get(k) for k in CREDENTIAL_FIELDS}
    if all(v is None for v in fields.values()):
        return Verdict(UNVERIFIED)
    if current_version is None or fields["manifest_version"] != current_version:
        return Verdict(UNVERIFIED, "manifest_not_found")
    cc, asn = content.get("probe_cc"), content.get("probe_asn")
    if not all(isinstance(v, str) and v for v in fields.values()) \
            or not isinstance(cc, str) or not cc or not isinstance(asn, str) or not asn:
        return Verdict(UNVERIFIED, "incomplete_anonc_fields")
    version = parse_version(fields["protocol_version"])
    if version is None:
        return Verdict(UNVERIFIED, "invalid_protocol_version")
    if _padded(version) < _padded(min_protocol):
        return Verdict(UNVERIFIED, "protocol_version_too_old")
    if not _library_metadata(cc, asn):
        # OONI refuses the whole submission (400); it is kept here, unverified, because the
        # library cannot check a proof for such metadata (it may panic).
        return Verdict(UNVERIFIED, "bad_metadata")
    policy = match(rules, cc, asn)
    if policy is None:
        return Verdict(FAILED, "unknown_error")
    return Check(fields["nym"], fields["zkp_request"], cc, asn, content_text, policy.age,
                 policy.min_measurement_count)


def library_error(exc: BaseException) -> str:
    """The documented error string of an exception raised by the library."""
    if isinstance(exc, ooniauth_py.DeserializationFailed):
        return "deserialization_failed"
    if isinstance(exc, ooniauth_py.ProtocolError):
        return "protocol_error"
    if isinstance(exc, ooniauth_py.CredentialError):
        return "credential_error"
    return "unknown_error"
