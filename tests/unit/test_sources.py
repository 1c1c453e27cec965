"""Readers of the bucket's file formats, built from the sample measurements in tmp dirs."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import tarfile
from pathlib import Path

import lz4.frame
import pytest

from oonibackend.objectstore import ObjectInfo, keys
from tests.conftest import SAMPLES
from workers.sources import selection
from workers.sources.formats import iter_object, kind_of
from workers.sources.ids import trivial_id
from workers.sources.jsonl_uids import JsonlUids
from workers.sources.legacy_yaml import iter_documents, iter_yaml_msmt_normalized
from workers.sources.selection import Filters
from workers.sources.state import DoneLog

JSON_SAMPLES = ["report1.json", "whatsapp.json", "tor.json", "riseupvpn.json",
                "web_connectivity_ir_fp.json"]


def sample_line(name: str) -> bytes:
    return json.dumps(json.loads((SAMPLES / name).read_bytes())).encode() + b"\n"


def post_body(msm: dict) -> bytes:
    return json.dumps({"format": "json", "content": msm}).encode()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---------------------------------------------------------------- ids


def test_trivial_id_reference_value():
    assert trivial_id(b"", {"measurement_start_time": "2021-02-03 10:11:12"}) == \
        "01202102037f9c2ba4e88f827d61604550760585"


@pytest.mark.parametrize("msm", [{}, {"measurement_start_time": None},
                                 {"measurement_start_time": "2021-02-03T10:11:12Z"}])
def test_trivial_id_without_usable_date(msm):
    uid = trivial_id(b"", msm)
    assert uid.startswith("0100000000") and len(uid) == 40


# ---------------------------------------------------------------- kinds and layout


@pytest.mark.parametrize("name,kind", [
    ("raw/20210709/00/MY/webconnectivity/2021070900_MY_webconnectivity.n0.2.jsonl.gz", "jsonl"),
    ("raw/20210709/00/MY/webconnectivity/2021070900_MY_webconnectivity.n0.2.tar.gz", "postcan"),
    ("canned/2019-08-29/telegram.0.tar.lz4", "tar_lz4"),
    ("canned/2016-01-01/x.json.lz4", "json_lz4"),
    ("canned/2013-05-05/x.yaml.lz4", "yaml_lz4"),
    ("canned/2019-08-29/index.json.gz", None),
    ("raw/20210709/00/MY/webconnectivity/README", None),
])
def test_kind_of(name, kind):
    assert kind_of(name) == kind


def test_days_end_exclusive():
    assert selection.days(dt.date(2021, 7, 9), dt.date(2021, 7, 11)) == \
        [dt.date(2021, 7, 9), dt.date(2021, 7, 10)]
    assert keys.day_prefixes(dt.date(2021, 7, 9)) == ["canned/2021-07-09/", "raw/20210709/"]
    assert selection.parse_day("2021-07-09") == selection.parse_day("20210709")
    with pytest.raises(ValueError):
        selection.parse_day("09/07/2021")


def test_select_filters_and_twins():
    base = "raw/20210709/00"
    objs = [
        ObjectInfo(f"{base}/IT/webconnectivity/2021070900_IT_webconnectivity.n1.0.tar.gz", 10),
        ObjectInfo(f"{base}/IT/webconnectivity/2021070900_IT_webconnectivity.n1.0.jsonl.gz", 10),
        ObjectInfo(f"{base}/IT/webconnectivity/2021070900_IT_webconnectivity.n1.1.jsonl.gz", 10),
        ObjectInfo(f"{base}/DE/signal/2021070900_DE_signal.n1.0.tar.gz", 10),
        ObjectInfo(f"{base}/DE/signal/2021070900_DE_signal.n1.1.tar.gz", 0),
        ObjectInfo("canned/2021-07-09/web_connectivity.00.tar.lz4", 10),
        ObjectInfo("canned/2021-07-09/telegram.0.tar.lz4", 10),
        ObjectInfo("canned/2021-07-09/index.json.gz", 10),
    ]
    chosen = [o.key for o in selection.select(objs, Filters())]
    assert chosen == [
        "canned/2021-07-09/telegram.0.tar.lz4",
        "canned/2021-07-09/web_connectivity.00.tar.lz4",
        f"{base}/DE/signal/2021070900_DE_signal.n1.0.tar.gz",
        f"{base}/IT/webconnectivity/2021070900_IT_webconnectivity.n1.0.tar.gz",
        f"{base}/IT/webconnectivity/2021070900_IT_webconnectivity.n1.1.jsonl.gz",
    ]  # sorted; the .0 jsonl twin, the empty object and the index are left out
    f = Filters.make("it", "web_connectivity")
    chosen = [o.key for o in selection.select(objs, f)]
    assert chosen == ["canned/2021-07-09/web_connectivity.00.tar.lz4",
                    f"{base}/IT/webconnectivity/2021070900_IT_webconnectivity.n1.0.tar.gz",
                    f"{base}/IT/webconnectivity/2021070900_IT_webconnectivity.n1.1.jsonl.gz"]
    assert f.msm_matches({"probe_cc": "IT", "test_name": "web_connectivity"})
    assert not f.msm_matches({"probe_cc": "DE", "test_name": "web_connectivity"})
    assert not f.msm_matches({"probe_cc": "IT", "test_name": "telegram"})
    assert Filters.make("IT, DE,", None).ccs == {"IT", "DE"}
    assert not Filters.make("", None).active


# ---------------------------------------------------------------- formats


def test_jsonl_gz(tmp_path: Path):
    lines = [sample_line(n) for n in JSON_SAMPLES]
    data = gzip.compress(b"".join(lines[:2]) + b"\n" + b"{not json\n" + b"".join(lines[2:]))
    path = tmp_path / "2021070900_IT_webconnectivity.n1.0.jsonl.gz"
    path.write_bytes(data)
    with open(path, "rb") as f:
        recs = list(iter_object(path.name, f, {0: "20210709000001.000000_US_webconnectivity_"
                                                   "0123456789abcdef"}))
    bad = [r for r in recs if r.error]
    good = [r for r in recs if not r.error]
    assert len(bad) == 1 and bad[0].where.endswith(":4")
    assert len(good) == len(JSON_SAMPLES)
    assert good[0].uid == "20210709000001.000000_US_webconnectivity_0123456789abcdef"
    for rec, line in zip(good[1:], lines[1:], strict=True):
        assert rec.uid == trivial_id(line, rec.msm) and rec.msm == json.loads(line)
        assert rec.post is None


def test_postcan(tmp_path: Path):
    members = {}
    for i, name in enumerate(JSON_SAMPLES):
        uid = f"20210709000{i:03d}.000000_IT_webconnectivity_{i:016x}"
        members[f"2021070900_IT_webconnectivity/{uid}.post"] = post_body(
            json.loads((SAMPLES / name).read_bytes()))
    members["2021070900_IT_webconnectivity/notes.txt"] = b"not a post"
    path = tmp_path / "2021070900_IT_webconnectivity.n1.0.tar.gz"
    path.write_bytes(tar_bytes(members))
    with open(path, "rb") as f:
        recs = list(iter_object(path.name, f))
    assert [r.uid + ".post" for r in recs] == [k.split("/")[1] for k in members
                                               if k.endswith(".post")]
    assert [r.post for r in recs] == [v for k, v in members.items() if k.endswith(".post")]
    assert all(r.msm is None and r.error is None for r in recs)


def test_json_lz4_can(tmp_path: Path):
    lines = [sample_line(n) for n in JSON_SAMPLES]
    path = tmp_path / "x.json.lz4"
    path.write_bytes(lz4.frame.compress(b"".join(lines)))
    with open(path, "rb") as f:
        recs = list(iter_object("canned/2019-07-20/x.json.lz4", f))
    assert [r.uid for r in recs] == [trivial_id(line, json.loads(line)) for line in lines]
    assert recs[0].uid.startswith("0120190720")  # report1.json's measurement_start_time


def test_tar_lz4_can_with_json_and_yaml(tmp_path: Path):
    lines = [sample_line(n) for n in JSON_SAMPLES[:3]]
    tar = tar_bytes({"2015-11-05/report.json": b"".join(lines),
                     "2015-11-05/binary_city.yaml": (SAMPLES / "binary_city.yaml").read_bytes(),
                     "2015-11-05/ignored.txt": b"x"}, mode="w")
    path = tmp_path / "http_requests.0.tar.lz4"
    path.write_bytes(lz4.frame.compress(tar))
    with open(path, "rb") as f:
        recs = list(iter_object("canned/2015-11-05/http_requests.0.tar.lz4", f))
    assert len(recs) == 4
    assert [r.uid for r in recs[:3]] == [trivial_id(x, json.loads(x)) for x in lines]
    y = recs[3]
    assert y.uid == "0120151105e6e97af9dabb462dc4066ae2fd58a5"
    assert y.msm["measurement_uid"] == y.uid
    assert y.msm["report_filename"] == "2015-11-05/binary_city.yaml"
    assert y.msm["bucket_date"] == "2015-11-05"


def test_yaml_lz4_can(tmp_path: Path):
    path = tmp_path / "r.yaml.lz4"
    path.write_bytes(lz4.frame.compress((SAMPLES / "http_invalid_request_line.yaml").read_bytes()))
    with open(path, "rb") as f:
        recs = list(iter_object("canned/2018-07-26/r.yaml.lz4", f))
    assert [r.uid for r in recs] == ["012018072655bdb2c4f8c648f4ef622490136d32"]
    assert recs[0].msm["report_filename"] == "2018-07-26/r.yaml"


def test_unknown_kind():
    with pytest.raises(ValueError, match="unexpected can filename"):
        iter_object("raw/x.zip", io.BytesIO(b""))


# ---------------------------------------------------------------- legacy YAML


def test_yaml_binary_city():
    with open(SAMPLES / "binary_city.yaml", "rb") as f:
        msms = list(iter_yaml_msmt_normalized(f, "2015-11-05", "2015-11-05/binary_city.yaml"))
    assert len(msms) == 1
    m = msms[0]
    assert m["probe_city"] == "Reykjavk"
    assert m["measurement_uid"] == "0120151105e6e97af9dabb462dc4066ae2fd58a5"
    assert m["id"] == "d0552436-0a70-21f9-4587-796eec0cf019"
    assert m["measurement_start_time"] == m["test_start_time"] == "2015-11-05 12:29:36"
    assert m["test_keys"]["headers_diff"] == []
    assert m["data_format_version"] == "0.2.0" and m["test_name"] == "http_requests"
    assert m["input"] == "http://666games.net"
    json.dumps(m)


def test_yaml_http_invalid_request_line():
    with open(SAMPLES / "http_invalid_request_line.yaml", "rb") as f:
        msms = list(iter_yaml_msmt_normalized(f, "2018-07-26", "2018-07-26/x.yaml"))
    assert len(msms) == 1
    m = msms[0]
    assert m["measurement_uid"] == "012018072655bdb2c4f8c648f4ef622490136d32"
    assert m["measurement_start_time"] == "2018-07-26 15:50:22"
    assert all(isinstance(x, str) for x in m["test_keys"]["received"])
    json.dumps(m)


def test_yaml_framing_and_skips():
    header = b"---\nreport_id: r\nprobe_cc: IT\ntest_name: dns_consistency\nstart_time: 1.0\n...\n"
    dns_entry = (b"---\ninput: example.org\ntampering: {8.8.8.8: false, 1.1.1.1: true}\n"
                 b"queries:\n- query: \"[Query('example.org', 1, 1)]\"\n"
                 b"  query_type: A\n  resolver: [8.8.8.8, 53]\n"
                 b"  answers:\n  - ['<RR name=example.org type=A class=IN ttl=60s auth=False>',\n"
                 b"     '<A address=93.184.216.34 ttl=60>']\n"
                 b"- query: \"[Query('example.com', 1, 1)]\"\n  query_type: A\n"
                 b"  resolver: [1.1.1.1, 53]\n  answers: []\n...\n")
    broken = b"---\n: : [\n...\n"
    data = header + b"# comment\n" + dns_entry + b"...\n" + broken + b"---\nnull\n...\n" + \
        b"---\ntruncated: 1\n"
    assert len(list(iter_documents(io.BytesIO(data)))) == 4
    msms = list(iter_yaml_msmt_normalized(io.BytesIO(data), "2020-01-01", "2020-01-01/r.yaml"))
    assert len(msms) == 1  # bad YAML, null entry and the truncated one skipped
    tk = msms[0]["test_keys"]
    assert tk["successful"] == ["8.8.8.8"] and tk["inconsistent"] == ["1.1.1.1"]
    q1, q2 = tk["queries"]
    assert q1["hostname"] == "example.org" and q1["resolver_hostname"] == "8.8.8.8"
    assert q1["answers"] == [{"answer_type": "A", "ttl": 60, "ipv4": "93.184.216.34"}]
    assert q2["failure"] == "no_answer"
    unsupported = header.replace(b"dns_consistency", b"tcp_connect") + dns_entry
    assert list(iter_yaml_msmt_normalized(io.BytesIO(unsupported), "2020-01-01", "x/y")) == []
    # a frame that is not YAML ends the report
    assert list(iter_documents(io.BytesIO(header + b"garbage\n" + dns_entry))) == [header]


def test_yaml_http_requests_normalisation():
    header = (b"---\nreport_id: r\nprobe_cc: IT\ntest_name: http_requests_test\n"
              b"start_time: 1400000000.0\noptions: {subargs: [-u, 'http://example.org/']}\n...\n")
    entry = (b"---\ninput: null\ntest_start_time: 1400000001.5\nrequests:\n"
             b"- request: {url: 'shttp://example.org/', headers: {}, body: null, tor: true}\n"
             b"  response: {body: null, headers: [[Server, [nginx]]], code: 200}\n"
             b"- request: {url: 'http://example.org/', headers: {}, body: null}\n"
             b"  response: {body: !!binary aGVsbG8AIHdvcmxk, code: 200,\n"
             b"             headers: [[Content-Length, ['11']]]}\n...\n")
    (m,) = iter_yaml_msmt_normalized(io.BytesIO(header + entry))
    assert m["test_name"] == "http_requests" and m["input"] == "http://example.org/"
    assert m["bucket_date"] == "2014-05-13"
    r1, r2 = m["test_keys"]["requests"]
    assert not r1["request"]["tor"]["is_tor"]  # the experiment request first
    assert r1["response"]["body"] == "hello world" and r1["response"]["response_length"] == 11
    assert r2["request"]["tor"]["is_tor"] and r2["request"]["url"] == "http://example.org/"
    assert r2["response"]["headers"] == {"Server": "nginx"}
    assert m["measurement_start_time"] == "2014-05-13 16:53:21"
    json.dumps(m)


# ---------------------------------------------------------------- state, uids


def test_done_log(tmp_path: Path):
    path = tmp_path / "fp" / "reprocess-2021-07-09-2021-07-10.done"
    log = DoneLog(path)
    log.add(["a", "b"])
    log.add(["b", "c"])
    log.close()
    assert path.read_text() == "a\nb\nc\n"
    with open(path, "a") as f:
        f.write("half-writ")  # a crash in the middle of a line
    log = DoneLog(path)
    assert log.done == {"a", "b", "c"} and "a" in log and "half-writ" not in log
    log.add(["d"])
    log.close()
    assert DoneLog(path).done == {"a", "b", "c", "d"}
    fresh = DoneLog(path, resume=False)
    assert fresh.done == set()
    fresh.close()
    assert path.read_text() == ""


async def test_jsonl_uids_chunks():
    calls: list[list[str]] = []

    async def query(sql: str, params: dict) -> list[dict]:
        calls.append(list(params["paths"]))
        return [{"s3path": p, "linenum": 0, "measurement_uid": f"uid-{p}"}
                for p in params["paths"] if p != "k2.jsonl.gz"]

    uids = JsonlUids(query, chunk=2)
    uids.plan(["k1.jsonl.gz", "x.tar.gz", "k2.jsonl.gz", "k3.jsonl.gz"])
    assert await uids.get("k1.jsonl.gz") == {0: "uid-k1.jsonl.gz"}
    assert await uids.get("k2.jsonl.gz") == {}
    assert await uids.get("k3.jsonl.gz") == {0: "uid-k3.jsonl.gz"}
    assert calls == [["k1.jsonl.gz", "k2.jsonl.gz"], ["k3.jsonl.gz"]]
    assert await uids.get("other.jsonl.gz") == {0: "uid-other.jsonl.gz"}


def test_progress_line():
    from workers.reprocess import Progress, Stats

    out = io.StringIO()
    stats = Stats()
    p = Progress(stats, total_days=4, stream=out, interval=0)
    assert p.eta() is None
    p.start_day(1, dt.date(2021, 7, 10), files=2, nbytes=100)
    stats.measurements = 10
    p.object_done(50)
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("day 2/4 2021-07-10 files 1/2") and "ETA" in line
    assert "msmts 10" in line
    assert p.eta() is not None and p.eta() >= 0
