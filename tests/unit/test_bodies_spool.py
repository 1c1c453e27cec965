"""Bodies read from a spool: the same bytes the uploader will write as the jsonl line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from oonibackend import ids
from oonibackend.bodies import spool
from oonibackend.jobs.upload import files
from tests.conftest import SAMPLES

UID = "20240102030405.123456_IT_webconnectivity_0123456789abcdef"
HOUR_DIR = "2024010203_IT_webconnectivity"


def write_post(spool_dir: Path, uid: str, body: bytes) -> Path:
    path = spool.post_file(spool_dir, ids.hour_dir_of(uid), uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def post_of(content: object, fmt: str = "json") -> bytes:
    return json.dumps({"format": fmt, "content": content}).encode()


@pytest.mark.parametrize("sample", ["report1.json", "web_connectivity_null.json", "tor.json",
                                    "meek.json"])
def test_spool_body_is_the_uploaders_jsonl_line(tmp_path, sample):
    content = json.loads((SAMPLES / sample).read_text())
    write_post(tmp_path, UID, post_of(content))
    body = spool.read_local(tmp_path, UID, 1 << 20)
    # what `oonibackend upload` makes of the same spool file
    res = files.build_can(tmp_path / "incoming" / HOUR_DIR, [UID], tmp_path / "c.tar.gz",
                          tmp_path / "c.jsonl.gz", tmp_path / "c.rows.json", 0)
    assert len(res.lines) == 1
    assert gzip.decompress((tmp_path / "c.jsonl.gz").read_bytes()) == body + b"\n"
    assert json.loads(body) == dict(content, measurement_uid=UID)


def test_integers_beyond_64_bits_are_kept(tmp_path):
    write_post(tmp_path, UID, b'{"format":"json","content":{"report_id":"r","x":%d}}'
               % 2**70)
    body = spool.read_local(tmp_path, UID, 1 << 20)
    assert json.loads(body) == {"report_id": "r", "x": 2**70, "measurement_uid": UID}


@pytest.mark.parametrize("data", [b"not json", b"[1,2]", post_of("a: b", "yaml"),
                                  post_of("text"), b'{"format":"json"}'])
def test_non_json_measurements_have_no_body(tmp_path, data):
    write_post(tmp_path, UID, data)
    assert spool.read_local(tmp_path, UID, 1 << 20) is None


def test_missing_invalid_and_oversized(tmp_path):
    assert spool.read_local(tmp_path, UID, 1 << 20) is None
    assert spool.read_local(tmp_path, "../../../etc/passwd", 1 << 20) is None
    write_post(tmp_path, UID, post_of({"a": "x" * 100}))
    assert spool.read_local(tmp_path, UID, 50) is None
    assert spool.read_post(tmp_path, HOUR_DIR, UID, 50) is None
    assert spool.read_post(tmp_path, HOUR_DIR, UID, 1000).startswith(b'{"format"')


@pytest.mark.parametrize("hour_dir,uid", [
    ("..", UID), (HOUR_DIR, "../x"), ("2024010203_IT_web/..", UID), (HOUR_DIR, UID + "/"),
])
def test_paths_are_built_only_from_valid_names(tmp_path, hour_dir, uid):
    with pytest.raises(ValueError):
        spool.post_file(tmp_path, hour_dir, uid)
