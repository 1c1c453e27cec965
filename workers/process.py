"""The pure fastpath pipeline: one received measurement -> rows for ClickHouse
(docs/fastpath.md §2).

Used by the worker pool (`process`), by reprocessing and `fastpath score` (`process_record`).
No I/O, no clock, no global state: the same bytes, uid and fingerprints always give the same
rows.

Outcomes of `process` / `process_msm`:

* rows per table: `{"fastpath": [row]}`, plus `"obs_openvpn": [row]` for openvpn (an empty list
  when that row would not fit its table: the reference loses only that insert);
* `{}`: discarded as the reference does silently (no report_id, probe_cc ZZ, probe_asn AS0);
* `MeasurementError`: input the reference drops (not JSON, not an object, missing uid or
  test_name, unparsable times or probe_asn, a value its insert would reject, ...);
* `ScorerCrash` (a MeasurementError): a scoring rule raised; the caller counts it, logs it and
  moves the body to quarantine. Rules raise exactly where the reference's rules raise.

Every row value is checked against its column type, so one hostile measurement can never make
a batched insert fail (the reference inserted one row at a time and just lost that row).
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import ujson

from workers.fingerprints import Fingerprints
from workers.scoring import score_measurement

if TYPE_CHECKING:
    from workers.sources.formats import Record

FASTPATH_COLUMNS = (
    "measurement_uid", "report_id", "input", "probe_cc", "probe_asn", "test_name",
    "test_start_time", "measurement_start_time", "scores", "platform", "anomaly", "confirmed",
    "msm_failure", "blocking_type", "domain", "software_name", "software_version",
    "test_version", "test_runtime", "architecture", "engine_name", "engine_version",
    "test_helper_address", "test_helper_type", "ooni_run_link_id", "is_verified",
)
OBS_OPENVPN_COLUMNS = (
    "anomaly", "bootstrap_time", "confirmed", "failure", "input",
    "last_handshake_transaction_id", "measurement_start_time", "measurement_uid",
    "minivpn_version", "obfs4_version", "obfuscation", "platform", "probe_asn", "probe_cc",
    "probe_network_name", "provider", "remote", "report_id", "resolver_asn", "resolver_ip",
    "resolver_network_name", "software_name", "software_version", "success",
    "success_handshake", "success_icmp", "success_urlgrab", "test_runtime", "test_start_time",
    "transport",
)

_MSM_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_UID_TIME_FORMAT = "%Y%m%d%H%M%S.%f_"
_MSM_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\Z", re.ASCII)
_UID_TIME_RE = re.compile(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)\.(\d{6})_\Z", re.ASCII)
# ClickHouse DateTime (UInt32 seconds): what the reference's driver could insert.
_DATETIME_MIN = dt.datetime(1970, 1, 1)
_DATETIME_MAX = dt.datetime(2106, 2, 7, 6, 28, 15)
_FUTURE_LIMIT = -3600.0  # seconds: start time more than 1 h after receipt
_PAST_LIMIT = 365 * 24 * 3600.0
_UINT32, _UINT64, _INT32 = 2**32, 2**64, 2**31


class MeasurementError(Exception):
    """A measurement the reference drops. `reason` is a short stable label for metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ScorerCrash(MeasurementError):
    """A scoring rule raised: counted, logged and quarantined by the caller."""

    def __init__(self, test_name: Any, exc: BaseException) -> None:
        super().__init__("scorer_crash", f"{test_name!r}: {type(exc).__name__}: {exc}")
        self.test_name = test_name
        self.traceback = "".join(traceback.format_exception(exc))


# ---- public entry points -----------------------------------------------------------------


def process(raw: bytes | str, uid: str, fingerprints: Fingerprints | None, *,
            check_dates: bool = True,
            received: dt.datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rows for one body received by the fastpath (§2.1): the probe's JSON, usually wrapped
    as `{"format": "json", "content": {...}, "is_verified": ...}`.

    `check_dates` applies the date sanity check (§2.4) with the receipt time encoded in the
    uid (API/postcan uids only), or `received` when given (naive UTC).
    """
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        raise MeasurementError("not_json", f"body of type {type(raw).__name__}")
    if not isinstance(raw, bytes | str):
        raw = bytes(raw)
    try:
        obj = ujson.loads(raw)
    except Exception as exc:  # JSONDecodeError, ValueError (huge ints), MemoryError
        raise MeasurementError("not_json", str(exc)[:200]) from None
    return process_msm(obj, uid, fingerprints, check_dates=check_dates, received=received)


def process_msm(obj: Any, uid: str, fingerprints: Fingerprints | None, *,
                is_verified: str | None = None, check_dates: bool = True,
                received: dt.datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """`process` for an already parsed body or measurement (reprocessing of jsonl/postcans).

    As in the reference, a `{"content", "format"}` wrapper is unwrapped and `is_verified` is
    read from the outer object ("u" when absent); an explicit `is_verified` overrides it.
    """
    if not uid or not isinstance(uid, str):
        raise MeasurementError("no_uid", repr(uid)[:100])
    if not isinstance(obj, dict):
        raise MeasurementError("not_object", type(obj).__name__)
    verified = obj.get("is_verified") if is_verified is None else is_verified
    if verified not in ("u", "t", "f"):
        verified = "u"
    msm = _unwrap(obj)

    if msm.get("report_id") is None:
        return {}
    for key, unknown in (("probe_cc", "ZZ"), ("probe_asn", "AS0")):
        value = msm.get(key, "")
        if not isinstance(value, str):
            raise MeasurementError("bad_field", f"{key} is not a string")
        if value.upper() == unknown:
            return {}
    if "test_name" not in msm:
        raise MeasurementError("no_test_name")

    # Metadata first: what the reference would drop at write time is invalid input, not a
    # scorer crash, whatever the scorer does with it.
    try:
        meta = _metadata(msm)
    except MeasurementError:
        raise
    except Exception as exc:
        raise MeasurementError("bad_field", f"{type(exc).__name__}: {exc}"[:300]) from None

    try:
        scores = score_measurement(msm, fingerprints)
        if not isinstance(scores, dict):
            raise TypeError(f"scorer returned {type(scores).__name__}")
    except Exception as exc:
        raise ScorerCrash(msm.get("test_name"), exc) from None

    if check_dates:
        flag_measurements_with_wrong_date(msm, uid, scores, received=received)

    try:
        anomaly = scores.get("blocking_general", 0.0) > 0.5
        failure = scores.get("accuracy", 1.0) < 0.5
        confirmed = bool(scores.get("confirmed", False))
        blocking_type = _nested_vod(scores, "analysis", "blocking_type", "")
        scores_str = scores_json(scores)
    except Exception as exc:
        raise ScorerCrash(msm.get("test_name"), exc) from None

    row = {
        "measurement_uid": uid,
        "report_id": meta["report_id"],
        "input": meta["input"],
        "probe_cc": meta["probe_cc"],
        "probe_asn": meta["probe_asn"],
        "test_name": meta["test_name"],
        "test_start_time": meta["test_start_time"],
        "measurement_start_time": meta["measurement_start_time"],
        "scores": scores_str,
        "platform": meta["platform"],
        "anomaly": "t" if anomaly else "f",
        "confirmed": "t" if confirmed else "f",
        "msm_failure": "t" if failure else "f",
        "blocking_type": blocking_type,
        "domain": meta["domain"],
        "software_name": meta["software_name"],
        "software_version": meta["software_version"],
        "test_version": meta["test_version"],
        "test_runtime": meta["test_runtime"],
        "architecture": meta["architecture"],
        "engine_name": meta["engine_name"],
        "engine_version": meta["engine_version"],
        "test_helper_address": meta["test_helper_address"],
        "test_helper_type": meta["test_helper_type"],
        "ooni_run_link_id": meta["ooni_run_link_id"],
        "is_verified": verified,
    }
    _check_strings(row, ("measurement_uid", "blocking_type"))
    out: dict[str, list[dict[str, Any]]] = {"fastpath": [row]}
    if meta["test_name"] == "openvpn":
        obs = obs_openvpn_row(msm, uid, meta)
        out["obs_openvpn"] = [obs] if obs is not None else []
    return out


# ---- steps ---------------------------------------------------------------------------------


def process_record(rec: Record, fingerprints: Fingerprints | None, *, uid: str | None = None,
                   check_dates: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Rows for a measurement read from a file or the bucket (workers/sources/formats.py):
    `process` for a .post body, `process_msm` for a measurement; `uid` overrides its own.

    Raises MeasurementError, or ValueError for a record that could not be read."""
    if rec.error is not None:
        raise ValueError(rec.error)
    the_uid = uid or rec.uid
    if rec.post is not None:
        return process(rec.post, the_uid, fingerprints, check_dates=check_dates)
    assert rec.msm is not None
    return process_msm(rec.msm, the_uid, fingerprints, check_dates=check_dates)


def _unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    """§2.1 step 4: `{"format": "json", "content": {...}}` -> the measurement."""
    if "content" not in obj or "format" not in obj:
        return obj
    fmt = obj["format"]
    if not isinstance(fmt, str):
        raise MeasurementError("bad_format", repr(fmt)[:50])
    fmt = fmt.lower()
    if fmt == "yaml":
        # Deliberate: the reference YAML-loads `content` here, but the API never forwards YAML
        # and PyYAML on untrusted input is slow and alias-bomb prone; postcans skip YAML too.
        raise MeasurementError("yaml_unsupported")
    if fmt != "json":
        raise MeasurementError("bad_format", fmt[:50])
    msm = obj["content"]
    if not isinstance(msm, dict):
        raise MeasurementError("not_object", f"content is {type(msm).__name__}")
    return msm


def flag_measurements_with_wrong_date(msm: dict[str, Any], uid: str, scores: dict[str, Any], *,
                                      received: dt.datetime | None = None) -> None:
    """§2.4: start time > 1 h after receipt or > 365 days before -> accuracy 0 + msg.

    The receipt time comes from API/postcan uids (`20…`); `received` overrides it.
    """
    if received is None:
        received = receive_time(uid)
        if received is None:
            return
    try:
        start = parse_msm_time(msm.get("measurement_start_time") or "")
    except (TypeError, ValueError):
        return
    if received.tzinfo is not None:
        received = received.astimezone(dt.UTC).replace(tzinfo=None)
    delta = (received - start).total_seconds()
    if delta < _FUTURE_LIMIT:
        scores["accuracy"] = 0.0
        scores["msg"] = "Measurement start time from the future"
    elif delta > _PAST_LIMIT:
        scores["accuracy"] = 0.0
        scores["msg"] = "Measurement start time too old"


def receive_time(uid: str) -> dt.datetime | None:
    """Receipt time (naive UTC) of an API uid `YYYYmmddHHMMSS.ffffff_CC_test_hash`, or None."""
    if not isinstance(uid, str) or len(uid) < 20 or not uid.startswith("20"):
        return None
    head = uid[:22]
    m = _UID_TIME_RE.match(head)
    if m is not None:
        try:
            return dt.datetime(*map(int, m.groups()))
        except ValueError:
            return None
    try:
        return dt.datetime.strptime(head, _UID_TIME_FORMAT)
    except ValueError:
        return None


def parse_msm_time(value: Any) -> dt.datetime:
    """`%Y-%m-%d %H:%M:%S` -> naive datetime, exactly as `strptime` (fast path for the
    canonical form). Raises ValueError / TypeError like `strptime`."""
    if value.__class__ is str:
        m = _MSM_TIME_RE.match(value)
        if m is not None:
            try:
                return dt.datetime(*map(int, m.groups()))
            except ValueError:
                pass  # strptime decides (and raises)
    return dt.datetime.strptime(value, _MSM_TIME_FORMAT)


def scores_json(scores: dict[str, Any]) -> str:
    """§4.2: ujson defaults, as the reference: compact, insertion order, `\\/`, `\\uXXXX`."""
    return ujson.dumps(scores)


def extract_input_domain(msm: dict[str, Any], test_name: Any) -> tuple[str, str]:
    """§2.5: `input` column and the URL's network location (`domain`)."""
    inp = msm.get("input") or ""
    if test_name == "meek_fronted_requests_test" and isinstance(inp, list):
        domain = inp[0]
        return "{" + ",".join(inp) + "}", domain
    if not isinstance(inp, str):
        raise MeasurementError("bad_field", f"input of type {type(inp).__name__}")
    return inp, urlparse(inp).netloc


# ---- metadata and rows -----------------------------------------------------------------------


def _metadata(msm: dict[str, Any]) -> dict[str, Any]:
    """§2.5, with every value checked against its fastpath column type."""
    test_name = msm.get("test_name")
    inp, domain = extract_input_domain(msm, test_name)
    ann = msm.get("annotations")
    if not isinstance(ann, dict):
        ann = {}
    helper_address = helper_type = ""
    helpers = msm.get("test_helpers")
    helpers = {} if helpers is None else helpers
    if isinstance(helpers, dict):
        backend = helpers.get("backend")
        backend = {} if backend is None else backend
        if isinstance(backend, dict):
            helper_address = _vod(backend, "address", "")
            helper_type = _vod(backend, "type", "")
    meta = {
        "report_id": _or_empty(msm.get("report_id")),
        "input": inp,
        "probe_cc": _or_empty(msm.get("probe_cc")),
        "probe_asn": _probe_asn(msm, _UINT32),
        "test_name": _or_empty(test_name),
        "test_start_time": _column_time(msm.get("test_start_time")),
        "measurement_start_time": _column_time(msm.get("measurement_start_time")),
        "platform": _vod(ann, "platform", "unset"),
        "domain": domain,
        "software_name": _vod(msm, "software_name", ""),
        "software_version": _vod(msm, "software_version", ""),
        "test_version": _vod(msm, "test_version", ""),
        "test_runtime": _float32(_vod(msm, "test_runtime", 0.0), "test_runtime"),
        "architecture": _vod(ann, "architecture", ""),
        "engine_name": _vod(ann, "engine_name", ""),
        "engine_version": _vod(ann, "engine_version", ""),
        "test_helper_address": helper_address,
        "test_helper_type": helper_type,
        "ooni_run_link_id": _run_link_id(_vod(ann, "ooni_run_link_id", "")),
    }
    _check_strings(meta, ("report_id", "input", "probe_cc", "test_name", "platform", "domain",
                          "software_name", "software_version", "test_version", "architecture",
                          "engine_name", "engine_version", "test_helper_address",
                          "test_helper_type"))
    return meta


def obs_openvpn_row(msm: dict[str, Any], uid: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    """§2.10 row, or None when it cannot be built or would not fit the table (the reference
    logs and loses that insert, keeping the fastpath row)."""
    try:
        tk = _vod(msm, "test_keys", {})
        row = {
            "anomaly": msm.get("success") is True,  # quirk §8.6: top level, normally absent
            "bootstrap_time": _float32(_vod(tk, "bootstrap_time", 0), "bootstrap_time"),
            "confirmed": False,
            "failure": tk.get("failure") or "",
            "input": msm.get("input") or "",
            "last_handshake_transaction_id": _last_handshake_transaction_id(tk),
            "measurement_start_time": meta["measurement_start_time"],
            "measurement_uid": uid,
            "minivpn_version": tk.get("minivpn_version") or "",
            "obfs4_version": tk.get("obfs4_version") or "",
            "obfuscation": tk.get("obfuscation") or "",
            "platform": msm.get("platform") or "",  # quirk §8.6: not from annotations
            "probe_asn": _probe_asn(msm, _INT32),
            "probe_cc": msm.get("probe_cc") or "",
            "probe_network_name": msm.get("probe_network_name") or "",
            "provider": tk.get("provider") or "",
            "remote": tk.get("remote") or "",
            "report_id": msm.get("report_id") or "",
            "resolver_asn": _resolver_asn(msm.get("resolver_asn")),
            "resolver_ip": msm.get("resolver_ip") or "",
            "resolver_network_name": msm.get("resolver_network_name") or "",
            "software_name": msm.get("software_name") or "",
            "software_version": msm.get("software_version") or "",
            "success": bool(tk.get("success")),
            "success_handshake": bool(tk.get("success_handshake")),
            "success_icmp": bool(tk.get("success_icmp")),
            "success_urlgrab": bool(tk.get("success_urlgrab")),
            "test_runtime": _float32(_vod(msm, "test_runtime", 0), "test_runtime"),
            "test_start_time": meta["test_start_time"],
            "transport": tk.get("transport") or "",
        }
        _check_strings(row, ("failure", "input", "measurement_uid", "minivpn_version",
                             "obfs4_version", "obfuscation", "platform", "probe_cc",
                             "probe_network_name", "provider", "remote", "report_id",
                             "resolver_ip", "resolver_network_name", "software_name",
                             "software_version", "transport"))
        for col in ("last_handshake_transaction_id", "resolver_asn"):
            if not -_INT32 <= row[col] < _INT32:
                return None
    except Exception:
        return None
    return row


def _last_handshake_transaction_id(tk: dict[str, Any]) -> int:
    try:
        value = max(ev["transaction_id"] for ev in tk["network_events"])
    except Exception:
        return 0
    if value.__class__ is bool:
        return int(value)
    if value.__class__ is not int:
        raise TypeError("transaction_id is not an integer")
    return value


def _resolver_asn(value: Any) -> int:
    try:
        if value.startswith("AS"):
            return int(value[2:])
        return int(value)
    except Exception:
        return 0


def _probe_asn(msm: dict[str, Any], limit: int) -> int:
    """`"AS123"` -> 123; missing / malformed raises (reference: dropped)."""
    value = int(msm["probe_asn"][2:])
    if not 0 <= value < limit:
        raise MeasurementError("bad_field", f"probe_asn {value} out of range")
    return value


def _run_link_id(value: Any) -> int | None:
    """`int()` of the annotation; a ValueError gives null (reference)."""
    try:
        link = int(value)
    except ValueError:
        return None
    if not 0 <= link < _UINT64:
        raise MeasurementError("bad_field", f"ooni_run_link_id {link} out of range")
    return link


def _column_time(value: Any) -> dt.datetime:
    t = parse_msm_time(value)
    if not _DATETIME_MIN <= t <= _DATETIME_MAX:
        raise MeasurementError("bad_field", f"time {value!r} outside DateTime range")
    return t


def _float32(value: Any, name: str) -> float:
    """A number storable in a Float32 column (NaN/inf kept, like the reference's driver)."""
    if not isinstance(value, int | float):
        raise MeasurementError("bad_field", f"{name} of type {type(value).__name__}")
    value = float(value)  # OverflowError for huge ints
    struct.pack("<f", value)  # OverflowError beyond the Float32 range
    return value


def _check_strings(row: dict[str, Any], columns: tuple[str, ...]) -> None:
    """String columns must hold UTF-8-encodable str (JSON allows lone surrogates)."""
    for col in columns:
        value = row[col]
        if value.__class__ is not str:
            raise MeasurementError("bad_field", f"{col} of type {type(value).__name__}")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MeasurementError("bad_field", f"{col} is not valid UTF-8") from None


def _vod(d: dict[str, Any], key: str, default: Any) -> Any:
    value = d.get(key)
    return default if value is None else value


def _or_empty(value: Any) -> Any:
    return "" if value is None else value


def _nested_vod(d: dict[str, Any], k1: str, k2: str, default: Any) -> Any:
    inner = d.get(k1)
    if inner is None:
        return default
    return _vod(inner, k2, default)  # a non-object raises, as in the reference
