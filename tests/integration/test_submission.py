"""Measurement collection against the real API process: open / submit / close, the spool
files, submit_measurement, and 4xx JSON answers for hostile or broken input."""

from __future__ import annotations

import gzip
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import zstandard

from oonibackend import ids
from tests.conftest import SAMPLES, Backend, free_port
from tests.fakefastpath import FakeFastpath
from tests.integration.conftest import spool_file as _spool_file

MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, make_serve
          ) -> Iterator[tuple[Backend, FakeFastpath]]:
    port = free_port()
    fp = FakeFastpath(port).start()
    b = make_serve(tmp_path_factory.mktemp("collector"), port,
                      server={"max_body_size": MAX_BODY}).start()
    yield b, fp
    b.stop()
    fp.stop()


@pytest.fixture
def api(stack) -> Backend:
    return stack[0]


@pytest.fixture
def fastpath(stack) -> FakeFastpath:
    return stack[1]


def measurement(test_name: str = "web_connectivity", cc: str = "IT", **extra) -> dict:
    m = json.loads((SAMPLES / "report1.json").read_text())
    m.update(test_name=test_name, probe_cc=cc, probe_asn="AS12874", **extra)
    return m


def spool_file(api: Backend, uid: str) -> Path:
    return _spool_file(api.data_dir, uid)


async def post(api: Backend, path: str, data: bytes, headers: dict | None = None
               ) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as s, s.post(api.url + path, data=data,
                                                    headers=headers or {}) as r:
        raw = await r.read()
        assert r.content_type == "application/json", (r.status, raw[:200])
        body = json.loads(raw)
        assert body is not None  # probes reject a `null` body
        return r.status, body, dict(r.headers)


async def open_report(api: Backend, **fields) -> str:
    data = {"data_format_version": "0.2.0", "format": "json", "probe_asn": "AS12874",
            "probe_cc": "IT", "software_name": "ooniprobe", "software_version": "3.20",
            "test_name": "web_connectivity", "test_start_time": "2024-01-01 00:00:00",
            "test_version": "0.4.3", **fields}
    status, body, headers = await post(api, "/report", json.dumps(data).encode())
    assert status == 200, body
    assert body["backend_version"] == "1.3.5"
    assert "json" in body["supported_formats"]
    assert "no-cache" in headers.get("Cache-Control", "")
    return body["report_id"]


async def test_open_submit_close_plain_zstd_gzip(api, fastpath):
    rid = await open_report(api)
    _, testname, cc, asn, cid, rand = rid.split("_")
    assert (testname, cc, asn, cid, len(rand)) == ("webconnectivity", "IT", "12874", "n1", 16)
    body = json.dumps({"format": "json", "content": measurement(report_id=rid)}).encode()
    encodings = {
        "plain": (body, {}),
        "zstd": (zstandard.ZstdCompressor().compress(body), {"Content-Encoding": "zstd"}),
        "gzip": (gzip.compress(body), {"Content-Encoding": "gzip"}),
    }
    uids = []
    for name, (data, headers) in encodings.items():
        status, resp, h = await post(api, f"/report/{rid}", data, headers)
        assert status == 200, (name, resp)
        uid = resp["measurement_uid"]
        assert ids.is_valid_uid(uid) and uid.split("_")[1:3] == ["IT", "webconnectivity"]
        # The spool holds the decompressed bytes exactly as the probe sent them.
        assert spool_file(api, uid).read_bytes() == body, name
        uids.append(uid)
    assert len(set(uids)) == 3  # identical bodies, distinct uids
    status, resp, h = await post(api, f"/report/{rid}/close", b"")
    assert (status, resp) == (200, {}) and h["Cache-Control"] == "max-age=3600"
    # Delivered to the fastpath promptly, body unchanged.
    assert fastpath.wait_for(set(uids), 5)
    assert all(fastpath.bodies()[u] == body for u in uids)


async def test_open_report_normalisation(api):
    rid = await open_report(api, probe_cc="it", probe_asn="as3320", test_name="Web_Connectivity")
    assert rid.split("_")[1:4] == ["webconnectivity", "IT", "3320"]
    rid = await open_report(api, probe_cc="ITA", probe_asn="bogus")
    assert rid.split("_")[2:4] == ["ZZ", "0"]
    rid = await open_report(api, probe_cc=None, probe_asn=None)
    assert rid.split("_")[2:4] == ["ZZ", "0"]
    rid = await open_report(api, probe_cc="i_t", probe_asn="AS12345678901")  # > 12 chars
    assert rid.split("_")[2:4] == ["IT", "0"]


async def test_as0_zz_measurements_are_kept(api, metric):
    before = metric(api, "oonibackend_as0_zz_measurements_total")
    rid = await open_report(api, probe_cc="", probe_asn="")
    body = json.dumps({"format": "json", "content": measurement(cc="ZZ")}).encode()
    status, resp, _ = await post(api, f"/report/{rid}", body)
    assert status == 200
    assert spool_file(api, resp["measurement_uid"]).read_bytes() == body
    assert "_ZZ_" in resp["measurement_uid"]
    assert metric(api, "oonibackend_as0_zz_measurements_total") == before + 1


async def test_submit_measurement_content_string_with_null_credentials(api, fastpath):
    rid = await open_report(api)
    content = json.dumps(measurement(report_id=rid))
    req = {"format": "json", "content": content, "nym": None, "zkp_request": None,
           "manifest_version": None, "protocol_version": None}
    status, resp, _ = await post(api, "/api/v1/submit_measurement", json.dumps(req).encode())
    assert status == 200, resp
    uid = resp["measurement_uid"]
    assert uid.split("_")[1:3] == ["IT", "webconnectivity"]
    # Spooled in the legacy collector envelope, the content string embedded byte for byte,
    # the verdict beside it (null credential fields are not kept).
    raw = spool_file(api, uid).read_bytes()
    assert raw == b'{"format":"json","content":' + content.encode() + b',"is_verified":"u"}'
    assert resp["verification_status"] == "unverified" and resp["error"] is None
    assert json.loads(raw)["content"] == json.loads(content)
    assert fastpath.wait_for({uid}, 5)


async def test_submit_measurement_content_object_without_report_id(api):
    m = measurement(test_name="dnscheck", cc="de")
    m.pop("report_id", None)
    status, resp, _ = await post(api, "/api/v1/submit_measurement",
                                 json.dumps({"format": "json", "content": m}).encode())
    assert status == 200, resp
    uid = resp["measurement_uid"]
    assert uid.split("_")[1:3] == ["DE", "dnscheck"]
    spooled = json.loads(spool_file(api, uid).read_bytes())
    assert spooled["format"] == "json"
    rid = ids.parse_report_id(spooled["content"].pop("report_id"))  # one was assigned
    assert (rid.testname, rid.cc, rid.asn) == ("dnscheck", "DE", 12874)
    assert spooled["content"] == m


BAD_REPORT_IDS = [
    "bogus", "20210208T162755Z_ndt_DZ_36947_n1", "20210208T162755Z_ndt_DZZ_36947_n1_x",
    "20210208T162755Z_ndt_DZ_AS1_n1_x", "20210208T162755Z_" + "a" * 30 + "_DZ_1_n1_x",
    urllib.parse.quote("20210208T162755Z_ndt_DZ_1_n1_é"), "x" * 120,
    "..%2F..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc",
    "20210208T162755Z_ndt_DZ_1_n1_x%00", "20210208T162755Z_ndt_DZ_1_n1_x%0A",
    "20210208T162755Z_ndt_DZ_1_n1_x%2F..",
]


@pytest.mark.parametrize("rid", BAD_REPORT_IDS)
async def test_bad_report_ids(api, rid):
    async with aiohttp.ClientSession() as s, s.post(
        api.url + "/report/" + rid, data=b'{"format":"json","content":{}}',
        skip_auto_headers=(), allow_redirects=False,
    ) as r:
        assert 400 <= r.status < 500, (rid, r.status)
        if r.status == 400:
            assert await r.json() == {"error": "Incorrect format"}
    assert not (api.data_dir / "etc").exists()
    assert not list((api.data_dir / "spool").glob("**/*passwd*"))


def _bomb() -> bytes:
    return zstandard.ZstdCompressor().compress(b"\0" * (MAX_BODY + 1))


@pytest.mark.parametrize("name,data,headers,status", [
    ("not json", b"hello", {}, 400),
    ("json array", b"[1, 2]", {}, 400),
    ("no content", b'{"format": "json"}', {}, 400),
    ("content number", b'{"format": "json", "content": 1}', {}, 400),
    ("bad zstd", b"garbage", {"Content-Encoding": "zstd"}, 400),
    ("truncated zstd", zstandard.compress(b'{"format":"json","content":{}}' * 50)[:-8],
     {"Content-Encoding": "zstd"}, 400),
    ("bad gzip", b"garbage", {"Content-Encoding": "gzip"}, 400),
    ("truncated gzip", gzip.compress(b'{"format":"json","content":{}}')[:-4],
     {"Content-Encoding": "gzip"}, 400),
    ("unknown encoding", b"{}", {"Content-Encoding": "br"}, 400),
    ("oversized", b"{" + b" " * (MAX_BODY + 10) + b"}", {}, 413),
    ("zstd bomb", _bomb(), {"Content-Encoding": "zstd"}, 413),
    ("gzip bomb", gzip.compress(b"\0" * (MAX_BODY + 1)), {"Content-Encoding": "gzip"}, 413),
])
async def test_bad_submissions(api, name, data, headers, status):
    rid = await open_report(api)
    spool = api.data_dir / "spool" / "incoming"
    before = set(spool.glob("*/*.post"))
    st, body, _ = await post(api, f"/report/{rid}", data, headers)
    assert st == status, (name, body)
    assert isinstance(body.get("error"), str) and body["error"]
    assert set(spool.glob("*/*.post")) == before  # nothing spooled


@pytest.mark.parametrize("req,error", [
    (b"nope", "not valid JSON"),
    (b'{"format": "json", "content": "{not json"}', "not valid JSON"),
    (b'{"format": "json", "content": "[1]"}', "JSON object"),
    (b'{"format": "json", "content": null}', "content"),
    (b'{"format": "yaml", "content": {}}', "format"),
    (b'{"format": "json", "content": {"probe_cc": "IT"}}', "test_name"),
    (b'{"format": "json", "content": {"test_name": "../../x", "probe_cc": "IT"}}', "test_name"),
])
async def test_bad_submit_measurement(api, req, error):
    st, body, _ = await post(api, "/api/v1/submit_measurement", req)
    assert st == 400 and error in body["error"], body


async def test_open_report_requires_json(api):
    st, body, _ = await post(api, "/report", b"not json")
    assert (st, body) == (400, {"error": "JSON expected"})
    st, body, _ = await post(api, "/report", json.dumps({"test_name": "../x"}).encode())
    assert st == 400 and "test_name" in body["error"]


async def test_oversized_open_report_is_413_json(api):
    st, body, _ = await post(api, "/report", b" " * (MAX_BODY + 1))
    assert st == 413 and body == {"error": "Request body too large"}


def test_health_still_up_after_abuse(api):
    """The API alone (no database here) still answers /health at once, naming what fails."""
    import urllib.error
    import urllib.request

    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(api.url + "/health", timeout=5) as r:
            status, body = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        status, body = e.code, json.loads(e.read())
    assert time.monotonic() - t0 < 2
    assert (status, body["status"]) == (503, "fail")
    assert "clickhouse_error" in body["errors"]


async def test_fuzz_never_500(api):
    """Random and pathological inputs: always a JSON answer, never a 5xx."""
    import random

    rnd = random.Random(1234)
    rid = await open_report(api)
    deep = b'{"format":"json","content":' + b"[" * 5000 + b"]" * 5000 + b"}"
    bodies = [deep, b"\xff\xfe\x00", b"{" * 100_000, b'{"content": {}, "format": 1}',
              b'{"format":"json","content":"' + b"\\ud800" + b'"}', b"null", b"1e999999"]
    bodies += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 300)))
               for _ in range(40)]
    paths = [f"/report/{rid}", "/report", "/api/v1/submit_measurement", f"/report/{rid}/close"]
    encodings = [None, "zstd", "gzip", "deflate", "identity", "zstd, gzip", "GZIP", "x-y"]
    async with aiohttp.ClientSession() as s:
        for i, body in enumerate(bodies):
            for path in paths:
                enc = encodings[i % len(encodings)]
                headers = {"Content-Encoding": enc} if enc else {}
                async with s.post(api.url + path, data=body, headers=headers) as r:
                    assert r.status < 500, (path, enc, body[:50], await r.text())
                    assert r.content_type == "application/json"
                    assert await r.json() is not None
