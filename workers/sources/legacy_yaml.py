"""Normalisation of legacy YAML reports (ooniprobe 2012-2016) into data format 0.2.0
(docs/fastpath.md §5).

Only legacy cans hold YAML. A report is a header document followed by one document per
entry; each entry becomes a JSON-like measurement with the header merged in, the old
timestamps converted, test-specific keys moved under `test_keys`, and the uid derived from
the entry's raw bytes (so reprocessing twice gives the same uid).

This is a subset of the reference normaliser: framing, header/entry merge, ids, the time
fields, test name aliases, the HTTP family (requests, bodies, headers, tor), the DNS family
(queries and answers, tampering), http_invalid_request_line; tests the reference refuses
(scapy-based, captive_portal, tls_handshake, tcp_connect, bridge_reachability, lantern,
psiphon) are skipped likewise. Unlike the reference, a missing report_id is derived in UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import string
import uuid
from collections.abc import Iterator
from typing import IO, Any

import yaml

from workers.sources.ids import trivial_id

log = logging.getLogger(__name__)

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SCHEMA_KEYS = (
    "id", "input", "input_hashes", "report_id", "report_filename", "options", "probe_cc",
    "probe_asn", "probe_ip", "probe_city", "backend_version", "data_format_version",
    "test_name", "test_version", "test_start_time", "measurement_start_time", "test_runtime",
    "test_helpers", "software_name", "software_version", "bucket_date", "test_keys",
)
_SCHEMA = frozenset(SCHEMA_KEYS)

TEST_NAME_ALIASES = {
    "HTTP Host": "http_host", "http_requests_test": "http_requests",
    "HTTP Requests Test": "http_requests", "bridgereachability": "bridge_reachability",
    "TCP Connect": "tcp_connect", "DNS tamper": "dns_consistency",
    "dnstamper": "dns_consistency", "HTTP Invalid Request Line": "http_invalid_request_line",
    "HTTP Header Field Manipulation": "http_header_field_manipulation",
    "Multi Protocol Traceroute Test": "multi_protocol_traceroute",
    "multi_protocol_traceroute_test": "multi_protocol_traceroute",
    "traceroute": "multi_protocol_traceroute",
    "parasitic_traceroute_test": "parasitic_traceroute",
    "parasitic_tcp_traceroute_test": "parasitic_traceroute", "tls-handshake": "tls_handshake",
    "captivep": "captive_portal", "captiveportal": "captive_portal",
    "HTTPFilteringBypass": "http_filtering_bypass", "HTTPTrix": "http_trix",
    "netalyzrwrapper": "netalyzr_wrapper",
    "test_get_random_capitalization": "http_header_field_manipulation",
    "test_put_random_capitalization": "http_header_field_manipulation",
    "test_post_random_capitalization": "http_header_field_manipulation",
    "test_random_big_request_method": "http_invalid_request_line",
    "test_random_invalid_field_count": "http_invalid_request_line",
    "summary": "invalid", "test_get": "invalid", "test_post": "invalid", "test_put": "invalid",
    "test_send_host_header": "invalid",
}

HTTP_TESTS = frozenset({
    "http_requests", "http_header_field_manipulation", "http_host", "http_url_list",
    "meek_fronted_requests", "meek_fronted_requests_test", "tor_http_requests_test", "squid",
    "http_filtering_bypass", "http_trix", "http_test",
})
DNS_TESTS = frozenset({"dns_consistency", "dns_injection"})
UNSUPPORTED = frozenset({
    "multi_protocol_traceroute", "parasitic_traceroute", "keyword_filtering", "dns_spoof",
    "chinatrigger", "captive_portal", "tls_handshake", "tcp_connect", "bridge_reachability",
    "lantern_circumvention_tool_test", "lantern", "psiphon_test", "psiphon",
})

_TS_FMT = "%Y-%m-%d %H:%M:%S"


class Unsupported(Exception):
    """The entry's test cannot be normalised (the reference skips it too)."""


# ---------------------------------------------------------------- framing


def iter_documents(stream: IO[bytes]) -> Iterator[bytes]:
    """Raw YAML documents, each from its `---` line to its `...` line inclusive.

    Stray `...` trailers and `#` comments between documents are skipped; anything else
    outside a document is a broken frame and ends the report (logged), as does EOF inside
    a document (a truncated report).
    """
    doc: list[bytes] | None = None
    for line in stream:
        if doc is None:
            if line.rstrip(b"\r\n") == b"---":
                doc = [line]
            elif line.startswith(b"#") or line.rstrip(b"\r\n") in (b"...", b""):
                continue
            else:
                log.info("broken YAML frame, abandoning the report")
                return
        else:
            doc.append(line)
            if line.rstrip(b"\r\n") == b"...":
                yield b"".join(doc)
                doc = None
    if doc is not None:
        log.info("truncated YAML report")


def _load(blob: bytes) -> Any:
    return yaml.load(blob, Loader=_Loader)  # noqa: S506 - a SafeLoader


# ---------------------------------------------------------------- entry point


def iter_yaml_msmt_normalized(stream: IO[bytes], bucket_date: str | None = None,
                              report_filename: str | None = None) -> Iterator[dict[str, Any]]:
    """Normalised measurements of one YAML report; bad entries are logged and skipped.

    `bucket_date` (YYYY-MM-DD) and `report_filename` (`<bucket_date>/<name>`) are stored in
    each measurement; when absent (scoring a loose file) they are derived from the header.
    """
    docs = iter_documents(stream)
    header_blob = next(docs, None)
    if header_blob is None:
        return
    try:
        header = _load(header_blob)
    except yaml.YAMLError as e:
        log.info("unparsable YAML report header: %s", e)
        return
    if not isinstance(header, dict):
        log.info("YAML report header is not a mapping")
        return
    if isinstance(header.get("probe_city"), bytes):
        header["probe_city"] = header["probe_city"].decode("utf-8", "ignore")
    if not header.get("report_id"):
        header["report_id"] = _report_id(header)
    if bucket_date is None:
        bucket_date = _fmt_epoch(header.get("start_time"))[:10]
    if report_filename is None:
        report_filename = f"{bucket_date}/{header['report_id']}.yaml"
    for blob in docs:
        try:
            entry = _load(blob)
        except yaml.YAMLError as e:
            log.info("skipping unparsable YAML entry of %s: %s", report_filename, e)
            continue
        if entry is None:
            continue
        if not isinstance(entry, dict):
            log.info("skipping non-mapping YAML entry of %s", report_filename)
            continue
        hdr = dict(header)
        if "test_start_time" in entry:
            hdr.pop("test_start_time", None)
        entry.update(hdr)
        entry_hash = hashlib.sha1(header_blob + blob).digest()
        try:
            msm = normalize_entry(entry, bucket_date, report_filename, entry_hash)
        except Exception as e:  # the reference skips entries whose normalisation fails
            log.info("skipping YAML entry of %s: %s", report_filename, e)
            continue
        msm["measurement_uid"] = trivial_id(blob, msm)
        yield msm


def _report_id(header: dict[str, Any]) -> str:
    """A stable id for headers without one: start time + 50 letters of a SHA-512."""
    ts = dt.datetime.fromtimestamp(_epoch(header.get("start_time")), dt.UTC)
    h = hashlib.sha512("".join(str(header.get(k) or "") for k in (
        "probe_cc", "probe_asn", "test_name", "software_version", "probe_city")).encode())
    letters = string.ascii_letters
    return ts.strftime("%Y%m%dT%H%M%SZ_") + "".join(letters[b % 52] for b in h.digest()[:50])


def _epoch(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _fmt_epoch(value: Any) -> str:
    return dt.datetime.fromtimestamp(_epoch(value), dt.UTC).strftime(_TS_FMT)


def _fmt_str(value: str) -> str:
    for fmt in (_TS_FMT, "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f"):
        try:
            return dt.datetime.strptime(value, fmt).strftime(_TS_FMT)
        except ValueError:
            pass
    raise ValueError(f"unparsable time {value!r}")


# ---------------------------------------------------------------- normalisation


def normalize_entry(entry: dict[str, Any], bucket_date: str, report_filename: str,
                    entry_hash: bytes) -> dict[str, Any]:
    """One merged header+entry to data format 0.2.0; Unsupported / ValueError to skip it."""
    if isinstance(entry.get("report"), dict):
        entry.update(entry.pop("report"))
    name = entry.get("test_name")
    entry["test_name"] = (TEST_NAME_ALIASES.get(name, name.lower())
                          if isinstance(name, str) and name else "invalid")
    entry["bucket_date"] = bucket_date
    entry["report_filename"] = report_filename
    if not entry.get("id"):
        entry["id"] = str(uuid.UUID(bytes=entry_hash[:16]))
    for k in SCHEMA_KEYS:
        entry.setdefault(k, None)

    if entry.get("data_format_version") == "0.2.0":
        if entry["test_keys"] is None:
            entry["test_keys"] = {k: entry.pop(k) for k in list(entry) if k not in _SCHEMA}
        return _plain(entry)

    test_start = _fmt_epoch(entry.pop("start_time", None))
    old = entry.get("test_start_time")
    if isinstance(old, int | float) and not isinstance(old, bool):
        entry["measurement_start_time"] = _fmt_epoch(old)
        entry["test_start_time"] = test_start
    elif isinstance(old, str):
        entry["test_start_time"] = _fmt_str(old)
        mst = entry.get("measurement_start_time")
        entry["measurement_start_time"] = _fmt_str(mst) if isinstance(mst, str) else \
            entry["test_start_time"]
    else:
        entry["test_start_time"] = entry["measurement_start_time"] = test_start
    entry["data_format_version"] = "0.2.0"
    if isinstance(entry.get("options"), dict):
        entry["options"] = entry["options"].get("subargs")
    tk = entry.get("test_keys") if isinstance(entry.get("test_keys"), dict) else {}
    for k in [k for k in entry if k not in _SCHEMA]:
        tk[k] = entry.pop(k)
    entry["test_keys"] = tk

    test = entry["test_name"]
    if test in UNSUPPORTED:
        raise Unsupported(f"unsupported test {test}")
    if test in HTTP_TESTS:
        _normalize_http(entry)
    elif test in DNS_TESTS:
        _normalize_dns(entry)
    elif test == "http_invalid_request_line":
        for k in ("received", "sent"):
            if isinstance(tk.get(k), list):
                tk[k] = [x.decode("utf-8", "ignore") if isinstance(x, bytes) else x
                         for x in tk[k]]
    return _plain(entry)


def _text(value: Any) -> Any:
    """Bytes as UTF-8 text with backslash escapes for invalid sequences, NULs removed."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace").replace("\x00", "")
    return value


def _plain(obj: Any) -> Any:
    """JSON-serialisable: bytes to text, sets to sorted lists, YAML dates to strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((_plain(v) for v in obj), key=str)
    if isinstance(obj, bytes):
        return _text(obj)
    if isinstance(obj, dt.datetime):
        return obj.strftime(_TS_FMT)
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return obj


# ---------------------------------------------------------------- HTTP family


def _option(options: Any, *flags: str) -> str | None:
    if not isinstance(options, list):
        return None
    for i, v in enumerate(options[:-1]):
        if v in flags and isinstance(options[i + 1], str):
            return options[i + 1]
    return None


def _headers(value: Any) -> dict[str, Any]:
    """[[name, [v1, ...]], ...] (twisted) -> {name: v1}; dicts kept."""
    if isinstance(value, dict):
        return {str(k): _text(v[0] if isinstance(v, list) and v else v)
                for k, v in value.items()}
    out: dict[str, Any] = {}
    if isinstance(value, list):
        for item in value:
            if isinstance(item, list | tuple) and len(item) == 2:
                name, values = item
                v = values[0] if isinstance(values, list) and values else values
                out[str(_text(name))] = _text(v)
    return out


def _response(resp: Any) -> dict[str, Any]:
    if not isinstance(resp, dict):
        return {"body": None, "headers": {}}
    resp = dict(resp)
    resp["body"] = _text(resp.get("body"))
    resp["headers"] = _headers(resp.get("headers"))
    for name, value in resp["headers"].items():
        if name.lower() == "content-length":
            try:
                resp["response_length"] = int(value)
            except (TypeError, ValueError):
                pass
    return resp


def _request(req: Any) -> dict[str, Any]:
    if not isinstance(req, dict):
        return {"body": None, "headers": {}, "tor": {"is_tor": False}}
    req = dict(req)
    req["body"] = _text(req.get("body"))
    req["headers"] = _headers(req.get("headers"))
    url = req.get("url")
    tor = req.get("tor")
    is_tor = bool(tor.get("is_tor")) if isinstance(tor, dict) else bool(tor)
    if isinstance(url, str) and url.startswith("shttp://"):
        is_tor, req["url"] = True, "http://" + url[len("shttp://"):]
    info = tor if isinstance(tor, dict) else {}
    req["tor"] = {"is_tor": is_tor, "exit_ip": info.get("exit_ip"),
                  "exit_name": info.get("exit_name")}
    return req


def _normalize_http(entry: dict[str, Any]) -> None:
    tk = entry["test_keys"]
    if entry.get("input") is None:
        entry["input"] = _option(entry.get("options"), "--url", "-u")
    if "requests" not in tk and ("request" in tk or "response" in tk):
        tk["requests"] = [{"request": tk.pop("request", None),
                           "response": tk.pop("response", None)}]
    reqs = []
    for r in tk.get("requests") or []:
        r = dict(r) if isinstance(r, dict) else {}
        r["request"] = _request(r.get("request"))
        r["response"] = _response(r.get("response"))
        reqs.append(r)
    experiment = [r for r in reqs if not r["request"]["tor"]["is_tor"]]
    control = [r for r in reqs if r["request"]["tor"]["is_tor"]]
    ordered = experiment[:1] + control[:1]
    ordered += [r for r in reqs if not any(r is o for o in ordered)]
    if "requests" in tk or reqs:
        tk["requests"] = ordered
    if isinstance(tk.get("headers_diff"), set | frozenset | list):
        tk["headers_diff"] = sorted(tk["headers_diff"], key=str)


# ---------------------------------------------------------------- DNS family

_QUERY = re.compile(r"\[Query\('([^']*)'")
_RR_TYPE = re.compile(r"type=([A-Z0-9]+)")
_TTL = re.compile(r"ttl=(\d+)")
_ADDR = re.compile(r"address=([0-9a-fA-F.:]+)")
_NAME = re.compile(r"name=([^\s>]+)")


def _answer(rr: Any) -> dict[str, Any] | None:
    """`["<RR name=x type=A class=IN ttl=60s auth=False>", "<A address=1.2.3.4 ttl=60>"]`."""
    parts = [str(_text(p)) for p in (rr if isinstance(rr, list | tuple) else [rr])]
    text = " ".join(parts)
    m = _RR_TYPE.search(parts[0]) if parts else None
    if m is None:
        return None
    kind = m.group(1)
    ttl = _TTL.search(text)
    ans: dict[str, Any] = {"answer_type": kind, "ttl": int(ttl.group(1)) if ttl else None}
    payload = parts[-1]
    addr = _ADDR.search(payload)
    if kind in ("A", "AAAA") and addr:
        ans["ipv4" if kind == "A" else "ipv6"] = addr.group(1)
    else:
        name = _NAME.search(payload)
        if name:
            ans["hostname"] = name.group(1)
    return ans


def _normalize_dns(entry: dict[str, Any]) -> None:
    tk = entry["test_keys"]
    queries = []
    for q in tk.get("queries") or []:
        if not isinstance(q, dict):
            continue
        q = dict(q)
        m = _QUERY.search(str(_text(q.get("query")) or ""))
        if m:
            q["hostname"] = m.group(1)
        resolver = q.pop("resolver", None)
        if isinstance(resolver, list | tuple) and len(resolver) == 2:
            q["resolver_hostname"], q["resolver_port"] = resolver[0], resolver[1]
        answers = [a for a in (_answer(rr) for rr in q.get("answers") or []) if a]
        q["answers"] = answers
        q.pop("query", None)
        if not answers and not q.get("failure"):
            q["failure"] = "no_answer"
        queries.append(q)
    if "queries" in tk:
        tk["queries"] = queries
    tampering = tk.get("tampering")
    if isinstance(tampering, dict):
        tk["successful"] = sorted(k for k, v in tampering.items()
                                  if v is False or v == "reverse_match")
        tk["inconsistent"] = sorted(k for k, v in tampering.items() if v is True)
        tk["failed"] = sorted(k for k, v in tampering.items()
                              if isinstance(v, str) and v != "reverse_match")
        tk["errors"] = {k: v for k, v in tampering.items()
                        if isinstance(v, str) and v != "reverse_match"}
