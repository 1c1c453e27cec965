"""OONI's own data tool, oonidata 0.3.0, reads what our uploader publishes
(docs/current_services.md §8).

Real sample measurements are spooled, `oonibackend upload` (a subprocess, with a database
owner) puts postcans and jsonl.gz files into moto's S3 server in bucket `ooni-data-eu-fra`
(oonidata's fixed bucket, public-read as OONI's is), then oonidata runs in its own virtualenv
(tests/oonidata_venv.py) with `AWS_ENDPOINT_URL` pointing its anonymous boto3 client at moto:
`oonidata sync` reads the postcans, its Python API `iter_measurements(from_cans=False)` the
jsonl.gz files. Every measurement must come back once, with its uid and its content.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from oonibackend.storage import migrate
from oonibackend.storage.http import HTTPDatabase
from tests import oonidata_venv
from tests.clickhouse_server import OwnerProcess
from tests.integration.test_upload import run_upload, setup_dir
from tests.s3server import S3Server
from tests.unit.test_upload import make_spool

pytest.importorskip("moto.server")

BUCKET = "ooni-data-eu-fra"  # hard-coded in oonidata (MC_BUCKET_NAME)
DAY, NEXT_DAY = "2024-01-02", "2024-01-03"
# oonidata logs these (and exits 0) when it cannot read a file or a member
READ_ERRORS = ("failed to stream", "invalid filename in tar", "Ignoring invalid post",
               "empty file in tar", "unsupported file entry", "Traceback")

JSONL_SCRIPT = """
import sys, orjson
from oonidata.dataclient import iter_measurements
for m in iter_measurements(start_day=sys.argv[1], end_day=sys.argv[2], from_cans=False):
    sys.stdout.buffer.write(orjson.dumps(m) + b"\\n")
"""


@pytest.fixture(scope="module")
def oonidata_python() -> Path:
    try:
        py, seconds = oonidata_venv.ensure()
    except oonidata_venv.VenvError as e:
        msg = (f"cannot create the oonidata {oonidata_venv.VERSION} virtualenv in "
               f"{oonidata_venv.venv_dir()} (PyPI needed; set {oonidata_venv.ENV_VAR} to a "
               f"prepared one): {e}")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    if seconds is not None:
        print(f"\ncreated the oonidata venv in {seconds:.1f} s", file=sys.stderr)
    return py


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnerProcess]:
    o = OwnerProcess(tmp_path_factory.mktemp("oonidata-owner")).start()
    yield o
    o.stop()


def public_bucket(s3: S3Server) -> None:
    """`ooni-data-eu-fra` readable and listable without credentials, as OONI's is."""
    s3.bucket(BUCKET)
    s3.client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*",
                       "Action": ["s3:GetObject", "s3:ListBucket"],
                       "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}]}))


def oonidata_env(s3: S3Server) -> dict[str, str]:
    """Our environment without AWS settings or credentials, pointed at moto."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3.url, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true")
    return env


def run_oonidata(py: Path, args: list[str], s3: S3Server, cwd: Path
                 ) -> subprocess.CompletedProcess:
    r = subprocess.run([str(py), *args], env=oonidata_env(s3), cwd=cwd, capture_output=True,
                       timeout=600)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, err
    bad = [e for e in READ_ERRORS if e in err]
    assert not bad, f"oonidata reported {bad}:\n{err[-3000:]}"
    return r


def by_uid(lines: list[bytes]) -> dict[str, dict]:
    """Measurements by uid, each uid exactly once."""
    msms = [json.loads(line) for line in lines if line.strip()]
    uids = Counter(m["measurement_uid"] for m in msms)
    assert max(uids.values(), default=1) == 1, uids.most_common(3)
    return {m["measurement_uid"]: m for m in msms}


async def test_oonidata_reads_our_postcans_and_jsonl(tmp_path, owner, s3, oonidata_python):
    db = HTTPDatabase(owner.config())
    try:
        await migrate.migrate(db)
    finally:
        await db.close()
    public_bucket(s3)
    data = setup_dir(tmp_path, owner, s3, BUCKET)
    spool = make_spool(data / "spool", ["2024010203"], 30, cc="DE")
    spool.update(make_spool(data / "spool", ["2024010217"], 12, cc="IT", testname="signal",
                            seed=2))
    r = run_upload(data, "--can-size", "25000")
    assert r.returncode == 0, r.stderr
    keys = s3.keys(BUCKET)
    cans = [k for k in keys if k.endswith(".tar.gz")]
    assert len(cans) > 2 and len(keys) == 2 * len(cans)  # several cans per hour, each twinned
    expected = {uid: dict(json.loads(body)["content"], measurement_uid=uid)
                for uid, (_, body) in spool.items()}

    # postcans: `oonidata sync` (only cans), one jsonl.gz per hour, cc and test name
    out = tmp_path / "sync"
    run_oonidata(oonidata_python, ["-m", "oonidata.main", "sync", "--output-dir", str(out),
                                   "--start-day", DAY, "--end-day", NEXT_DAY], s3, tmp_path)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [f"signal/{DAY}/2024010217_IT_signal.jsonl.gz",
                       f"webconnectivity/{DAY}/2024010203_DE_webconnectivity.jsonl.gz"]
    synced = by_uid([line for p in out.rglob("*.jsonl.gz")
                     for line in gzip.decompress(p.read_bytes()).splitlines()])
    assert synced == expected

    # jsonl.gz files: oonidata's Python API (sync reads cans only)
    r = run_oonidata(oonidata_python, ["-c", JSONL_SCRIPT, DAY, NEXT_DAY], s3, tmp_path)
    assert by_uid(r.stdout.splitlines()) == expected
