"""`oonibackend backup`, `export` and `restore` as subprocesses on the embedded database
(chdb opened by the job under the owner lock, or through a running owner's HTTP interface)
with the real fixture rows, against moto's S3 server on loopback or the local object store:
exact round trips, SIGKILL mid-backup then resume, CSV exports, dry runs, failures."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from oonibackend import config
from oonibackend.objectstore import StoreError, open_store
from oonibackend.objectstore.local import LocalStore
from oonibackend.storage import DatabaseError
from oonibackend.storage.http import HTTPDatabase
from tests.clickhouse_server import ClickHouseServer, OwnerProcess, find_binary
from tests.conftest import write_config
from tests.readdata import load_fixture_rows
from tests.s3server import S3Server

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

# The fixture's fastpath rows per month (tests/readdata.py), and its citizenlab rows.
FASTPATH_MONTHS = {"2021-07": 77, "2024-01": 1000, "2025-07": 3}
FASTPATH_ROWS = sum(FASTPATH_MONTHS.values())
CITIZENLAB_ROWS = 640
# Every stored column, MATERIALIZED update_time included, in a total order.
SELECTS = {
    "fastpath": "SELECT '{src}' AS _src, *, update_time FROM {t} "
                "ORDER BY measurement_uid, update_time",
    "citizenlab": "SELECT '{src}' AS _src, * FROM {t} ORDER BY domain, url, cc, category_code",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded database with the real fixture rows, shared by the module's tests
    (each test writes to its own bucket or object directory and state directory)."""
    d = tmp_path_factory.mktemp("backup-data")
    cfg = write_config(d / "load.toml", {"logging": {"format": "text", "level": "WARNING"}})
    cli(d, cfg, "db", "migrate")
    load_fixture_rows(cfg, d, recent=False)
    return d


def make_config(data: Path, name: str, s3: S3Server | None = None, bucket: str = "",
                **backup: object) -> Path:
    sections: dict[str, dict[str, object]] = {
        "backup": {"dir": str(data / f"state-{name}"), "pause": 0.0, "chunk_rows": 300,
                   **backup},
        "s3": {"local_dir": str(data / f"objects-{name}")},
        "logging": {"format": "text", "level": "WARNING"},
    }
    if s3 is not None:
        sections["s3"].update(bucket=bucket, endpoint_url=s3.url, region="us-east-1",
                              access_key_id="test", secret_access_key="test")
    return write_config(data / f"{name}.toml", sections)


def cmd(data: Path, conf: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "oonibackend", *args, "--config", str(conf),
            "--data-dir", str(data)]


def cli(data: Path, conf: Path, *args: str, rc: int | None = 0
        ) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd(data, conf, *args), capture_output=True, text=True, timeout=120)
    if rc is not None:
        assert r.returncode == rc, f"{args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def table_rows(data: Path, conf: Path, pairs: dict[str, str]) -> dict[str, list[dict]]:
    """{name: rows} for each {name: "source table"}, rows of every stored column in order:
    one `db exec` for all of them."""
    stmts = []
    for name, table in pairs.items():
        base = "fastpath" if table.startswith("fastpath") else "citizenlab"
        stmts.append(SELECTS[base].format(src=name, t=table))
    f = data / "compare.sql"
    f.write_text(";\n".join(stmts) + ";\n")
    r = cli(data, conf, "db", "exec", str(f))
    out: dict[str, list[dict]] = {name: [] for name in pairs}
    for line in r.stdout.splitlines():
        row = json.loads(line)
        out[row.pop("_src")].append(row)
    return out


def manifest(objs: dict[str, bytes] | None, key: str, s3: S3Server | None = None,
             bucket: str = "") -> dict:
    raw = s3.get(bucket, key) if s3 is not None else objs[key]  # type: ignore[index]
    return json.loads(raw)


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


# ---- round trip ----

def test_backup_restore_round_trip_s3(data, s3):
    bucket = s3.bucket("round-trip")
    conf = make_config(data, "rt", s3, bucket)
    r = cli(data, conf, "backup", "--tables", "fastpath,citizenlab", "--run", "r1")
    assert "fastpath: chunk 1/" in r.stdout and "backup done" in r.stdout

    keys = s3.keys(bucket)
    assert "backup/r1/manifest.json" in keys
    m = manifest(None, "backup/r1/fastpath/manifest.json", s3, bucket)
    assert m["rows"] == FASTPATH_ROWS and m["format"] == "TabSeparatedWithNamesAndTypes"
    assert "update_time" in [c["name"] for c in m["columns"]]
    assert len(m["chunks"]) > 3  # 2024-01 (1000 rows) cut into chunks of <= 300
    for c in m["chunks"]:
        body = unzstd(s3.get(bucket, c["key"]))
        lines = body.split(b"\n")
        assert lines[0].startswith(b"measurement_uid\t") and len(lines) - 3 == c["rows"]
        assert c["rows"] <= 300
    assert sum(c["rows"] for c in m["chunks"]) == FASTPATH_ROWS
    assert not s3.uploads(bucket)

    r = cli(data, conf, "restore", "--table", "fastpath", "--into", "fastpath_rt")
    assert f"restored {FASTPATH_ROWS} rows of fastpath from run r1 into fastpath_rt" in r.stdout
    cli(data, conf, "restore", "--table", "citizenlab", "--into", "citizenlab_rt")
    got = table_rows(data, conf, {"live": "fastpath", "restored": "fastpath_rt",
                                  "cl": "citizenlab", "cl_restored": "citizenlab_rt"})
    assert len(got["live"]) == FASTPATH_ROWS and got["restored"] == got["live"]
    assert len(got["cl"]) == CITIZENLAB_ROWS and got["cl_restored"] == got["cl"]

    # The same target again is refused, and leaves it as it was.
    r = cli(data, conf, "restore", "--table", "citizenlab", "--into", "citizenlab_rt", rc=1)
    assert "citizenlab_rt already exists" in r.stderr


# ---- crash and resume ----

def test_sigkill_mid_backup_then_resume(data, s3):
    bucket = s3.bucket("killed")
    conf = make_config(data, "kill", s3, bucket, chunk_rows=100, pause=0.5)
    proc = subprocess.Popen(cmd(data, conf, "backup", "--tables", "fastpath", "--run", "k1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "fastpath: chunk 1/" in line, line + proc.stderr.read()  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert "backup/k1/fastpath/manifest.json" not in s3.keys(bucket)
    state = json.loads((data / "state-kill" / "state.json").read_text())
    done = state["tables"]["fastpath"]["done"]
    total = len(state["tables"]["fastpath"]["chunks"])
    assert 1 <= len(done) < total

    conf = make_config(data, "kill", s3, bucket, chunk_rows=100)  # same state, no pause
    r = cli(data, conf, "backup", "--tables", "fastpath")
    assert "resuming backup run k1" in r.stdout
    assert f"{total - len(done)} chunks written ({len(done)} already done)" in r.stdout
    resumed = manifest(None, "backup/k1/fastpath/manifest.json", s3, bucket)

    # An uninterrupted run with the same settings produces the very same objects.
    clean = s3.bucket("uninterrupted")
    cli(data, make_config(data, "clean", s3, clean, chunk_rows=100), "backup", "--tables",
        "fastpath", "--run", "k1")
    whole = manifest(None, "backup/k1/fastpath/manifest.json", s3, clean)
    assert [(c["name"], c["rows"], c["sha256"]) for c in resumed["chunks"]] == \
        [(c["name"], c["rows"], c["sha256"]) for c in whole["chunks"]]

    r = cli(data, conf, "restore", "--table", "fastpath", "--into", "fastpath_killed")
    got = table_rows(data, conf, {"live": "fastpath", "restored": "fastpath_killed"})
    assert len(got["live"]) == FASTPATH_ROWS and got["restored"] == got["live"]

    # Run complete: the same day's invocation has nothing left to do.
    r = cli(data, conf, "backup", "--tables", "fastpath", "--run", "k1")
    assert "already complete" in r.stdout


# ---- exports ----

def test_export_csv_per_month_and_idempotent(data, s3):
    bucket = s3.bucket("exports")
    conf = make_config(data, "exp", s3, bucket)
    r = cli(data, conf, "export")
    assert "export done: 5 files written" in r.stdout
    keys = s3.keys(bucket)
    for month, n in FASTPATH_MONTHS.items():
        text = unzstd(s3.get(bucket, f"exports/fastpath/{month}.csv.zst")).decode()
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0][:3] == ["measurement_uid", "report_id", "input"]
        assert "update_time" not in rows[0]
        assert len(rows) - 1 == n
    cl = list(csv.reader(io.StringIO(
        unzstd(s3.get(bucket, "exports/citizenlab/citizenlab.csv.zst")).decode())))
    assert cl[0] == ["domain", "url", "cc", "category_code"] and len(cl) - 1 == CITIZENLAB_ROWS
    assert "exports/asnmeta/asnmeta.csv.zst" in keys
    m = manifest(None, "exports/fastpath/manifest.json", s3, bucket)
    assert {k: v["rows"] for k, v in m["files"].items()} == FASTPATH_MONTHS
    prom = (data / "metrics" / "export.prom").read_text()
    assert f"oonibackend_export_last_run_rows {FASTPATH_ROWS + CITIZENLAB_ROWS}" in prom
    assert "oonibackend_export_last_run_success 1" in prom

    r = cli(data, conf, "export")
    assert "0 files written (5 up to date)" in r.stdout
    assert s3.keys(bucket) == keys

    r = cli(data, conf, "export", "--dry-run", "--tables", "fastpath", "--since", "2024-01")
    assert "2024-01: up to date" in r.stdout and "2021-07" not in r.stdout
    r = cli(data, conf, "export", "--tables", "jsonl", rc=2)
    assert "not in [backup] public_tables" in r.stderr


# ---- dry runs and failures ----

def test_dry_runs_write_nothing(data, s3):
    bucket = s3.bucket("dry")
    conf = make_config(data, "dry", s3, bucket)
    r = cli(data, conf, "backup", "--dry-run", "--tables", "fastpath,citizenlab")
    assert "2024-01.000:" in r.stdout and "citizenlab: 1 chunks, 640 rows" in r.stdout
    r = cli(data, conf, "export", "--dry-run")
    assert "would write exports/fastpath/2024-01.csv.zst" in r.stdout
    assert s3.keys(bucket) == []
    assert not (data / "state-dry").exists()


def test_missing_bucket_fails_clearly(data, s3):
    conf = make_config(data, "nobucket", s3, "no-such-bucket")
    for args in (("backup", "--tables", "citizenlab"), ("restore", "--table", "citizenlab")):
        r = cli(data, conf, *args, rc=1)
        assert "bucket s3://no-such-bucket" in r.stderr and "does not exist" in r.stderr
    prom = (data / "metrics" / "backup.prom").read_text()
    assert "oonibackend_backup_last_run_success 0" in prom


# ---- the local object store, --replace and run expiry ----

def test_local_store_replace_and_keep_runs(data):
    conf = make_config(data, "local", keep_runs=1)
    cli(data, conf, "backup", "--tables", "citizenlab", "--run", "a1")
    root = data / "objects-local"
    assert (root / "backup/a1/citizenlab/all.tsv.zst").is_file()
    assert not [p for p in root.rglob(".*")]  # no temporary file left
    before = table_rows(data, conf, {"cl": "citizenlab"})["cl"]

    r = cli(data, conf, "restore", "--table", "citizenlab", "--replace")
    assert "swapped them in; the previous rows are in citizenlab_restore" in r.stdout
    got = table_rows(data, conf, {"live": "citizenlab", "old": "citizenlab_restore"})
    assert got["live"] == before and got["old"] == before

    r = cli(data, conf, "backup", "--tables", "citizenlab", "--run", "a2")
    assert "deleted old backup runs: a1" in r.stdout
    assert not [p for p in (root / "backup/a1").rglob("*") if p.is_file()]
    assert (root / "backup/a2/manifest.json").is_file()

    chunk = root / "backup/a2/citizenlab/all.tsv.zst"
    chunk.write_bytes(chunk.read_bytes()[:-10])
    r = cli(data, conf, "restore", "--table", "citizenlab", "--into", "citizenlab_bad", rc=1)
    assert "all.tsv.zst: truncated zstd data" in r.stderr


# ---- through a running owner (the HTTP driver) ----

def owner_query(owner: OwnerProcess, query: str) -> str:
    status, body = owner.request("POST", "/", query.encode())
    assert status == 200, body
    return body.decode().strip()


def test_backup_and_restore_through_the_owner(data, s3):
    owner = OwnerProcess(data).start()
    try:
        bucket = s3.bucket("via-owner")
        conf = make_config(data, "owner", s3, bucket)
        cli(data, conf, "backup", "--tables", "fastpath", "--run", "o1")
        cli(data, conf, "restore", "--table", "fastpath", "--into", "fastpath_owner")
        got = table_rows(data, conf, {"live": "fastpath", "restored": "fastpath_owner"})
        assert len(got["live"]) == FASTPATH_ROWS and got["restored"] == got["live"]

        # A chunk that decompresses to the same rows but is not the object backed up: the
        # restore fails after inserting it, and drops its table.
        m = manifest(None, "backup/o1/fastpath/manifest.json", s3, bucket)
        key = m["chunks"][-1]["key"]
        other = zstandard.ZstdCompressor(level=19).compress(unzstd(s3.get(bucket, key)))
        s3.client.put_object(Bucket=bucket, Key=key, Body=other)
        r = cli(data, conf, "restore", "--table", "fastpath", "--into", "fastpath_bad", rc=1)
        assert f"{key}: sha256 mismatch" in r.stderr
        assert owner_query(owner, "EXISTS TABLE fastpath_bad") == "0"
        assert owner_query(owner, "SELECT count() FROM fastpath") == str(FASTPATH_ROWS)
    finally:
        owner.stop()


# ---- streaming uploads ----

async def _pieces(total: int, size: int, fail_at: int | None = None):
    sent = 0
    while sent < total:
        if fail_at is not None and sent >= fail_at:
            raise RuntimeError("source failed")
        n = min(size, total - sent)
        yield bytes([sent // size % 251]) * n
        sent += n


async def test_put_stream_multipart_and_abort(s3, tmp_path):
    bucket = s3.bucket("streams")
    cfg = config.load(None, data_dir=str(tmp_path), **{
        "s3.bucket": bucket, "s3.endpoint_url": s3.url, "s3.region": "us-east-1",
        "s3.access_key_id": "test", "s3.secret_access_key": "test"})
    w = open_store(cfg)
    try:
        mib = 1024 * 1024
        total = 12 * mib + 123
        assert await w.put_stream("big/obj", _pieces(total, 300_000), part_size=5 * mib) == total
        expected = b"".join([p async for p in _pieces(total, 300_000)])
        assert s3.get(bucket, "big/obj") == expected
        assert b"".join([p async for p in w.get_stream("big/obj")]) == expected
        assert await w.put_stream("small", _pieces(10, 3)) == 10
        assert [o.key for o in await w.list("")] == ["big/obj", "small"] and await w.exists("small")

        with pytest.raises(RuntimeError, match="source failed"):
            await w.put_stream("broken", _pieces(total, 300_000, fail_at=11 * mib),
                               part_size=5 * mib)
        assert "broken" not in s3.keys(bucket) and not s3.uploads(bucket)
        await w.delete("small")
        assert not await w.exists("small")
        with pytest.raises(StoreError, match="no object"):
            [p async for p in w.get_stream("small")]
    finally:
        await w.close()


async def test_local_put_stream_leaves_nothing_on_failure(tmp_path):
    w = LocalStore(tmp_path / "objs")
    assert await w.put_stream("a/b.bin", _pieces(1000, 64)) == 1000
    with pytest.raises(RuntimeError):
        await w.put_stream("a/c.bin", _pieces(1000, 64, fail_at=500))
    assert sorted(p.name for p in (tmp_path / "objs" / "a").iterdir()) == ["b.bin"]
    assert [o.key for o in await w.list("a/")] == ["a/b.bin"]
    assert b"".join([p async for p in w.get_stream("a/b.bin")]) == \
        b"".join([p async for p in _pieces(1000, 64)])


# ---- the HTTP driver against a real ClickHouse server ----

@pytest.mark.clickhouse_server
@pytest.mark.skipif(find_binary() is None, reason="clickhouse-server binary not installed")
async def test_http_stream_and_raw_insert_on_a_real_server(tmp_path):
    server = ClickHouseServer(tmp_path / "ch")
    server.start()
    db = HTTPDatabase(config.load(None, **{"database.driver": "http",
                                            "database.url": server.http_url}))
    try:
        await db.execute("CREATE TABLE src (a String, n Nullable(Int32), f Float32, "
                         "t DateTime, tags Array(String)) ENGINE = MergeTree ORDER BY a")
        await db.execute("CREATE TABLE dst AS src")
        await db.insert("src", [{"a": f"x\t\n\\'y\x00{i}", "n": None if i % 2 else i,
                                 "f": 0.1 * i, "t": dt.datetime(2024, 1, 1, 0, 0, i % 60),
                                 "tags": ["a\tb", "c"][: i % 3]} for i in range(5000)])
        pieces = [p async for p in db.stream("SELECT * FROM src", None,
                                             "TabSeparatedWithNamesAndTypes",
                                             {"max_threads": 1, "priority": 10})]

        async def again():
            for p in pieces:
                yield p

        await db.insert_raw("dst", "TabSeparatedWithNamesAndTypes", again(),
                            ["a", "n", "f", "t", "tags"], {"max_threads": 1})
        assert await db.query("SELECT * FROM dst ORDER BY a") == \
            await db.query("SELECT * FROM src ORDER BY a")

        # An error after the first bytes were sent arrives inside the 200 response.
        got = []
        with pytest.raises(DatabaseError, match="throwIf|non zero"):
            async for p in db.stream("SELECT number, throwIf(number = 1500000) FROM "
                                     "system.numbers LIMIT 2000000", None, "TabSeparated",
                                     {"max_block_size": 10000}):
                got.append(p)
        assert got  # it failed midway, not up front
    finally:
        await db.close()
        server.stop()
