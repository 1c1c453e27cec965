"""Report ids and measurement uids: generation and strict validation.

Both end up in file names (the spool) and in URLs, so every place that builds a path from one
validates it here first. Their parts (country code, AS number, test name) are checked by
oonibackend/validate.py; the regexes here are ASCII-only and anchored with fullmatch (a `$`
anchor would accept a trailing newline).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import random
import re
from typing import NamedTuple

from oonibackend import validate

# YYYYmmddHHMMSS.ffffff_CC_testname_16hex; the test name has no underscores. Legacy report ids
# could carry a lowercase cc, so both cases are accepted (both are path-safe).
_UID = re.compile(r"[0-9]{14}\.[0-9]{6}_[A-Za-z]{2}_[A-Za-z0-9]{1,60}_[0-9a-f]{16}", re.ASCII)
# Spool hour directory: YYYYmmddHH_CC_testname.
_HOUR_DIR = re.compile(r"[0-9]{10}_[A-Za-z]{2}_[A-Za-z0-9]{1,60}", re.ASCII)
_REPORT_ID_CHARS = re.compile(r"[A-Za-z0-9_]{1,100}", re.ASCII)
_RID_TESTNAME = re.compile(r"[A-Za-z0-9]{2,29}", re.ASCII)
_COLLECTOR_ID = re.compile(r"[A-Za-z0-9]{1,10}", re.ASCII)


class ReportId(NamedTuple):
    ts: str
    testname: str
    cc: str
    asn: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_report_id(test_name: str, cc: str, asn: int, collector_id: str) -> str:
    """`YYYYMMDDTHHMMSSZ_<testname>_<CC>_<asn>_n<cid>_<16 random [A-Za-z0-9]>`.

    Raises ValueError for inputs that would give an id `parse_report_id` rejects, so a probe
    never receives a report id it cannot submit to.
    """
    testname = test_name.replace("_", "").lower()
    if not _RID_TESTNAME.fullmatch(testname):
        raise ValueError(f"invalid test name {test_name!r}")
    if not validate.is_country_code(cc):
        raise ValueError(f"invalid country code {cc!r}")
    if isinstance(asn, bool) or not isinstance(asn, int) or not 0 <= asn < 2**32:
        raise ValueError(f"invalid ASN {asn!r}")
    if not _COLLECTOR_ID.fullmatch(collector_id):
        raise ValueError(f"invalid collector id {collector_id!r}")
    rand = base64.b64encode(os.urandom(12)).decode().replace("+", "o").replace("/", "o")
    ts = _now().strftime("%Y%m%dT%H%M%SZ")
    return f"{ts}_{testname}_{cc.upper()}_{asn}_n{collector_id}_{rand}"


def parse_report_id(rid: str) -> ReportId:
    """Split and validate a report id as the legacy collector did; ValueError if malformed.

    Only cc, test name and asn are checked (timestamp, collector id and the random part are
    not, like the legacy API). cc is returned uppercase and the test name lowercase.
    """
    if not isinstance(rid, str) or not _REPORT_ID_CHARS.fullmatch(rid):
        raise ValueError("invalid characters or length")
    parts = rid.split("_")
    if len(parts) != 6:
        raise ValueError("expected 6 parts")
    ts, testname, cc, asn, _cid, _rand = parts
    try:
        number = validate.asn(asn, prefixes=("",), bounded=False)
    except validate.InvalidValue:
        number = None
    if not validate.is_country_code(cc) or not _RID_TESTNAME.fullmatch(testname) \
            or number is None:
        raise ValueError("invalid cc, test name or asn")
    return ReportId(ts, testname.lower(), cc.upper(), number)


def testname_of(test_name: str) -> str:
    """`web_connectivity` -> `webconnectivity`; ValueError unless `[a-z0-9_]{1,60}`."""
    if not validate.is_nettest_name(test_name):
        raise ValueError(f"invalid test name {test_name!r}")
    testname = test_name.replace("_", "")
    if not testname:
        raise ValueError(f"invalid test name {test_name!r}")
    return testname


def normalize_cc(cc: object) -> str:
    """Two ASCII letters, uppercased; anything else is `ZZ` (unknown)."""
    if validate.is_country_code(cc):
        return cc.upper()
    return "ZZ"


def new_measurement_uid(cc: str, testname: str) -> str:
    """`<UTC YYYYmmddHHMMSS.ffffff>_<CC>_<testname>_<16 hex>`.

    The legacy API hashed the body; here the 16 hex are 64 random bits, so two identical bodies
    received in the same microsecond still get different uids (a body hash would collide and
    one spool file would overwrite the other). Uniqueness, not secrecy, is needed: `random`
    (seeded from os.urandom at start; processes are spawned, never forked) avoids a syscall
    that releases the GIL on the submission path.
    """
    uid = f"{_now().strftime('%Y%m%d%H%M%S.%f')}_{cc}_{testname}_{random.getrandbits(64):016x}"
    if not _UID.fullmatch(uid):
        raise ValueError(f"invalid cc {cc!r} or test name {testname!r}")
    return uid


def is_valid_uid(uid: object) -> bool:
    """True for a well-formed measurement uid (safe to use as a file name)."""
    return isinstance(uid, str) and _UID.fullmatch(uid) is not None


def is_valid_hour_dir(name: object) -> bool:
    """True for a spool hour directory name `YYYYmmddHH_CC_testname`."""
    return isinstance(name, str) and _HOUR_DIR.fullmatch(name) is not None


def hour_dir_of(uid: str) -> str:
    """The spool directory of a uid: `YYYYmmddHH_CC_testname` (the hour the uid was made)."""
    if not is_valid_uid(uid):
        raise ValueError(f"invalid measurement uid {uid!r}")
    ts, cc, testname, _ = uid.split("_")
    return f"{ts[:10]}_{cc}_{testname}"
