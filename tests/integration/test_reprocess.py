"""`fastpath reprocess` end to end: a database owner, moto's S3 server on loopback with a
bucket of postcans, jsonl.gz files and legacy cans built from the samples, and the command
run as a subprocess (killed halfway once, then resumed)."""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import gzip
import io
import json
import logging
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lz4.frame
import pytest

from oonibackend.storage.http import HTTPDatabase
from oonibackend.storage.migrate import migrate
from tests.clickhouse_server import OwnerProcess, free_port
from tests.conftest import SAMPLES, write_config
from tests.integration.test_update_fingerprints import OONIBACKEND
from workers.sources.ids import trivial_id

BUCKET = "ooni-reprocess-test"
DAY1, DAY2, DAY3 = "20210709", "20210710", "20210711"
POSTCAN_SAMPLES = ["web_connectivity_ir_fp.json", "whatsapp.json", "signal_022.json",
                   "riseupvpn.json", "vanilla_tor.json", "tor.json", "openvpn.json",
                   "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json"]
JSONL_SAMPLES = ["requests_none.json", "web_connectivity_null.json", "torsf_1.json",
                 "meek.json"]
LEGACY_JSON = ["report1.json", "report2.json"]
RESUME_OBJECTS = 120


def load(name: str) -> dict:
    return json.loads((SAMPLES / name).read_bytes())


def api_uid(msm: dict, n: int) -> str:
    """An API-style uid received a minute after the measurement started."""
    t = dt.datetime.strptime(msm["measurement_start_time"], "%Y-%m-%d %H:%M:%S")
    t += dt.timedelta(minutes=1)
    tn = msm["test_name"].replace("_", "")
    return f"{t:%Y%m%d%H%M%S}.{n:06d}_{msm['probe_cc']}_{tn}_{n:016x}"


def raw_key(day: str, msm: dict, suffix: str) -> str:
    cc, tn = msm["probe_cc"], msm["test_name"].replace("_", "")
    return f"raw/{day}/00/{cc}/{tn}/{day}00_{cc}_{tn}.n1.{suffix}"


def tar_bytes(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def postcan(msms: dict[str, dict]) -> bytes:
    return tar_bytes({f"h/{uid}.post": json.dumps({"format": "json", "content": m}).encode()
                      for uid, m in msms.items()}, "w:gz")


@dataclass
class Bucket:
    """What was put in the bucket, and the uids reprocessing must produce."""

    objects: dict[str, bytes] = field(default_factory=dict)
    day1_uids: set[str] = field(default_factory=set)
    twin_uids: set[str] = field(default_factory=set)  # must NOT appear (twin jsonl skipped)
    jsonl_rows: list[dict] = field(default_factory=list)
    openvpn_uid: str = ""
    ir_uid: str = ""
    day2_uids: set[str] = field(default_factory=set)
    day3_uids: set[str] = field(default_factory=set)


def build_bucket() -> Bucket:
    b = Bucket()
    # day 1: one postcan per sample (uid = member name) ...
    for i, name in enumerate(POSTCAN_SAMPLES):
        msm = load(name)
        uid = api_uid(msm, i)
        key = raw_key(DAY1, msm, "0.tar.gz")
        b.objects[key] = postcan({uid: msm})
        b.day1_uids.add(uid)
        if name == "openvpn.json":
            b.openvpn_uid = uid
        if name == "web_connectivity_ir_fp.json":
            b.ir_uid = uid
        if name == "whatsapp.json":  # ... one with a jsonl twin, which must be skipped
            line = json.dumps(msm).encode() + b"\n"
            b.objects[key.replace(".tar.gz", ".jsonl.gz")] = gzip.compress(line)
            b.twin_uids.add(trivial_id(line, msm))
    # jsonl.gz without twins: uids from the jsonl table for even lines, trivial ids otherwise
    lines = [json.dumps(load(n)).encode() + b"\n" for n in JSONL_SAMPLES]
    key = f"raw/{DAY1}/01/XX/mixed/{DAY1}01_XX_mixed.n1.0.jsonl.gz"
    b.objects[key] = gzip.compress(b"".join(lines))
    for linenum, line in enumerate(lines):
        msm = json.loads(line)
        if linenum % 2 == 0:
            uid = api_uid(msm, 100 + linenum)
            b.jsonl_rows.append({"report_id": msm["report_id"], "input": msm.get("input") or "",
                                 "s3path": key, "linenum": linenum, "measurement_uid": uid,
                                 "date": dt.date(2021, 7, 9), "source": "test"})
        else:
            uid = trivial_id(line, msm)
        b.day1_uids.add(uid)
    # legacy cans: JSON lines and a YAML report inside .tar.lz4
    legacy = [json.dumps(load(n)).encode() + b"\n" for n in LEGACY_JSON]
    b.objects["canned/2021-07-09/web_connectivity.00.tar.lz4"] = lz4.frame.compress(
        tar_bytes({"2021-07-09/web_connectivity.00.json": b"".join(legacy)}, "w"))
    b.day1_uids.update(trivial_id(x, json.loads(x)) for x in legacy)
    b.objects["canned/2021-07-09/http_requests.0.tar.lz4"] = lz4.frame.compress(
        tar_bytes({"2015-11-05/binary_city.yaml": (SAMPLES / "binary_city.yaml").read_bytes()},
                  "w"))
    b.day1_uids.add("0120151105e6e97af9dabb462dc4066ae2fd58a5")
    b.objects["canned/2021-07-09/index.json.gz"] = gzip.compress(b"{}")
    # day 2: many small postcans, for the kill / resume test
    base = [load(n) for n in ("whatsapp.json", "signal_022.json", "tor.json")]
    for k in range(RESUME_OBJECTS):
        msms = {}
        for j, m in enumerate(base):
            m = copy.deepcopy(m)
            m["report_id"] = f"{m['report_id']}_{k}"
            msms[api_uid(m, 1000 + k * 10 + j)] = m
        b.objects[raw_key(DAY2, base[0], f"{k}.tar.gz").replace(
            "/whatsapp/", f"/whatsapp{k % 7}/")] = postcan(msms)
        b.day2_uids.update(msms)
    # day 3: a few postcans read from a local copy of the bucket
    for k, name in enumerate(("signal_022.json", "riseupvpn.json")):
        m = load(name)
        m["report_id"] += "_day3"
        uid = api_uid(m, 5000 + k)
        b.objects[raw_key(DAY3, m, f"{k}.tar.gz")] = postcan({uid: m})
        b.day3_uids.add(uid)
    return b


@pytest.fixture(scope="module")
def bucket_data() -> Bucket:
    return build_bucket()


@pytest.fixture(scope="module")
def s3(bucket_data: Bucket) -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    for key, data in bucket_data.objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=data, ACL="public-read")
    yield url
    server.stop()


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnerProcess]:
    o = OwnerProcess(tmp_path_factory.mktemp("reprocess-owner")).start()
    yield o
    o.stop()


@pytest.fixture(scope="module")
def prepared(owner: OwnerProcess, bucket_data: Bucket) -> None:
    """Schema, the sample fingerprints and the jsonl table rows."""
    from oonibackend.jobs.fingerprints.importer import import_fingerprints
    from oonibackend.jobs.fingerprints.parse import read_dir

    fp_dir = owner.data_dir / "fp-src"
    fp_dir.mkdir(exist_ok=True)
    for k in ("dns", "http"):
        (fp_dir / f"fingerprints_{k}.json").write_bytes(
            (SAMPLES / f"fingerprints_{k}.json").read_bytes())

    async def prepare() -> None:
        db = HTTPDatabase(owner.config())
        try:
            await migrate(db)
            await import_fingerprints(db, read_dir(fp_dir), force=True)
            await db.insert("jsonl", bucket_data.jsonl_rows)
        finally:
            await db.close()

    asyncio.run(prepare())


@pytest.fixture
async def db(owner: OwnerProcess, prepared: None) -> AsyncIterator[HTTPDatabase]:
    d = HTTPDatabase(owner.config())
    yield d
    await d.close()


def config_file(owner: OwnerProcess, s3_url: str, work: Path, *, batch_size: int = 1000,
                credentials: bool = False) -> Path:
    s3: dict[str, object] = {"bucket": BUCKET, "endpoint_url": s3_url, "region": "us-east-1"}
    if credentials:
        s3.update(access_key_id="testing", secret_access_key="testing")
    work.mkdir(parents=True, exist_ok=True)
    return write_config(work / "reprocess.toml", {
        "s3": s3,
        "fastpath": {"dir": str(work / "fastpath"), "batch_size": batch_size,
                     "insert_retry_max": 1.0},
        "logging": {"format": "text", "level": "WARNING"},
    })


def command(owner: OwnerProcess, cfg: Path, *args: str) -> list[str]:
    return [*OONIBACKEND, "fastpath", "reprocess", "--config", str(cfg),
            "--data-dir", str(owner.data_dir), *args]


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "PYTHONUNBUFFERED": "1"}


def reprocess(owner: OwnerProcess, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(owner, cfg, *args), capture_output=True, text=True,
                          timeout=600, env=child_env())


async def rows_for(db: HTTPDatabase, uids: set[str]) -> dict[str, dict]:
    rows = await db.query(
        "SELECT measurement_uid, scores, confirmed, test_name FROM fastpath "
        "WHERE measurement_uid IN %(uids)s", {"uids": sorted(uids)})
    return {r["measurement_uid"]: r for r in rows}


async def test_reprocess_day_from_s3(db, owner, s3, bucket_data, tmp_path):
    cfg = config_file(owner, s3, tmp_path)  # anonymous: no credentials
    r = reprocess(owner, cfg, "--start-day", "2021-07-09", "--end-day", "2021-07-10")
    assert r.returncode == 0, r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    # 8 postcans + 1 jsonl + 2 legacy cans (twin jsonl and index skipped)
    assert summary.startswith("reprocessed 11 files (0 already done, 0 failed) over 1 day:")
    assert "ETA" in r.stderr

    got = await rows_for(db, bucket_data.day1_uids | bucket_data.twin_uids)
    assert set(got) == bucket_data.day1_uids
    for uid, row in got.items():
        assert isinstance(json.loads(row["scores"]), dict), uid
    ir = json.loads(got[bucket_data.ir_uid]["scores"])
    assert ir.get("fingerprints") and got[bucket_data.ir_uid]["confirmed"] == "t"
    n = await db.query_one("SELECT count() AS n FROM obs_openvpn WHERE measurement_uid = "
                           "%(u)s", {"u": bucket_data.openvpn_uid})
    assert n["n"] >= 1
    assert list((tmp_path / "fastpath").glob("reprocess-*/")) == []  # temp files removed

    # a second run of the same range has nothing left to do
    r = reprocess(owner, cfg, "--start-day", "2021-07-09", "--end-day", "2021-07-10")
    assert r.returncode == 0, r.stderr
    assert "reprocessed 0 files (11 already done" in r.stdout


async def test_kill_halfway_and_resume(db, owner, s3, bucket_data, tmp_path):
    cfg = config_file(owner, s3, tmp_path, batch_size=2, credentials=True)
    done = tmp_path / "fastpath" / "reprocess-2021-07-10-2021-07-11.done"
    args = ("--start-day", "2021-07-10", "--end-day", "2021-07-11")
    proc = subprocess.Popen(command(owner, cfg, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if done.exists() and done.read_text().count("\n") >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed"
    finished = done.read_text().count("\n")
    assert 10 <= finished < RESUME_OBJECTS

    r = reprocess(owner, cfg, *args)
    assert r.returncode == 0, r.stderr
    assert f"reprocessed {RESUME_OBJECTS - finished} files ({finished} already done" in r.stdout
    got = await rows_for(db, bucket_data.day2_uids)
    assert set(got) == bucket_data.day2_uids
    assert done.read_text().count("\n") == RESUME_OBJECTS


async def test_sigterm_stops_cleanly(owner, s3, prepared, tmp_path):
    cfg = config_file(owner, s3, tmp_path, batch_size=2, credentials=True)
    done = tmp_path / "fastpath" / "reprocess-2021-07-10-2021-07-11.done"
    proc = subprocess.Popen(command(owner, cfg, "--start-day", "2021-07-10", "--end-day",
                                    "2021-07-11"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if done.exists() and done.read_text().count("\n") >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; re-run the same command to resume" in err
    assert [p.name for p in (tmp_path / "fastpath").iterdir() if p.is_dir()] == []
    assert done.read_text().count("\n") >= 5


async def test_local_directory_source_and_filters(db, owner, s3, bucket_data, tmp_path):
    from oonibackend import config
    from workers.reprocess import run_reprocess

    local = tmp_path / "objects"
    for key, data in bucket_data.objects.items():
        if key.startswith(f"raw/{DAY3}/"):
            (local / key).parent.mkdir(parents=True, exist_ok=True)
            (local / key).write_bytes(data)
    cfg = config.load(str(config_file(owner, s3, tmp_path)), data_dir=str(owner.data_dir))

    def ns(**kw) -> argparse.Namespace:
        base = dict(start_day="2021-07-11", end_day="2021-07-12", cc=None, testname=None,
                    source=str(local), dry_run=False, resume=True)
        return argparse.Namespace(**(base | kw))

    # dry run with a filter: reads one postcan, writes nothing, records nothing
    assert await run_reprocess(ns(dry_run=True, cc="IT", testname="signal"), cfg) == 0
    assert await rows_for(db, bucket_data.day3_uids) == {}
    assert not list((tmp_path / "fastpath").glob("*.done"))
    # the cc filter alone selects the signal measurement only
    assert await run_reprocess(ns(cc="IT"), cfg) == 0
    assert len(await rows_for(db, bucket_data.day3_uids)) == 1
    assert await run_reprocess(ns(), cfg) == 0
    assert set(await rows_for(db, bucket_data.day3_uids)) == bucket_data.day3_uids
    # the default source is the configured bucket; bad arguments are refused
    assert await run_reprocess(ns(end_day="2021-07-11"), cfg) == 2
    assert await run_reprocess(ns(source=str(tmp_path / "missing")), cfg) == 1


async def test_unreadable_object_is_reported_and_retried(db, owner, s3, tmp_path):
    from oonibackend import config
    from workers.reprocess import run_reprocess

    local = tmp_path / "objects"
    good = build_bucket()
    key = next(k for k in good.objects if k.startswith(f"raw/{DAY3}/"))
    (local / key).parent.mkdir(parents=True, exist_ok=True)
    (local / key).write_bytes(b"not a tar.gz at all")
    cfg = config.load(str(config_file(owner, s3, tmp_path)), data_dir=str(owner.data_dir))
    args = argparse.Namespace(start_day="2021-07-11", end_day="2021-07-12", cc=None,
                              testname=None, source=str(local), dry_run=False, resume=True)
    assert await run_reprocess(args, cfg) == 1
    done = tmp_path / "fastpath" / "reprocess-2021-07-11-2021-07-12.done"
    assert done.read_text() == ""  # not marked done: the next run tries again
