"""One measurement: measurement_meta, raw_measurement and /api/v1/measurement/{uid}, with the
body found wherever it really is (docs/api.md §2.7):

* metadata lookups on the fixture rows of `read_backend`;
* `peer`: `oonibackend run` on embedded defaults (local object store): a measurement submitted
  through its collector and read back from its spool; bodies uploaded by the real `oonibackend
  upload` to its local object store;
* `api`: `oonibackend run` with a moto S3 bucket and `peer` (after an unreachable host) as
  other API host: a fresh measurement read from the peer's spool, bodies uploaded by `oonibackend
  upload` to S3 read by byte range, and jsonl.gz objects without offsets read by line number.

The fastpath is disabled in both: the tests insert the fastpath rows themselves (computed by the
real fastpath pipeline, workers.process) through the storage layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oonibackend import config, ids
from oonibackend.bodies import archive
from oonibackend.jobs.upload import files
from oonibackend.jobs.upload.uploader import JSONL_COLUMNS
from oonibackend.objectstore.s3 import S3Store
from oonibackend.storage.http import HTTPDatabase
from tests.conftest import SAMPLES, Backend
from tests.readcalls import get_raw as get
from tests.s3server import S3Server
from workers.process import FASTPATH_COLUMNS, process

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET = "ooni-bodies"


# ---- fixtures -----------------------------------------------------------------------------------


def _backend(data: Path, **sections: dict[str, Any]) -> Backend:
    base: dict[str, dict[str, Any]] = {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "server": {"base_url": "https://api.example.org/"},
    }
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return Backend(data, base).start()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = _backend(tmp_path_factory.mktemp("peer"), server={"hostname": "peer.test"})
    yield b
    b.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, s3: S3Server, peer: Backend
        ) -> Iterator[Backend]:
    s3.bucket(BUCKET)
    # "http://127.0.0.1:1" sorts first in the ring and refuses connections: it is skipped.
    b = _backend(tmp_path_factory.mktemp("api"),
                 server={"hostname": "api.test",
                         "other_collectors": ["http://127.0.0.1:1", peer.url, "api.test"]},
                 s3={"bucket": BUCKET, "endpoint_url": s3.url, "region": "us-east-1",
                     "access_key_id": "test", "secret_access_key": "test"})
    yield b
    b.stop()


def database(b: Backend) -> HTTPDatabase:
    return HTTPDatabase(config.load(str(b.config), data_dir=str(b.data_dir)))


async def insert_fastpath(b: Backend, bodies: dict[str, bytes]) -> list[dict[str, Any]]:
    """The fastpath rows of {uid: .post body}, as the real pipeline computes them."""
    rows = [row for uid, body in bodies.items()
            for row in process(body, uid, None, check_dates=False)["fastpath"]]
    db = database(b)
    try:
        await db.insert("fastpath", rows, FASTPATH_COLUMNS)
    finally:
        await db.close()
    return rows


async def insert_jsonl(b: Backend, rows: list[dict[str, Any]]) -> None:
    db = database(b)
    try:
        await db.insert("jsonl", rows, JSONL_COLUMNS)
    finally:
        await db.close()


def get_json(b: Backend, path: str) -> tuple[int, dict[str, str], Any]:
    status, headers, data = get(b, path)
    assert headers["Content-Type"].startswith("application/json"), (status, data[:200])
    return status, headers, json.loads(data)


def content_of(name: str = "report1.json", **fields: Any) -> dict[str, Any]:
    m = json.loads((SAMPLES / name).read_text())
    m.update(fields)
    return m


def expected_body(content: dict[str, Any], uid: str) -> dict[str, Any]:
    """What every source serves: the submitted measurement plus its uid."""
    return dict(content, measurement_uid=uid)


async def submit(b: Backend, **fields: Any) -> tuple[str, bytes, dict[str, Any]]:
    """Open a report and submit one measurement through the real collector."""
    async with aiohttp.ClientSession() as s:
        meta = {"data_format_version": "0.2.0", "format": "json", "probe_asn": "AS12874",
                "probe_cc": "IT", "software_name": "ooniprobe", "software_version": "3.20",
                "test_name": "web_connectivity", "test_start_time": "2024-01-01 00:00:00",
                "test_version": "0.4.3"}
        async with s.post(b.url + "/report", json=meta) as r:
            assert r.status == 200
            rid = (await r.json())["report_id"]
        content = content_of(report_id=rid, probe_cc="IT", probe_asn="AS12874",
                             measurement_start_time=dt.datetime.now(dt.UTC).strftime(
                                 "%Y-%m-%d %H:%M:%S"), **fields)
        body = json.dumps({"format": "json", "content": content}).encode()
        async with s.post(f"{b.url}/report/{rid}", data=body) as r:
            assert r.status == 200
            uid = (await r.json())["measurement_uid"]
    path = b.data_dir / "spool" / "incoming" / ids.hour_dir_of(uid) / f"{uid}.post"
    for _ in range(500):
        if path.exists():
            break
        await asyncio.sleep(0.01)
    assert path.read_bytes() == body
    return uid, body, content


def spool_posts(b: Backend, hour: str, n: int, tag: str) -> dict[str, tuple[bytes, dict]]:
    """n measurements of an old, closed hour written into a backend's spool (uid -> (.post
    body, content)), with new-format report ids; `tag`: hex digits making the uids unique."""
    out = {}
    hour_dir = f"{hour}_IT_webconnectivity"
    d = b.data_dir / "spool" / "incoming" / hour_dir
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        uid = f"{hour}{i:02d}00.{i:06d}_IT_webconnectivity_{tag}{i:0{16 - len(tag)}x}"
        assert ids.hour_dir_of(uid) == hour_dir
        content = content_of(
            report_id=f"{hour[:8]}T{hour[8:]}0000Z_webconnectivity_IT_12874_n1_{tag}{i:0{16 - len(tag)}d}",
            input=f"https://example.org/{tag}/{i}", probe_cc="IT", probe_asn="AS12874",
            measurement_start_time=f"{hour[:4]}-{hour[4:6]}-{hour[6:8]} {hour[8:]}:{i:02d}:00")
        body = json.dumps({"format": "json", "content": content}).encode()
        (d / f"{uid}.post").write_bytes(body)
        out[uid] = (body, content)
    return out


def run_upload(b: Backend, hour: str) -> None:
    r = subprocess.run([sys.executable, "-m", "oonibackend", "upload", "--config",
                        str(b.config), "--data-dir", str(b.data_dir), "--hour", hour],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "upload done:" in r.stdout


def assert_served(b: Backend, uid: str, expected: dict[str, Any]) -> None:
    """raw_measurement, measurement_meta?full and /measurement/{uid} all give the body."""
    status, headers, data = get(b, f"/api/v1/raw_measurement?measurement_uid={uid}")
    assert status == 200 and json.loads(data) == expected
    assert headers["Cache-Control"] == "max-age=86400"
    assert headers["Content-Type"].startswith("application/json")
    status, headers, meta = get_json(b, f"/api/v1/measurement_meta?measurement_uid={uid}"
                                        "&full=true")
    assert status == 200 and meta["measurement_uid"] == uid
    assert isinstance(meta["raw_measurement"], str)
    assert json.loads(meta["raw_measurement"]) == expected
    assert headers["Cache-Control"] == "max-age=60"
    status, headers, data = get(b, f"/api/v1/measurement/{uid}")
    assert status == 200 and json.loads(data) == expected
    assert headers["Cache-Control"] == "max-age=3600"


# ---- metadata on the fixture rows (read_backend) -------------------------------------------------

MY_UID = "20210709005529.664022_MY_webconnectivity_68e5bea1060d1874"
MY_RID = "20210709T004340Z_webconnectivity_MY_4818_n1_YCM7J9mGcEHds2K3"
MY_META = {
    "anomaly": True, "confirmed": False, "failure": False,
    "input": "https://www.backtrack-linux.org/",
    "measurement_start_time": "2025-07-09T00:55:13Z",
    "measurement_uid": MY_UID, "probe_asn": 4818, "probe_cc": "MY", "report_id": MY_RID,
    "scores": '{"blocking_general":1.0,"blocking_global":0.0,"blocking_country":0.0,'
              '"blocking_isp":0.0,"blocking_local":0.0,"analysis":{"blocking_type":'
              '"http-failure"}}',
    "test_name": "web_connectivity", "test_start_time": "2025-07-09T00:43:40Z",
    "category_code": "", "verification_status": "unverified",
}


def test_meta_by_report_id_and_input(read_backend):
    """Legacy test_get_measurement_meta_basic (this fixture has the row in 2025-07)."""
    status, headers, body = get_json(
        read_backend, f"/api/v1/measurement_meta?report_id={MY_RID}"
                      "&input=https://www.backtrack-linux.org/")
    assert (status, body) == (200, MY_META) and headers["Cache-Control"] == "max-age=60"


def test_meta_by_uid(read_backend):
    """Found even though the row's start time is years away from the uid's."""
    assert get_json(read_backend, f"/api/v1/measurement_meta?measurement_uid={MY_UID}")[2] == \
        MY_META


def test_meta_full_without_any_body_gives_an_empty_string(read_backend):
    status, headers, body = get_json(read_backend, "/api/v1/measurement_meta?measurement_uid="
                                                   f"{MY_UID}&full=true")
    assert status == 200 and body == dict(MY_META, raw_measurement="")
    assert headers["Cache-Control"] == "max-age=0, no-cache"


def test_meta_by_report_id_without_input(read_backend):
    """Legacy test_get_measurement_meta_input_none_from_fp: category_code null."""
    body = get_json(read_backend, "/api/v1/measurement_meta?report_id=20210709T000017Z_"
                                  "httpinvalidrequestline_CH_3303_n1_8mr2M3dzkoFmmjIU")[2]
    assert body["measurement_uid"] == \
        "20210709000024.440526_CH_httpinvalidrequestline_3937f817503ed4ea"
    assert (body["input"], body["category_code"], body["probe_asn"]) == ("", None, 3303)
    assert body["test_name"] == "http_invalid_request_line" and body["scores"].startswith("{")


@pytest.mark.parametrize("uid,category", [
    ("20210709024813.577239_IT_webconnectivity_eee689109f6f8c56", "GRP"),     # global list
    ("20240101000008.418582_RU_webconnectivity_9c63d324b91535ea", "NEWS"),    # country lists
])
def test_meta_category_from_the_test_lists(read_backend, uid, category):
    assert get_json(read_backend, f"/api/v1/measurement_meta?measurement_uid={uid}")[2][
        "category_code"] == category


def test_unknown_measurements(read_backend):
    uid = "20210709005529.664022_MY_webconnectivity_0000000000000000"
    status, headers, body = get_json(read_backend, f"/api/v1/measurement_meta?measurement_uid={uid}")
    assert (status, body) == (200, {}) and headers["Cache-Control"] == "max-age=0, no-cache"
    # Explorer's /m/ page shows "not found" for exactly this
    assert get_json(read_backend, f"/api/v1/measurement_meta?measurement_uid={uid}&full=true")[
        2] == {"raw_measurement": ""}
    assert get_json(read_backend, "/api/v1/measurement_meta?report_id=20210709T004340Z_"
                                  "webconnectivity_MY_4818_n1_000000000000000")[2] == {}
    status, _, body = get_json(read_backend, f"/api/v1/raw_measurement?measurement_uid={uid}")
    assert (status, body) == (200, {})
    status, _, body = get_json(read_backend, "/api/v1/measurement/temp-id-999999999999999999")
    assert (status, body) == (400, {"error": "Incorrect or inexistent measurement_uid"})


@pytest.mark.parametrize("query", [
    "report_id=BOGUS", "", "measurement_uid=short", "measurement_uid=../../../../etc/passwd",
    f"report_id={MY_RID}&input=%3Cscript%3E", f"report_id={MY_RID}&input=~!^{{}}",
    f"measurement_uid={MY_UID}&full=maybe",
])
def test_meta_bad_parameters_are_400(read_backend, query):
    for route in ("measurement_meta", "raw_measurement"):
        if route == "raw_measurement" and "full=" in query:
            continue
        status, _, body = get_json(read_backend, f"/api/v1/{route}?{query}")
        assert status == 400 and set(body) == {"error"}, (route, query, body)
    assert "Invalid report_id" in get_json(
        read_backend, "/api/v1/measurement_meta?report_id=BOGUS")[2]["error"]


def test_measurement_path_validation(read_backend):
    for uid in ("short", "x" * 101, "a%2F..%2F..%2Fetc"):
        status, _, body = get_json(read_backend, f"/api/v1/measurement/{uid}")
        assert status in (400, 404) and "error" in body


# ---- the local spool and the spool route (peer) --------------------------------------------------


async def test_submitted_measurement_read_back_from_the_spool(peer):
    uid, body, content = await submit(peer)
    [row] = await insert_fastpath(peer, {uid: body})
    expected = expected_body(content, uid)
    assert_served(peer, uid, expected)
    meta = get_json(peer, f"/api/v1/measurement_meta?measurement_uid={uid}")[2]
    assert {k: meta[k] for k in ("report_id", "input", "probe_cc", "probe_asn", "test_name",
                                 "scores")} == {
        "report_id": content["report_id"], "input": content["input"], "probe_cc": "IT",
        "probe_asn": 12874, "test_name": "web_connectivity", "scores": row["scores"]}
    # by report id and input, extra parameters ignored (Explorer's download link)
    status, _, data = get(peer, f"/api/v1/raw_measurement?report_id={content['report_id']}"
                                f"&input={content['input']}&webview=1&language=en")
    assert status == 200 and json.loads(data) == expected
    # download as a file
    status, headers, data = get(peer, f"/api/v1/measurement/{uid}?download=true")
    assert headers["Content-Disposition"] == \
        f"attachment; filename=ooni_measurement-{uid}.json"
    # bodies are cached: still served once the spool file is gone
    spooled = peer.data_dir / "spool" / "incoming" / ids.hour_dir_of(uid) / f"{uid}.post"
    spooled.rename(spooled.with_suffix(".moved"))
    try:
        assert json.loads(get(peer, f"/api/v1/raw_measurement?measurement_uid={uid}")[2]) == \
            expected
    finally:
        spooled.with_suffix(".moved").rename(spooled)


async def test_spool_route_serves_raw_post_files(peer):
    uid, body, _ = await submit(peer, input="https://example.net/spool-route")
    hour_dir = ids.hour_dir_of(uid)
    status, headers, data = get(peer, f"/measurement_spool/{hour_dir}/{uid}.post")
    assert (status, data) == (200, body)
    missing = uid[:-1] + ("0" if uid[-1] != "0" else "1")
    for path in (f"/measurement_spool/{hour_dir}/{missing}.post",
                 f"/measurement_spool/{hour_dir}/{uid}.json",
                 f"/measurement_spool/{hour_dir}/{uid}",
                 f"/measurement_spool/2020010100_IT_webconnectivity/{uid}.post",
                 f"/measurement_spool/{hour_dir}/..%2F..%2F..%2Fwal.post",
                 "/measurement_spool/..%2F..%2Fetc/passwd.post",
                 f"/measurement_spool/{hour_dir}%2F..%2F{hour_dir}/{uid}.post"):
        status, _, err = get_json(peer, path)
        assert status == 404 and err == {"error": "Not found"}, path


async def test_newest_version_and_unknown_networks(peer):
    uid, body, content = await submit(peer, input="https://example.net/rescored")
    [row] = await insert_fastpath(peer, {uid: body})
    db = database(peer)
    try:
        await db.insert("fastpath", [dict(row, scores='{"rescored":true}', anomaly="t")],
                        FASTPATH_COLUMNS)
        hidden, hbody, _ = await submit(peer, input="https://example.net/as0")
        [h] = await insert_fastpath(peer, {hidden: hbody})
        await db.insert("fastpath", [dict(h, measurement_uid=hidden + "0", probe_asn=0)],
                        FASTPATH_COLUMNS)
    finally:
        await db.close()
    meta = get_json(peer, f"/api/v1/measurement_meta?measurement_uid={uid}")[2]
    assert (meta["scores"], meta["anomaly"]) == ('{"rescored":true}', True)
    assert get_json(peer, f"/api/v1/measurement_meta?measurement_uid={hidden}0")[2] == {}


# ---- another host's spool (api asks peer) --------------------------------------------------------


async def test_fresh_measurement_from_another_hosts_spool(api, peer):
    uid, body, content = await submit(peer, input="https://example.net/from-peer")
    await insert_fastpath(api, {uid: body})
    assert not (api.data_dir / "spool" / "incoming" / ids.hour_dir_of(uid)).exists()
    assert_served(api, uid, expected_body(content, uid))


async def test_body_nowhere(api):
    """A fastpath row without a body anywhere (no spool, no peer, no jsonl row)."""
    uid = "20240105060000.000001_IT_webconnectivity_00000000000000ff"
    content = content_of(report_id="20240105T060000Z_webconnectivity_IT_12874_n1_nowhere00000000")
    await insert_fastpath(api, {uid: json.dumps({"format": "json", "content": content}).encode()})
    status, headers, meta = get_json(api, f"/api/v1/measurement_meta?measurement_uid={uid}"
                                          "&full=true")
    assert status == 200 and meta["raw_measurement"] == ""
    assert headers["Cache-Control"] == "max-age=0, no-cache"
    status, _, err = get_json(api, f"/api/v1/raw_measurement?measurement_uid={uid}")
    assert (status, err) == (404, {"error": "Measurement not found"})


# ---- the archive: S3 (api) and the local object store (peer) -------------------------------------


async def test_uploaded_to_s3_read_by_byte_range(api, s3):
    posts = spool_posts(api, "2024010203", 4, "a1")
    run_upload(api, "2024010203")
    assert not any((api.data_dir / "spool" / "incoming").glob("2024010203_*/*.post"))
    assert any(k.endswith(".jsonl.gz") for k in s3.keys(BUCKET))
    await insert_fastpath(api, {uid: body for uid, (body, _) in posts.items()})
    db = database(api)
    try:
        rows = await db.query("SELECT measurement_uid, byte_offset, byte_length FROM jsonl "
                              "WHERE measurement_uid IN %(u)s", {"u": sorted(posts)})
    finally:
        await db.close()
    assert len(rows) == 4 and all(r["byte_length"] > 0 for r in rows)
    for uid, (_, content) in posts.items():
        assert_served(api, uid, expected_body(content, uid))


def _object_rows(key: str, lines: list[files.Line], day: dt.date) -> list[dict[str, Any]]:
    """jsonl rows of an object written without offsets (byte_offset/byte_length 0/0)."""
    return [{"report_id": x.report_id, "input": x.input, "s3path": key, "linenum": x.linenum,
             "measurement_uid": x.measurement_uid, "date": day, "source": "legacy",
             "byte_offset": 0, "byte_length": 0} for x in lines]


async def test_s3_objects_without_offsets_read_by_line_number(api, s3, tmp_path):
    """Older rows (0/0): the object is streamed; a multi-member file built like the uploader
    does, and a single-member file (one gzip stream) larger than one ranged read."""
    posts = spool_posts(api, "2024010207", 6, "b2")
    src = tmp_path / "2024010207_IT_webconnectivity"
    src.mkdir()
    for uid, (body, _) in posts.items():
        (src / f"{uid}.post").write_bytes(body)
        (api.data_dir / "spool" / "incoming" / ids.hour_dir_of(uid) / f"{uid}.post").unlink()
    res = files.build_can(src, sorted(posts), tmp_path / "c.tar.gz", tmp_path / "c.jsonl.gz",
                          tmp_path / "c.rows.json", 0)
    multi = "raw/20240102/07/IT/webconnectivity/2024010207_IT_webconnectivity.legacy.0.jsonl.gz"
    s3.client.put_object(Bucket=BUCKET, Key=multi, Body=(tmp_path / "c.jsonl.gz").read_bytes())
    # the same lines behind ~2.5 MB (compressed) of padding lines, as one gzip stream
    text = gzip.decompress((tmp_path / "c.jsonl.gz").read_bytes()).splitlines()
    padding = [json.dumps({"pad": os.urandom(600).hex()}).encode() for _ in range(3600)]
    single = "raw/20240102/07/IT/webconnectivity/2024010207_IT_webconnectivity.legacy.1.jsonl.gz"
    blob = gzip.compress(b"\n".join(padding + text) + b"\n")
    assert len(blob) > 2 * archive.CHUNK
    s3.client.put_object(Bucket=BUCKET, Key=single, Body=blob)
    lines = sorted(res.lines, key=lambda x: x.linenum)
    first = lines[:3]
    second = [dataclasses.replace(x, linenum=x.linenum + len(padding)) for x in lines[3:]]
    day = dt.date(2024, 1, 2)
    await insert_jsonl(api, _object_rows(multi, first, day) + _object_rows(single, second, day))
    await insert_fastpath(api, {uid: body for uid, (body, _) in posts.items()})
    for uid, (_, content) in posts.items():
        assert_served(api, uid, expected_body(content, uid))


async def test_s3_range_past_the_end_is_the_end(s3, api):
    """S3 answers 416 for a range starting at the object's end: read_line's end of file."""
    key = "raw/test/exact.jsonl.gz"
    blob = gzip.compress(b"a\nb\n")
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=blob)
    cfg = config.load(str(api.config), data_dir=str(api.data_dir))
    reader = S3Store(cfg, BUCKET)
    try:
        assert await archive.read_line(reader, key, 1, chunk_size=len(blob)) == b"b"
        assert await archive.read_line(reader, key, 5, chunk_size=len(blob)) is None
        assert await archive.read_member(reader, key, 0, len(blob)) == b"a\nb"
    finally:
        await reader.close()


async def test_missing_object_is_no_body(api):
    uid = "20240102080000.000001_IT_webconnectivity_00000000000000ee"
    rid = "20240102T080000Z_webconnectivity_IT_12874_n1_missingobject000"
    content = content_of(report_id=rid, input="https://example.org/missing")
    await insert_fastpath(api, {uid: json.dumps({"format": "json", "content": content}).encode()})
    await insert_jsonl(api, [{"report_id": rid, "input": "https://example.org/missing",
                              "s3path": "raw/20240102/08/IT/webconnectivity/none.jsonl.gz",
                              "linenum": 0, "measurement_uid": uid, "date": dt.date(2024, 1, 2),
                              "source": "n1", "byte_offset": 0, "byte_length": 100}])
    assert get_json(api, f"/api/v1/raw_measurement?measurement_uid={uid}")[0] == 404
    assert get_json(api, f"/api/v1/measurement_meta?measurement_uid={uid}&full=1")[2][
        "raw_measurement"] == ""


async def test_local_object_store_on_embedded_defaults(peer):
    posts = spool_posts(peer, "2024010204", 3, "c3")
    run_upload(peer, "2024010204")
    objects = list((peer.data_dir / "objects").rglob("*.jsonl.gz"))
    assert [p.name for p in objects] == ["2024010204_IT_webconnectivity.n1.0.jsonl.gz"]
    assert not any((peer.data_dir / "spool" / "incoming").glob("2024010204_*/*.post"))
    await insert_fastpath(peer, {uid: body for uid, (body, _) in posts.items()})
    for uid, (_, content) in posts.items():
        assert_served(peer, uid, expected_body(content, uid))
