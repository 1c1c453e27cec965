"""The geolocation-anomaly rule (docs/current_services.md §2), as pure functions.

A measurement's `probe_cc` / `probe_asn` are compared with a GeoIP lookup of the address it was
submitted from; an address the databases cannot place counts as ZZ / 0, as in OONI's service.
A field the probe withheld (ZZ, AS0: the user turned off sharing it, or the probe could not
tell) is not compared: recording the looked-up value would store the location the user chose
not to share next to the measurement's uid, and is no sign of a faulty probe.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from oonibackend import jsonutil

TYPE_GEOIP = "geoip"
_MAX_FIELD = 128  # longest software_name / software_version / platform kept in details


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A submission whose declared location differs from the looked-up one."""

    looked_cc: str
    looked_asn: int
    submission_cc: str
    submission_asn: int
    measurement_uid: str
    body: bytes  # the spooled envelope, parsed for `details` off the request path
    ts: dt.datetime


def compare(looked_cc: str | None, looked_asn: int | None, submission_cc: str,
            submission_asn: int) -> tuple[bool, bool]:
    """(cc differs, asn differs); a failed lookup is ZZ / 0, a withheld field never differs."""
    cc = (looked_cc or "ZZ").upper()
    asn = looked_asn or 0
    sub_cc = submission_cc.upper()
    return (sub_cc != "ZZ" and sub_cc != cc), (submission_asn != 0 and submission_asn != asn)


def _text(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    return v[:_MAX_FIELD] if isinstance(v, str) else ""


def software_of(body: bytes) -> tuple[str, str, str]:
    """(software_name, software_version, platform) of a spooled envelope `{"format", "content"}`;
    empty strings for what is missing or unreadable (e.g. a YAML report)."""
    try:
        content = jsonutil.loads(body).get("content")
        if isinstance(content, str):
            content = jsonutil.loads(content)
    except (jsonutil.JSONDecodeError, AttributeError, TypeError):
        return "", "", ""
    if not isinstance(content, dict):
        return "", "", ""
    annotations = content.get("annotations")
    platform = _text(annotations, "platform") if isinstance(annotations, dict) else ""
    return _text(content, "software_name"), _text(content, "software_version"), platform


def row_of(m: Mismatch) -> dict[str, Any]:
    """The `faulty_measurements` row: looked-up cc/asn, and OONI's `details` JSON."""
    name, version, platform = software_of(m.body)
    details = {
        "submission_cc": m.submission_cc.upper(),
        "submission_asn": m.submission_asn,
        "measurement_uid": m.measurement_uid,
        "software_name": name,
        "software_version": version,
        "platform": platform,
    }
    return {"ts": m.ts, "type": TYPE_GEOIP, "probe_cc": m.looked_cc, "probe_asn": m.looked_asn,
            "details": jsonutil.dumps(details).decode()}
