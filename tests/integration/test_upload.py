"""`oonibackend upload` as a subprocess against moto's S3 server on loopback and the embedded
database (an owner process): a full hour found again by line and by byte range, SIGKILL at
random points then completion (exactly once, nothing deleted early), failures, dry run."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from oonibackend.storage import migrate
from oonibackend.storage.http import HTTPDatabase
from tests.clickhouse_server import OwnerProcess, free_port
from tests.conftest import write_config
from tests.s3server import S3Server
from tests.unit.test_upload import make_spool, spool_uids

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnerProcess]:
    o = OwnerProcess(tmp_path_factory.mktemp("upload-owner")).start()
    yield o
    o.stop()


@pytest.fixture
async def db(owner: OwnerProcess):
    d = HTTPDatabase(owner.config())
    await migrate.migrate(d)
    yield d
    await d.close()


def setup_dir(tmp_path: Path, owner: OwnerProcess, s3: S3Server, bucket: str,
              endpoint: str | None = None) -> Path:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_config(data / "test.toml", {
        "s3": {"bucket": bucket, "endpoint_url": endpoint or s3.url, "region": "us-east-1",
               "access_key_id": "test", "secret_access_key": "test"},
        # The owner of another data directory: its socket, and its key.
        "database": {"owner_socket": owner.socket, "path": str(owner.data_dir / "db")},
        "server": {"internal_key": owner.key},
        "logging": {"format": "text", "level": "WARNING"},
    })
    return data


def upload_cmd(data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "oonibackend", "upload", "--config", str(data / "test.toml"),
            "--data-dir", str(data), *extra]


def run_upload(data: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(upload_cmd(data, *extra), capture_output=True, text=True,
                          timeout=timeout)


def bucket_uids(objs: dict[str, bytes]) -> Counter:
    seen: Counter = Counter()
    for key, data in objs.items():
        if key.endswith(".jsonl.gz"):
            for line in gzip.decompress(data).splitlines():
                seen[json.loads(line)["measurement_uid"]] += 1
    return seen


async def table_rows(db: HTTPDatabase, uids) -> list[dict]:
    return await db.query(
        "SELECT measurement_uid, report_id, input, s3path, linenum, byte_offset, byte_length, "
        "date, source FROM jsonl FINAL WHERE measurement_uid IN %(u)s", {"u": sorted(uids)})


async def test_full_hour(tmp_path, owner, s3, db):
    bucket = s3.bucket("full-hour")
    data = setup_dir(tmp_path, owner, s3, bucket)
    spool = make_spool(data / "spool", ["2024010203"], 25, cc="DE")
    r = run_upload(data, "--can-size", "40000")
    assert r.returncode == 0, r.stderr
    assert "upload done:" in r.stdout and "25 measurements" in r.stdout
    objs = s3.objects(bucket)
    assert all(k.startswith("raw/20240102/03/DE/webconnectivity/2024010203_DE_webconnectivity"
                            ".n1.") for k in objs)
    cans = sorted(k for k in objs if k.endswith(".tar.gz"))
    assert len(cans) > 1 and len(objs) == 2 * len(cans)
    assert bucket_uids(objs) == Counter(set(spool))
    rows = await table_rows(db, spool)
    assert len(rows) == 25
    for row in rows:
        uid = row["measurement_uid"]
        expect = dict(json.loads(spool[uid][1])["content"], measurement_uid=uid)
        # by line number (the whole file, standard gzip module)
        lines = gzip.decompress(objs[row["s3path"]]).splitlines()
        assert json.loads(lines[row["linenum"]]) == expect
        # by byte range: one ranged GET, one gzip member
        start, n = row["byte_offset"], row["byte_length"]
        got = s3.client.get_object(Bucket=bucket, Key=row["s3path"],
                                   Range=f"bytes={start}-{start + n - 1}")["Body"].read()
        assert len(got) == n and json.loads(gzip.decompress(got)) == expect
        assert row["report_id"] == expect["report_id"] and row["source"] == "n1"
        assert str(row["date"]) == "2024-01-02"
    # the postcans hold the .post bodies as uploaded
    import io
    import tarfile

    posts = {}
    for k in cans:
        with tarfile.open(fileobj=io.BytesIO(objs[k])) as tar:
            posts.update({m.name: tar.extractfile(m).read() for m in tar})
    incoming = "var/lib/ooniapi/measurements/incoming"  # OONI's member names
    assert posts == {f"{incoming}/{h}/{u}.post": b for u, (h, b) in spool.items()}
    assert not (data / "spool" / "incoming" / "2024010203_DE_webconnectivity").exists()
    assert "oonibackend_upload_last_run_measurements 25" in \
        (data / "metrics" / "upload.prom").read_text()
    # nothing left to do
    r = run_upload(data)
    assert r.returncode == 0 and "0 measurements" in r.stdout
    assert s3.objects(bucket) == objs


async def test_sigkill_loop_exactly_once(tmp_path, owner, s3, db):
    bucket = s3.bucket("killed")
    data = setup_dir(tmp_path, owner, s3, bucket)
    spool = make_spool(data / "spool", ["2024010205", "2024010206"], 30, cc="FR", seed=7)
    rnd = random.Random(42)
    kills = partial = 0
    for _ in range(25):
        before = len(s3.keys(bucket))
        proc = subprocess.Popen(upload_cmd(data, "--can-size", "6000"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random instant once this run has put its first object: start-up takes
        # 0.5 s on an idle machine and several seconds on a loaded one, so a fixed delay
        # either kills before any work or after all of it.
        deadline = time.monotonic() + 60
        while proc.poll() is None and len(s3.keys(bucket)) == before:
            assert time.monotonic() < deadline, "the uploader put nothing within 60 s"
            time.sleep(0.01)
        time.sleep(rnd.uniform(0.0, 0.8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # invariant at every instant: each uid is still spooled, or in the bucket AND the table
        left = spool_uids(data / "spool")
        in_bucket = bucket_uids(s3.objects(bucket))
        assert max(in_bucket.values(), default=1) == 1  # never twice, even half-way
        in_table = {r["measurement_uid"] for r in await table_rows(db, spool)}
        for uid in spool:
            assert uid in left or (uid in in_bucket and uid in in_table), uid
        partial += 0 < len(left) < len(spool)
        if not left or kills >= 6:  # the final run below uploads the rest
            break
    assert kills >= 3 and partial >= 2, (kills, partial)  # killed half-way, several times
    r = run_upload(data, "--can-size", "6000")
    assert r.returncode == 0, r.stderr
    assert bucket_uids(s3.objects(bucket)) == Counter(set(spool))
    rows = await table_rows(db, spool)
    assert sorted(r["measurement_uid"] for r in rows) == sorted(spool)
    n = await db.query_one("SELECT count() AS n, uniqExact(measurement_uid) AS u FROM jsonl "
                           "FINAL WHERE s3path LIKE 'raw/20240102/0_/FR/%%'")
    assert n == {"n": 60, "u": 60}
    assert spool_uids(data / "spool") == set()
    assert not any((data / "spool" / "incoming").iterdir())


@pytest.mark.parametrize("case", ["missing_bucket", "server_down"])
async def test_failure_leaves_spool_intact(tmp_path, owner, s3, case):
    if case == "missing_bucket":
        data = setup_dir(tmp_path, owner, s3, "no-such-bucket")
    else:
        data = setup_dir(tmp_path, owner, s3, "any", endpoint=f"http://127.0.0.1:{free_port()}")
    spool = make_spool(data / "spool", ["2024010203"], 4)
    before = {p: p.read_bytes() for p in (data / "spool").rglob("*") if p.is_file()}
    t0 = time.monotonic()
    r = run_upload(data)
    assert r.returncode == 1
    assert time.monotonic() - t0 < 30
    msg = "does not exist" if case == "missing_bucket" else "unreachable"
    assert msg in r.stderr, r.stderr
    after = {p: p.read_bytes() for p in (data / "spool").rglob("*") if p.is_file()}
    assert after == before and spool_uids(data / "spool") == set(spool)


async def test_bad_credentials_message(tmp_path, owner, s3):
    # moto accepts any key; the message is checked on the explanation path itself.
    from botocore.exceptions import ClientError

    from oonibackend import config
    from oonibackend.objectstore.s3 import S3Store

    w = S3Store(config.load(None, data_dir=str(tmp_path)), "b")
    e = ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no"}}, "PutObject")
    msg = str(w._explain(e, "upload"))
    assert "denied" in msg and "credentials" in msg


async def test_dry_run_changes_nothing(tmp_path, owner, s3, db):
    bucket = s3.bucket("dry")
    data = setup_dir(tmp_path, owner, s3, bucket)
    spool = make_spool(data / "spool", ["2024010203"], 6, cc="NL")

    def tree():
        return {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    before = tree()
    r = run_upload(data, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would upload raw/20240102/03/NL/webconnectivity/" in r.stdout
    assert tree() == before and s3.objects(bucket) == {}
    assert await table_rows(db, spool) == []
    # --hour restricts to one hour even when it is not closed yet
    r = run_upload(data, "--dry-run", "--hour", "2024010204")
    assert r.returncode == 0 and "would upload" not in r.stdout



async def test_multipart_and_skip_identical(tmp_path, s3):
    from oonibackend import config
    from oonibackend.objectstore import open_store
    from oonibackend.objectstore.s3 import MULTIPART_THRESHOLD

    bucket = s3.bucket("multipart")
    cfg = config.load(None, data_dir=str(tmp_path), **{
        "s3.bucket": bucket, "s3.endpoint_url": s3.url, "s3.region": "us-east-1",
        "s3.access_key_id": "test", "s3.secret_access_key": "test"})
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MULTIPART_THRESHOLD + 3 * 1024 * 1024))
    w = open_store(cfg)
    try:
        await w.check()
        assert await w.put("raw/x/big.bin", big) is True
        assert await w.put("raw/x/big.bin", big) is False  # complete: not uploaded again
        head = s3.client.head_object(Bucket=bucket, Key="raw/x/big.bin")
        assert head["ETag"].endswith('-3"')  # three parts
        assert await w.get_range("raw/x/big.bin", 10, 5) == big.read_bytes()[10:15]
    finally:
        await w.close()
    assert s3.objects(bucket)["raw/x/big.bin"] == big.read_bytes()
