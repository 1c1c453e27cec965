"""The object store without S3: the local store, the factory, and the bucket key layout
(what the uploader builds, reprocessing parses back). S3: tests/integration/test_upload.py
and test_backup.py, against moto."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from oonibackend.objectstore import ObjectInfo, StoreError, keys, open_store
from oonibackend.objectstore.local import LocalStore


def test_built_keys_parse_back():
    h = "2024010203_IT_webconnectivity"
    assert keys.hour_of(h) == dt.datetime(2024, 1, 2, 3, tzinfo=dt.UTC)
    postcan = keys.raw_prefix(h) + keys.stem(h, "n1", 4) + keys.POSTCAN
    jsonl = keys.raw_prefix(h) + keys.stem(h, "n1", 4) + keys.JSONL
    assert jsonl == "raw/20240102/03/IT/webconnectivity/2024010203_IT_webconnectivity.n1.4.jsonl.gz"
    assert keys.raw_cc_testname(postcan) == keys.raw_cc_testname(jsonl) == ("IT", "webconnectivity")
    assert keys.postcan_twin(jsonl) == postcan and keys.postcan_twin(postcan) is None
    day_prefixes = keys.day_prefixes(keys.hour_of(h).date())
    assert postcan.startswith(day_prefixes[1]) and not keys.is_legacy(postcan)
    with pytest.raises(ValueError):
        keys.hour_of("2024010203_IT_web/x")


def test_legacy_keys():
    key = "canned/2019-10-30/web_connectivity.00.tar.lz4"
    assert key.startswith(keys.day_prefixes(dt.date(2019, 10, 30))[0]) and keys.is_legacy(key)
    assert keys.canned_test_name(key) == "web_connectivity"
    assert keys.canned_test_name("canned/2019-10-30/2019103000_IT_x.n0.json.lz4") is None
    assert keys.raw_cc_testname(key) is None
    assert keys.day_dir(key) == "2019-10-30" and keys.day_dir("x.yaml.lz4") is None
    assert keys.day_dir("2014-05-13/report.yaml") == "2014-05-13"


async def test_local_store(tmp_path: Path):
    for key in ["raw/20210709/00/IT/signal/b.tar.gz", "raw/20210709/00/IT/signal/a.tar.gz",
                "raw/20210710/00/IT/signal/c.tar.gz", "canned/2021-07-09/x.tar.lz4",
                "raw/20210709/00/IT/signal/.c.tar.gz.stream.tmp"]:
        p = tmp_path / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"1234")
    store = LocalStore(tmp_path)
    got = await store.list("raw/20210709/")
    assert got == [ObjectInfo("raw/20210709/00/IT/signal/a.tar.gz", 4),
                   ObjectInfo("raw/20210709/00/IT/signal/b.tar.gz", 4)]  # not a write in progress
    assert await store.list("raw/20990101/") == []
    assert (await store.fetch(got[0])).read_bytes() == b"1234"
    with pytest.raises(StoreError):
        await store.fetch(ObjectInfo("raw/nope", 1))


def test_open_store(tmp_path: Path):
    from oonibackend import config

    cfg = config.load(None, data_dir=str(tmp_path))
    assert isinstance(open_store(cfg, None), LocalStore)
    assert open_store(cfg, None).root == tmp_path / "objects"
    assert open_store(cfg, "s3://bucket").name == "s3://bucket"
    cfg.s3.bucket = "ooni-data-eu-fra"
    assert open_store(cfg, None).name == "s3://ooni-data-eu-fra"
    with pytest.raises(StoreError):
        open_store(cfg, str(tmp_path / "missing"))
    with pytest.raises(StoreError):
        open_store(cfg, "s3://bucket/prefix")
