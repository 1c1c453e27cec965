"""The uploader without S3 or ClickHouse: file building, the state machine over the local
object store with an in-memory database, resumption after failures, dry run."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import random
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from oonibackend import config, ids
from oonibackend.jobs.upload import files
from oonibackend.jobs.upload.uploader import Options, Uploader, UploadError, is_closed
from oonibackend.objectstore import StoreError, keys
from oonibackend.objectstore.local import LocalStore
from oonibackend.storage import Database
from tests.conftest import SAMPLES

# Samples that are single measurements (not fingerprint lists or YAML).
SAMPLE_NAMES = ["web_connectivity_no_body.json", "web_connectivity_null.json", "tor.json",
                "meek.json", "riseupvpn.json", "http_requests_1.json", "torsf_1.json",
                "vanilla_tor.json", "report1.json", "openvpn.json"]


def sample_bodies() -> list[dict[str, Any]]:
    return [json.loads((SAMPLES / n).read_text()) for n in SAMPLE_NAMES]


def make_spool(spool_dir: Path, hours: Sequence[str], per_hour: int, cc: str = "IT",
               testname: str = "webconnectivity", seed: int = 1) -> dict[str, tuple[str, bytes]]:
    """Hour directories full of `.post` files wrapping real samples; uid -> (hour dir, body)."""
    rnd = random.Random(seed)
    bodies = sample_bodies()
    out = {}
    for hour in hours:
        hour_dir = f"{hour}_{cc}_{testname}"
        d = spool_dir / "incoming" / hour_dir
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_hour):
            uid = (f"{hour}{i // 60 % 60:02d}{i % 60:02d}.{rnd.randrange(10**6):06d}_{cc}_"
                   f"{testname}_{rnd.getrandbits(64):016x}")
            assert ids.is_valid_uid(uid) and ids.hour_dir_of(uid) == hour_dir
            content = dict(bodies[i % len(bodies)])
            content["report_id"] = f"20240102T030000Z_{testname}_{cc}_1234_n1_{i:016d}"
            body = json.dumps({"format": "json", "content": content}).encode()
            (d / f"{uid}.post").write_bytes(body)
            out[uid] = (hour_dir, body)
        (d / ".delivered").write_text("".join(list(out)[:3]) + "\n")
    return out


class MemoryDB(Database):
    """Just enough of a Database for the uploader: inserts into lists."""

    def __init__(self, fail: bool = False) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.fail = fail

    async def query(self, sql, params=None, settings=None):
        return []

    async def execute(self, sql, params=None, settings=None):
        return None

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, settings=None) -> None:
        from oonibackend.storage import DatabaseUnavailable

        if self.fail:
            raise DatabaseUnavailable("down")
        self.tables.setdefault(table, []).extend(
            {c: r[c] for c in (columns or r.keys())} for r in rows)


def make_cfg(tmp_path: Path) -> config.Config:
    return config.load(None, data_dir=str(tmp_path))


def objects(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".tmp")}


def spool_uids(spool_dir: Path) -> set[str]:
    return {p.name[:-5] for p in (spool_dir / "incoming").rglob("*.post")}


# -- pure functions ----------------------------------------------------------------------------

def test_names_and_plan():
    h = "2024010203_IT_webconnectivity"
    assert keys.raw_prefix(h) == "raw/20240102/03/IT/webconnectivity/"
    assert keys.stem(h, "n1", 4) == "2024010203_IT_webconnectivity.n1.4"
    for bad in ("../x", "2024010203_IT_web/x", "2024010203_IT_web connectivity"):
        with pytest.raises(ValueError):
            keys.raw_prefix(bad)
    with pytest.raises(ValueError):
        keys.stem(h, "n1/../x", 0)
    posts = [("a", 5), ("b", 5), ("c", 5), ("d", 20), ("e", 1)]
    assert files.plan_cans(posts, 10) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert files.plan_cans([], 10) == []
    assert files.input_of(None) == "" and files.input_of("https://x/") == "https://x/"
    assert files.input_of(["a.com", "b.com"]) == "{a.com,b.com}" and files.input_of(3) == ""
    now = dt.datetime(2024, 1, 2, 4, 4, tzinfo=dt.UTC)
    assert not is_closed(h, now, 300)
    assert is_closed(h, now + dt.timedelta(minutes=1), 300)


def test_build_can_seekable_and_deterministic(tmp_path):
    spool = make_spool(tmp_path / "spool", ["2024010203"], 12)
    hour_dir = tmp_path / "spool" / "incoming" / "2024010203_IT_webconnectivity"
    (hour_dir / "20240102030000.000000_IT_webconnectivity_0000000000000000.post").write_bytes(
        b"not json")  # kept in the postcan, no jsonl line
    uids = sorted(u for u, _ in files.list_posts(hour_dir))
    outs = []
    for k in range(2):
        d = tmp_path / f"out{k}"
        d.mkdir()
        res = files.build_can(hour_dir, uids, d / "c.tar.gz", d / "c.jsonl.gz", d / "r.json",
                              mtime=1704164400)
        outs.append(((d / "c.tar.gz").read_bytes(), (d / "c.jsonl.gz").read_bytes(), res))
    assert outs[0][:2] == outs[1][:2]  # byte-identical rebuilds
    tar_bytes, jsonl_bytes, res = outs[0]
    assert (res.posts, res.skipped, res.missing) == (13, 1, 0)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    # named as OONI's uploader names them (docs/current_services.md §8)
    assert members == {
        f"var/lib/ooniapi/measurements/incoming/2024010203_IT_webconnectivity/{u}.post":
        (hour_dir / f"{u}.post").read_bytes() for u in uids}
    lines = gzip.decompress(jsonl_bytes).splitlines()
    assert len(lines) == len(res.lines) == 12
    for line, row in zip(lines, res.lines, strict=True):
        msm = json.loads(line)
        assert msm["measurement_uid"] == row.measurement_uid
        _, body = spool[row.measurement_uid]
        expect = dict(json.loads(body)["content"], measurement_uid=row.measurement_uid)
        assert msm == expect and row.report_id == expect["report_id"]
        member = jsonl_bytes[row.byte_offset:row.byte_offset + row.byte_length]
        assert gzip.decompress(member) == line + b"\n"
        assert zlib.decompress(member, 31) == line + b"\n"  # a single, complete member
    assert files.load_rows(tmp_path / "out0" / "r.json") == res.lines


# -- the state machine -------------------------------------------------------------------------

async def _run(cfg, db, writer=None, **kw) -> Any:
    up = Uploader(cfg, writer or LocalStore(cfg.path("objects")), db, Options(**kw),
                  out=lambda s: None)
    up.lock()
    try:
        return await up.run()
    finally:
        up.unlock()


def _check_exactly_once(cfg, db, spool):
    objs = objects(cfg.path("objects"))
    seen: list[str] = []
    for key, data in objs.items():
        if key.endswith(".jsonl.gz"):
            seen += [json.loads(x)["measurement_uid"] for x in gzip.decompress(data).splitlines()]
    assert sorted(seen) == sorted(spool)
    rows = db.tables["jsonl"]
    assert sorted({r["measurement_uid"] for r in rows}) == sorted(spool)
    for r in rows:
        data = objs[r["s3path"]]
        line = gzip.decompress(data[r["byte_offset"]:r["byte_offset"] + r["byte_length"]])
        assert json.loads(line)["measurement_uid"] == r["measurement_uid"]
        assert gzip.decompress(data).splitlines()[r["linenum"]] == line.rstrip(b"\n")
        assert r["date"] == dt.date(2024, 1, 2) and r["source"] == "n1"


async def test_upload_local_store(tmp_path):
    cfg = make_cfg(tmp_path)
    spool = make_spool(cfg.path("spool"), ["2024010203", "2024010204"], 15)
    # an open hour is left alone
    now = dt.datetime.now(dt.UTC)
    open_hour = make_spool(cfg.path("spool"), [now.strftime("%Y%m%d%H")], 2, seed=2)
    db = MemoryDB()
    s = await _run(cfg, db, can_bytes=12000)
    assert s.measurements == 30 and s.cans > 2 and s.files == 2 * s.cans
    _check_exactly_once(cfg, db, spool)
    assert spool_uids(cfg.path("spool")) == set(open_hour)
    assert sorted(p.name for p in (cfg.path("spool") / "incoming").iterdir()) == \
        [next(iter(open_hour.values()))[0]]  # the uploaded hour dirs are gone
    assert not (cfg.path("upload") / "2024010203_IT_webconnectivity").exists()
    # a second run changes nothing; late files in an uploaded hour get new can numbers
    late = make_spool(cfg.path("spool"), ["2024010203"], 3, seed=3)
    before = objects(cfg.path("objects"))
    s2 = await _run(cfg, db, can_bytes=12000)
    after = objects(cfg.path("objects"))
    assert all(after[k] == v for k, v in before.items()) and s2.measurements == 3
    _check_exactly_once(cfg, db, {**spool, **late})


async def test_failures_leave_spool_intact_then_resume(tmp_path):
    cfg = make_cfg(tmp_path)
    spool = make_spool(cfg.path("spool"), ["2024010203"], 10)

    class Broken(LocalStore):
        async def put(self, key, path):
            raise StoreError("bucket s3://x does not exist")

    with pytest.raises(StoreError):
        await _run(cfg, MemoryDB(), writer=Broken(cfg.path("objects")), can_bytes=8000)
    assert spool_uids(cfg.path("spool")) == set(spool)
    db = MemoryDB(fail=True)
    from oonibackend.storage import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable):
        await _run(cfg, db, can_bytes=8000)
    assert spool_uids(cfg.path("spool")) == set(spool)  # uploaded but not recorded: kept
    db.fail = False
    await _run(cfg, db, can_bytes=999999)  # the saved plan wins over the new can size
    _check_exactly_once(cfg, db, spool)
    assert spool_uids(cfg.path("spool")) == set()


async def test_dry_run_changes_nothing(tmp_path):
    cfg = make_cfg(tmp_path)
    spool = make_spool(cfg.path("spool"), ["2024010203"], 5)

    def tree():
        return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    before = tree()
    out: list[str] = []
    up = Uploader(cfg, LocalStore(cfg.path("objects")), None, Options(dry_run=True), out.append)
    s = await up.run()
    assert tree() == before and len(out) == 1 and "5 measurements" in out[0]
    assert s.planned == out and spool_uids(cfg.path("spool")) == set(spool)


async def test_lock_excludes_second_uploader(tmp_path):
    cfg = make_cfg(tmp_path)
    a = Uploader(cfg, LocalStore(cfg.path("objects")), MemoryDB(), Options())
    b = Uploader(cfg, LocalStore(cfg.path("objects")), MemoryDB(), Options())
    a.lock()
    with pytest.raises(UploadError, match="another upload"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()
