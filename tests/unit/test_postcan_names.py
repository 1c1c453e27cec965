"""Postcan member names as OONI's uploader writes them, and reprocessing reading both the new
names and the bare `<uid>.post` of our older postcans (docs/current_services.md §8)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from oonibackend.jobs.upload import files
from tests.unit.test_sources import post_body, tar_bytes
from tests.unit.test_upload import make_spool
from workers.sources.formats import iter_object

HOUR = "2024010203_IT_webconnectivity"
UID = "20240102030405.123456_IT_webconnectivity_0123456789abcdef"
INCOMING = "var/lib/ooniapi/measurements/incoming"


def test_member_name_is_ooni_spool_path():
    assert files.member_name(HOUR, UID) == f"{INCOMING}/{HOUR}/{UID}.post"
    # the part oonidata 0.3.0 takes as the uid: after the last `/`, without `.post`
    assert files.member_name(HOUR, UID).rsplit("/", 1)[1][:-5] == UID


@pytest.mark.parametrize("hour, uid", [
    ("../x", UID), (f"{HOUR}/..", UID), ("2024010203_IT_web connectivity", UID),
    (HOUR, "../" + UID), (HOUR, UID + "/x"), (HOUR, UID + "\n"), (HOUR, ""),
    (HOUR, "20240102030405.123456_IT_webconnectivity_0123456789ABCDEF"),
])
def test_member_name_refuses_unchecked_parts(hour, uid):
    with pytest.raises(ValueError):
        files.member_name(hour, uid)


def test_build_can_refuses_a_badly_named_directory(tmp_path: Path):
    d = tmp_path / "not-an-hour"
    d.mkdir()
    (d / f"{UID}.post").write_bytes(b"{}")
    with pytest.raises(ValueError):
        files.build_can(d, [UID], tmp_path / "c.tar.gz", tmp_path / "c.jsonl.gz",
                        tmp_path / "r.json", 0)


def test_uploader_postcan_read_back_by_reprocessing(tmp_path: Path):
    spool = make_spool(tmp_path / "spool", ["2024010203"], 7)
    hour_dir = tmp_path / "spool" / "incoming" / HOUR
    tar = tmp_path / f"{HOUR}.n1.0.tar.gz"
    files.build_can(hour_dir, sorted(spool), tar, tmp_path / "c.jsonl.gz", tmp_path / "r.json",
                    mtime=1704164400)
    with tarfile.open(tar) as t:
        names = t.getnames()
        assert all(not m.isdir() and m.mode == 0o644 and m.uid == 0 for m in t)
    assert names == [f"{INCOMING}/{HOUR}/{u}.post" for u in sorted(spool)]
    with open(tar, "rb") as f:
        recs = list(iter_object(f"raw/20240102/03/IT/webconnectivity/{tar.name}", f))
    assert [(r.uid, r.post) for r in recs] == [(u, spool[u][1]) for u in sorted(spool)]
    assert all(r.error is None and r.where.endswith(".post") for r in recs)


def test_reprocessing_reads_old_and_new_member_names():
    """A can mixing our old bare names, OONI's spool paths and a nested path: same uids."""
    uids = [f"2024010203040{i}.000000_IT_webconnectivity_{i:016x}" for i in range(3)]
    names = [f"{uids[0]}.post", f"{INCOMING}/{HOUR}/{uids[1]}.post", f"h/x/{uids[2]}.post"]
    bodies = [post_body({"report_id": f"r{i}", "probe_cc": "IT"}) for i in range(3)]
    data = tar_bytes(dict(zip(names, bodies, strict=True)))
    recs = list(iter_object(f"raw/20240102/03/IT/webconnectivity/{HOUR}.n1.0.tar.gz",
                            io.BytesIO(data)))
    assert [r.uid for r in recs] == uids
    assert [json.loads(r.post)["content"]["report_id"] for r in recs] == ["r0", "r1", "r2"]
