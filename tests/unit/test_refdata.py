"""Reference-data status: one cheap query, the GeoIP files, and the advice sentence."""

from __future__ import annotations

import argparse

import pytest

from oonibackend import config, refdata
from oonibackend.jobs import bootstrap
from oonibackend.storage import DatabaseError


class FakeDB:
    def __init__(self, row: dict | None = None, error: Exception | None = None) -> None:
        self.row, self.error = row, error
        self.sql: list[str] = []

    async def query_one(self, sql: str) -> dict | None:
        self.sql.append(sql)
        if self.error:
            raise self.error
        return self.row


async def test_status_counts_tables_and_geoip_files(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    db = FakeDB({"citizenlab": "33210", "fingerprints_dns": 2, "fingerprints_http": 3,
                 "asnmeta": 0})
    assert await refdata.status(db, cfg) == {"citizenlab": 33210, "fingerprints": 5,
                                             "asnmeta": 0, "geoip": 0}
    assert len(db.sql) == 1 and "count()" in db.sql[0]
    cfg.path(cfg.geoip.cc_db).parent.mkdir(parents=True)
    cfg.path(cfg.geoip.cc_db).write_bytes(b"x")
    assert (await refdata.status(db, cfg))["geoip"] == 0  # both files are needed
    cfg.path(cfg.geoip.asn_db).write_bytes(b"x")
    assert (await refdata.status(db, cfg))["geoip"] == 1


async def test_status_passes_database_errors_on(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    with pytest.raises(DatabaseError):
        await refdata.status(FakeDB(error=DatabaseError("UNKNOWN_TABLE")), cfg)


def test_empty_and_advice():
    status = {"citizenlab": 0, "fingerprints": 0, "asnmeta": 12, "geoip": 1}
    assert refdata.empty(status) == ["citizenlab", "fingerprints"]
    assert refdata.advice(refdata.empty(status)) == (
        "reference data missing: test lists, fingerprints; run `oonibackend bootstrap` "
        "(or update-citizenlab / update-fingerprints)")
    assert refdata.empty({"citizenlab": 1, "fingerprints": 1, "asnmeta": 1, "geoip": 1}) == []
    assert refdata.advice([]) == ""
    assert "download-geoip" in refdata.advice(["geoip"])
    assert [d.name for d in refdata.DATASETS] == list(bootstrap.NAMES)


def test_bootstrap_selection(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))

    def names(**kw: object) -> list[str]:
        args = argparse.Namespace(only=None, skip=None, test_lists_source=None,
                                  fingerprints_source=None, asnmeta_source=None,
                                  geoip_source=None)
        vars(args).update(kw)
        return [s.dataset.name for s in bootstrap.plan(args, cfg)]

    assert names() == ["test-lists", "fingerprints", "asnmeta", "geoip"]
    assert names(only=["geoip", "test-lists"]) == ["test-lists", "geoip"]
    assert names(skip=["geoip"]) == ["test-lists", "fingerprints", "asnmeta"]
    steps = bootstrap.plan(argparse.Namespace(only=None, skip=None, test_lists_source=None,
                                              fingerprints_source="/fp", asnmeta_source=None,
                                              geoip_source=None), cfg)
    assert [s.source for s in steps] == [bootstrap.TEST_LISTS_SOURCE, "/fp",
                                         cfg.asnmeta.source, cfg.geoip.download_url]
    assert bootstrap._names("asnmeta, geoip") == ["asnmeta", "geoip"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown dataset geo"):
        bootstrap._names("geo")
