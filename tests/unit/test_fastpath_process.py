"""The pure pipeline (docs/fastpath.md §2.1-§2.5, §2.9, §2.10): exact rows, flags, metadata,
hostile input."""

from __future__ import annotations

import copy
import datetime as dt
import json
import random

import pytest
import ujson

from oonibackend.storage.types import json_each_row
from tests.conftest import SAMPLES
from workers.fingerprints import Fingerprints
from workers.process import (
    FASTPATH_COLUMNS,
    OBS_OPENVPN_COLUMNS,
    MeasurementError,
    ScorerCrash,
    flag_measurements_with_wrong_date,
    process,
    process_msm,
    receive_time,
)

D = dt.datetime
ZERO5 = ('"blocking_general":0.0,"blocking_global":0.0,"blocking_country":0.0,'
         '"blocking_isp":0.0,"blocking_local":0.0')


@pytest.fixture(scope="module")
def fps() -> Fingerprints:
    return Fingerprints.from_json_files(SAMPLES / "fingerprints_dns.json",
                                        SAMPLES / "fingerprints_http.json")


def raw(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def load(name: str) -> dict:
    return json.loads(raw(name))


def row_of(msm: dict, fps=None, uid="bogus_uid", **kw) -> dict:
    out = process(ujson.dumps(msm).encode(), uid, fps, **kw)
    return out["fastpath"][0]


# ---- §6.3 rows ---------------------------------------------------------------------------------


def test_browser_web_row(fps):
    out = process(raw("browser_web.json"), "bogus_uid", fps)
    assert list(out) == ["fastpath"]
    (row,) = out["fastpath"]
    assert list(row) == list(FASTPATH_COLUMNS)
    assert row == {
        "anomaly": "f", "architecture": "", "blocking_type": "", "confirmed": "f",
        "domain": "www.viber.com", "engine_name": "", "engine_version": "",
        "input": "https://www.viber.com/", "measurement_start_time": D(2023, 3, 20, 18, 27, 2),
        "measurement_uid": "bogus_uid", "msm_failure": "f", "ooni_run_link_id": None,
        "platform": "unset", "probe_asn": 577, "probe_cc": "CA",
        "report_id": "20230320T182635Z_browserweb_CA_577_n1_k3Fvk1o9okE1w7w7",
        "scores": "{" + ZERO5 + ',"extra":{"browser_name":"chrome",'
                  '"load_time_ms":357.40000000037253}}',
        "software_name": "ooniprobe-web", "software_version": "0.1.0",
        "test_helper_address": "", "test_helper_type": "", "test_name": "browser_web",
        "test_runtime": 0.35740000000037253, "test_start_time": D(2023, 3, 20, 18, 26, 35),
        "test_version": "0.1.0", "is_verified": "u"}


def test_openvpn_rows(fps):
    out = process(raw("openvpn.json"), "bogus_uid", fps)
    assert list(out) == ["fastpath", "obs_openvpn"]
    (row,) = out["fastpath"]
    assert row == {
        "measurement_uid": "bogus_uid", "report_id": "",
        "input": "vpn://openvpn.riseup/?addr=198.252.153.109:443&transport=tcp&obfs=obfs4",
        "probe_cc": "RO", "probe_asn": 9009, "test_name": "openvpn",
        "test_start_time": D(2022, 11, 21, 17, 22, 11),
        "measurement_start_time": D(2022, 11, 21, 17, 22, 49),
        "scores": "{" + ZERO5 + ',"extra":{"test_runtime":37.975210163}}',
        "platform": "linux", "anomaly": "f", "confirmed": "f", "msm_failure": "f",
        "blocking_type": "", "domain": "openvpn.riseup", "software_name": "miniooni",
        "software_version": "3.17.0-alpha", "test_version": "0.0.16",
        "test_runtime": 37.975210163, "architecture": "amd64", "engine_name": "ooniprobe-engine",
        "engine_version": "3.17.0-alpha", "test_helper_address": "", "test_helper_type": "",
        "ooni_run_link_id": None, "is_verified": "u"}
    assert list(row) == list(FASTPATH_COLUMNS)
    (obs,) = out["obs_openvpn"]
    assert list(obs) == list(OBS_OPENVPN_COLUMNS)
    assert obs == {
        "anomaly": False, "bootstrap_time": 1.5671859910000001, "confirmed": False,
        "failure": "",
        "input": "vpn://openvpn.riseup/?addr=198.252.153.109:443&transport=tcp&obfs=obfs4",
        "last_handshake_transaction_id": 8, "measurement_start_time": D(2022, 11, 21, 17, 22, 49),
        "measurement_uid": "bogus_uid", "minivpn_version": "(devel)", "obfs4_version": "(devel)",
        "obfuscation": "obfs4", "platform": "", "probe_asn": 9009, "probe_cc": "RO",
        "probe_network_name": "M247 Ltd", "provider": "riseup", "remote": "198.252.153.109:443",
        "report_id": "", "resolver_asn": 9009, "resolver_ip": "185.45.15.210",
        "resolver_network_name": "M247 Ltd", "software_name": "miniooni",
        "software_version": "3.17.0-alpha", "success": True, "success_handshake": True,
        "success_icmp": True, "success_urlgrab": True, "test_runtime": 37.975210163,
        "test_start_time": D(2022, 11, 21, 17, 22, 11), "transport": "tcp"}


def test_id_sample_metadata(fps):
    row = process(raw("20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json"),
                  "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3", fps)["fastpath"][0]
    assert (row["test_helper_address"], row["test_helper_type"]) == ("https://5.th.ooni.org",
                                                                     "https")
    assert (row["platform"], row["architecture"], row["engine_name"], row["engine_version"],
            row["test_version"]) == ("android", "arm64", "ooniprobe-engine", "3.25.0", "0.4.3")
    assert (row["anomaly"], row["confirmed"], row["msm_failure"]) == ("t", "t", "f")


def test_obs_openvpn_quirks(fps):
    msm = load("openvpn.json")
    msm |= {"success": True, "platform": "top", "resolver_asn": "x"}
    msm["test_keys"]["network_events"] = []
    obs = process(ujson.dumps(msm).encode(), "u1", fps)["obs_openvpn"][0]
    assert (obs["anomaly"], obs["platform"], obs["resolver_asn"],
            obs["last_handshake_transaction_id"]) == (True, "top", 0, 0)
    msm["resolver_asn"] = "1234"
    msm["test_keys"]["failure"] = {"not": "a string"}  # would fail its insert: row dropped only
    out = process(ujson.dumps(msm).encode(), "u1", fps)
    assert out["obs_openvpn"] == [] and len(out["fastpath"]) == 1


# ---- unwrapping, is_verified, discards ---------------------------------------------------------


def test_wrapped_body_and_is_verified(fps):
    msm = load("browser_web.json")
    plain = process(raw("browser_web.json"), "x", fps)["fastpath"][0]
    for verified, stored in (("t", "t"), ("f", "f"), ("u", "u"), ("bogus", "u"), (None, "u"),
                             (["t"], "u")):
        body = {"format": "JSON", "content": msm, "is_verified": verified}
        row = process(ujson.dumps(body).encode(), "x", fps)["fastpath"][0]
        assert row == plain | {"is_verified": stored}
    inner = dict(msm, is_verified="t")  # read on the outer object only
    body = {"format": "json", "content": inner}
    assert process(ujson.dumps(body).encode(), "x", fps)["fastpath"][0]["is_verified"] == "u"
    assert process_msm(msm, "x", fps, is_verified="t")["fastpath"][0]["is_verified"] == "t"
    assert process_msm(copy.deepcopy(msm), "x", fps)["fastpath"][0] == plain


@pytest.mark.parametrize("body,reason", [
    ({"format": "yaml", "content": "---\na: 1\n"}, "yaml_unsupported"),
    ({"format": "xml", "content": {}}, "bad_format"),
    ({"format": 5, "content": {}}, "bad_format"),
    ({"format": "json", "content": "str"}, "not_object"),
    ({"format": "json", "content": None}, "not_object"),
])
def test_bad_wrappers(fps, body, reason):
    with pytest.raises(MeasurementError) as e:
        process(ujson.dumps(body).encode(), "x", fps)
    assert e.value.reason == reason


def test_discards(fps):
    msm = load("browser_web.json")
    for change in ({"report_id": None}, {"probe_cc": "ZZ"}, {"probe_cc": "zz"},
                   {"probe_asn": "AS0"}, {"probe_asn": "as0"}):
        assert process_msm(msm | change, "x", fps) == {}
    m = dict(msm)
    del m["report_id"]
    assert process_msm(m, "x", fps) == {}
    assert process_msm(msm | {"report_id": ""}, "x", fps)["fastpath"][0]["report_id"] == ""
    # checked in order: a discard stops before the next (malformed) field is looked at
    assert process_msm(msm | {"report_id": None, "probe_cc": None}, "x", fps) == {}
    assert process_msm(msm | {"probe_cc": "ZZ", "probe_asn": None}, "x", fps) == {}
    with pytest.raises(MeasurementError):
        process_msm(msm | {"probe_cc": None, "probe_asn": "AS0"}, "x", fps)


# ---- date sanity (§2.4) ---------------------------------------------------------------------------


UID = "20211109115946.469008_IR_webconnectivity_9ba8a0d4f9b116fe"


def test_flag_wrong_date():
    scores: dict = {}
    flag_measurements_with_wrong_date({"measurement_start_time": "2021-11-09 23:59:31"}, UID,
                                      scores)
    assert scores == {"accuracy": 0.0, "msg": "Measurement start time from the future"}
    scores = {"blocking_general": 0.0, "accuracy": 0.5}
    flag_measurements_with_wrong_date({"measurement_start_time": "2020-01-01 00:00:01"}, UID,
                                      scores)
    assert list(scores) == ["blocking_general", "accuracy", "msg"]
    assert scores["msg"] == "Measurement start time too old"


@pytest.mark.parametrize("start,flagged", [
    ("2021-11-09 12:59:46", False),  # exactly 1 h ahead (minus the uid's microseconds)
    ("2021-11-09 12:59:47", True),
    ("2020-11-09 11:59:47", False),  # 365 days minus a bit
    ("2020-11-09 11:59:46", True),
    ("", False), ("garbage", False), (None, False),
])
def test_date_boundaries(start, flagged):
    scores: dict = {}
    flag_measurements_with_wrong_date({"measurement_start_time": start}, UID, scores)
    assert bool(scores) is flagged


def test_receive_time():
    assert receive_time(UID) == D(2021, 11, 9, 11, 59, 46, 469008)
    assert receive_time("bogus_uid") is None
    assert receive_time("01202102037f9c2ba4e88f827d61604550760585") is None  # trivial id
    assert receive_time("2021110911594") is None  # too short
    assert receive_time("20211109115946.4_IR_webconnectivity_x") is None
    assert receive_time("20211332115946.469008_IR_x") is None


def test_dates_in_process(fps):
    msm = load("browser_web.json") | {"measurement_start_time": "2030-01-01 00:00:00"}
    body = ujson.dumps(msm).encode()
    uid = "20230320182702.000000_CA_browserweb_0123456789abcdef"
    row = process(body, uid, fps)["fastpath"][0]
    assert row["msm_failure"] == "t" and row["scores"].endswith(
        ',"accuracy":0.0,"msg":"Measurement start time from the future"}')
    assert process(body, uid, fps, check_dates=False)["fastpath"][0]["msm_failure"] == "f"
    assert process(body, "bogus_uid", fps)["fastpath"][0]["msm_failure"] == "f"
    row = process(body, "bogus_uid", fps, received=D(2032, 1, 1))["fastpath"][0]
    assert row["scores"].endswith('"msg":"Measurement start time too old"}')
    aware = dt.datetime(2029, 12, 31, 22, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert process(body, "bogus_uid", fps, received=aware)["fastpath"][0]["msm_failure"] == "f"
    # riseupvpn scores {} also get flagged
    rv = load("riseupvpn.json") | {"measurement_start_time": "2030-01-01 00:00:00"}
    row = process(ujson.dumps(rv).encode(), uid, fps)["fastpath"][0]
    assert row["scores"] == '{"accuracy":0.0,"msg":"Measurement start time from the future"}'


# ---- metadata (§2.5) -------------------------------------------------------------------------------


BASE = {"report_id": "r", "probe_cc": "IT", "probe_asn": "AS30722", "test_name": "ndt",
        "measurement_start_time": "2022-01-01 00:00:00", "test_start_time": "2022-01-01 00:00:00"}


@pytest.mark.parametrize("change,column,value", [
    ({"input": "http://x.org"}, "domain", "x.org"),
    ({"input": "http://user:pw@X.org:81/p"}, "domain", "user:pw@X.org:81"),
    ({"input": "google.com"}, "domain", ""),
    ({"input": "1.2.3.4:22"}, "domain", ""),
    ({"input": "obfs4 1.2.3.4:443"}, "domain", ""),
    ({"input": "stun://stun.l.google.com:19302"}, "domain", "stun.l.google.com:19302"),
    ({"input": None}, "input", ""),
    ({"input": ""}, "domain", ""),
    ({"test_helpers": {"backend": "httpo://x"}}, "test_helper_address", ""),
    ({"test_helpers": "x"}, "test_helper_type", ""),
    ({"test_helpers": {"backend": {"address": "a", "type": None}}}, "test_helper_type", ""),
    ({"test_helpers": {"backend": {"address": "a"}}}, "test_helper_address", "a"),
    ({"annotations": "x"}, "platform", "unset"),
    ({"annotations": {"platform": None}}, "platform", "unset"),
    ({"annotations": {"platform": "linux"}}, "platform", "linux"),
    ({"annotations": {"ooni_run_link_id": ""}}, "ooni_run_link_id", None),
    ({"annotations": {"ooni_run_link_id": "abc"}}, "ooni_run_link_id", None),
    ({"annotations": {"ooni_run_link_id": "1.5"}}, "ooni_run_link_id", None),
    ({"annotations": {"ooni_run_link_id": "12"}}, "ooni_run_link_id", 12),
    ({"annotations": {"ooni_run_link_id": 10002.7}}, "ooni_run_link_id", 10002),
    ({"annotations": {"ooni_run_link_id": None}}, "ooni_run_link_id", None),
    ({"test_runtime": None}, "test_runtime", 0.0),
    ({"test_runtime": 3}, "test_runtime", 3.0),
    ({"software_name": None}, "software_name", ""),
    ({"test_version": None}, "test_version", ""),
    ({"probe_asn": "AS4294967295"}, "probe_asn", 4294967295),
    ({"probe_cc": "it"}, "probe_cc", "it"),
])
def test_metadata(change, column, value):
    assert row_of(BASE | change)[column] == value


def test_meek_list_input(fps):
    row = process(raw("meek.json"), "x", fps)["fastpath"][0]
    assert (row["input"], row["domain"]) == ("{a0.awsstatic.com,d2cly7j4zqgua7.cloudfront.net}",
                                             "a0.awsstatic.com")
    assert row_of(BASE | {"test_name": "meek_fronted_requests_test",
                          "input": ["b", "a"], "test_keys": {}})["input"] == "{b,a}"


@pytest.mark.parametrize("change", [
    {"input": ["http://x"]},  # a list input outside meek
    {"input": {"a": 1}},
    {"input": "http://[::1"},  # urlparse: invalid IPv6 URL
    {"probe_asn": "AS"}, {"probe_asn": "1"}, {"probe_asn": "ASx"}, {"probe_asn": None},
    {"probe_asn": "AS-5"}, {"probe_asn": "AS4294967296"}, {"probe_asn": 5},
    {"probe_cc": None}, {"probe_cc": 5},
    {"measurement_start_time": None}, {"measurement_start_time": "2022-01-01T00:00:00Z"},
    {"test_start_time": "1969-12-31 23:59:59"}, {"test_start_time": "2200-01-01 00:00:00"},
    {"annotations": {"ooni_run_link_id": [1]}}, {"annotations": {"ooni_run_link_id": -1}},
    {"annotations": {"ooni_run_link_id": 2**64}},
    {"annotations": {"ooni_run_link_id": 1e400}},  # int(inf): OverflowError
    {"annotations": {"platform": 5}}, {"software_name": ["x"]}, {"report_id": 5},
    {"test_runtime": "1.5"}, {"test_runtime": 1e39}, {"test_runtime": 2**1100},
    {"report_id": "\ud800"}, {"test_name": 5},
])
def test_invalid_metadata(change):
    with pytest.raises(MeasurementError) as e:
        row_of(BASE | change)
    assert not isinstance(e.value, ScorerCrash)
    m = dict(BASE)
    del m["probe_asn"]
    with pytest.raises(MeasurementError):
        row_of(m)


def test_missing_test_name_and_unsupported():
    m = dict(BASE)
    del m["test_name"]
    with pytest.raises(MeasurementError) as e:
        row_of(m)
    assert e.value.reason == "no_test_name"
    row = row_of(BASE | {"test_name": "dnscheck"})
    assert (row["scores"], row["msm_failure"]) == ("{" + ZERO5 + ',"accuracy":0.0}', "t")


def test_time_parsing_like_strptime():
    assert row_of(BASE | {"test_start_time": "2022-1-2 3:4:5"})["test_start_time"] == D(
        2022, 1, 2, 3, 4, 5)
    assert row_of(BASE | {"test_start_time": "2022-01-02   03:04:05"})["test_start_time"] == D(
        2022, 1, 2, 3, 4, 5)
    for bad in ("2022-02-30 00:00:00", "2022-01-01 24:00:00", "2022-01-01 00:00:60"):
        with pytest.raises(MeasurementError):
            row_of(BASE | {"test_start_time": bad})


# ---- crashes and hostile input ---------------------------------------------------------------


def test_scorer_crash(fps):
    msm = load("web_connectivity_ir_fp.json")
    msm["test_keys"]["requests"] = [{"response": {"headers": [["Location", "x"]]}}]
    with pytest.raises(ScorerCrash) as e:
        process_msm(msm, "x", fps)
    assert e.value.reason == "scorer_crash" and e.value.test_name == "web_connectivity"
    assert "Traceback" in e.value.traceback and "AttributeError" in e.value.traceback
    tor = load("tor.json")
    tor["test_keys"]["targets"] = {"a": {"failure": "", "network_events": []}}
    with pytest.raises(ScorerCrash):
        process_msm(tor, "x", fps)


@pytest.mark.parametrize("body", [
    b"", b"{", b'{"a": 1', b"[]", b"null", b'"x"', b"1", b"nan", b"\xff\xfe",
    b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"1" * 5000,
    b'{"content": {}, "format": "json"}', b'{"report_id": "r"}',
    b'{"report_id": "r", "probe_cc": "IT", "probe_asn": "AS1", "test_name": null}',
])
def test_garbage_bodies(fps, body):
    try:
        process(body, "x", fps)
    except MeasurementError:
        pass


def test_bad_arguments(fps):
    for uid in ("", None, 5):
        with pytest.raises(MeasurementError):
            process(b"{}", uid, fps)
    with pytest.raises(MeasurementError):
        process(None, "x", fps)  # type: ignore[arg-type]
    body = raw("tor.json")
    assert process(memoryview(body), "x", fps) == process(bytearray(body), "x", fps) == process(
        body.decode(), "x", fps)


HOSTILE = [None, [], {}, "", 0, -1, 1.5, 1e308, float("nan"), 2**70, True, False, "\ud800",
           "unknown_failure x", [None], [[]], [{}], {"a": None}, ["x"], "x" * 300,
           {"data": "!!", "format": "base64"}, {"format": "base64"}, [[["deep"]]]]


def _paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _paths(v, path + (i,))


def _replace(obj, path, value):
    obj = copy.deepcopy(obj)
    if not path:
        return value
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


def _check_rows(out):
    assert isinstance(out, dict)
    for table, rows in out.items():
        cols = FASTPATH_COLUMNS if table == "fastpath" else OBS_OPENVPN_COLUMNS
        for r in rows:
            assert tuple(r) == cols
        json_each_row(rows, cols)  # what the batching sink sends: must never fail


def test_hostile_mutations(fps):
    """Every field of every sample replaced by hostile values: rows or MeasurementError."""
    rnd = random.Random(1)
    outcomes = {"rows": 0, "discarded": 0, "invalid": 0, "crash": 0}
    for path in sorted(SAMPLES.glob("*.json")):
        sample = json.loads(path.read_text())
        if not isinstance(sample, dict):
            continue
        paths = list(_paths(sample))
        for p in rnd.sample(paths, min(len(paths), 60)):
            for value in rnd.sample(HOSTILE, 6):
                msm = _replace(sample, p, value)
                for body in (msm, {"format": "json", "content": msm, "is_verified": value}):
                    try:
                        out = process(ujson.dumps(body).encode(), "bogus_uid", fps)
                    except ScorerCrash:
                        outcomes["crash"] += 1
                        continue
                    except MeasurementError:
                        outcomes["invalid"] += 1
                        continue
                    _check_rows(out)
                    outcomes["rows" if out else "discarded"] += 1
    assert all(outcomes.values()), outcomes


def test_process_is_pure(fps):
    msm = load("web_connectivity_ir_fp.json")
    before = copy.deepcopy(msm)
    a = process_msm(msm, "x", fps)
    assert msm == before and process_msm(msm, "x", fps) == a
