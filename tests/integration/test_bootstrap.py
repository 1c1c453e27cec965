"""`oonibackend bootstrap` as a real subprocess on the embedded database with no backend
running (the job opens chdb itself under the owner lock), from local sources: every dataset
loaded, a second run skips them all, `--force --only` reloads one, a failed dataset does not
stop the others. `refdata.status` is read the same way (a subprocess, `--data-dir` only)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.integration.test_asnmeta_import import make_doc, query, write_doc
from tests.integration.test_citizenlab_import import make_lists
from tests.unit.test_fingerprints_update import write_dir
from tests.unit.test_geoip_download import make_db

OONIBACKEND = [sys.executable, "-m", "oonibackend"]

STATUS = """\
import asyncio, json, sys
from oonibackend import config, refdata
from oonibackend.jobs.harness import open_database
from oonibackend.storage import DatabaseError

async def main():
    cfg = config.load(sys.argv[1], data_dir=sys.argv[2])
    async with open_database(cfg) as db:
        try:
            s = await refdata.status(db, cfg)
        except DatabaseError as e:
            print(json.dumps({"error": type(e).__name__}))
            return
    e = refdata.empty(s)
    print(json.dumps({"status": s, "empty": e, "advice": refdata.advice(e)}))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local sources of the four datasets, as the importers' own tests build them."""
    d = tmp_path_factory.mktemp("bootstrap-sources")
    geoip = d / "geoip"
    geoip.mkdir()
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")  # bootstrap asks for this month first
    for kind in ("country", "asn"):
        raw = make_db(d / f"{kind}.mmdb", kind, 1).read_bytes()
        (geoip / f"dbip-{kind}-lite-{month}.mmdb.gz").write_bytes(gzip.compress(raw))
    return {"test-lists": make_lists(d / "test-lists"),
            "test-lists-bigger": make_lists(d / "test-lists-bigger", extra_global=5),
            "fingerprints": write_dir(d / "fingerprints"),
            "asnmeta": write_doc(d / "as-org-map.json", make_doc(50)),
            "geoip": geoip}


def make_data(path: Path, sources: dict[str, Path]) -> Path:
    """A data directory whose config names the local asnmeta and GeoIP sources (their
    defaults come from the config; test lists and fingerprints are given as options)."""
    path.mkdir(parents=True)
    write_config(path / "test.toml", {
        "logging": {"format": "text", "level": "WARNING"},
        "asnmeta": {"source": str(sources["asnmeta"])},
        "geoip": {"download_url": str(sources["geoip"])}})
    return path


def bootstrap(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OONIBACKEND, "bootstrap", "--config", str(data / "test.toml"),
                           "--data-dir", str(data), *args],
                          capture_output=True, text=True, timeout=300)


def local(sources: dict[str, Path], lists: str = "test-lists") -> list[str]:
    return ["--test-lists-source", str(sources[lists]),
            "--fingerprints-source", str(sources["fingerprints"])]


def status(data: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", STATUS, str(data / "test.toml"), str(data)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def counts(data: Path) -> dict[str, int]:
    sql = ";\n".join(f"SELECT '{t}' AS t, toString(count()) AS n FROM {t}" for t in
                     ("citizenlab", "fingerprints_dns", "fingerprints_http", "asnmeta"))
    return {r["t"]: int(r["n"]) for r in query(data, sql + ";\n")}


def test_bootstrap_loads_everything_then_skips_then_reloads_one(sources, tmp_path):
    data = make_data(tmp_path / "data", sources)
    # No schema yet: status is a database error, for the caller to handle.
    assert status(data) == {"error": "DatabaseError"}
    r = subprocess.run([*OONIBACKEND, "db", "migrate", "--config", str(data / "test.toml"),
                        "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    empty = status(data)
    assert empty["status"] == {"citizenlab": 0, "fingerprints": 0, "asnmeta": 0, "geoip": 0}
    assert empty["empty"] == ["citizenlab", "fingerprints", "asnmeta", "geoip"]
    assert empty["advice"].startswith("reference data missing: test lists, fingerprints, "
                                      "AS organisations, GeoIP databases; run `oonibackend "
                                      "bootstrap`")

    r = bootstrap(data, *local(sources))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # progress goes to stderr
    lines = r.stderr.splitlines()
    assert f"[1/4] test lists from {sources['test-lists']} ..." in lines
    assert any(line.startswith(f"[1/4] test lists from {sources['test-lists']}: 11 rows in ")
               and line.endswith(" s") for line in lines), r.stderr
    assert any(line.startswith("[2/4] fingerprints from ") and ": 5 rows (2 DNS, 3 HTTP) in "
               in line for line in lines), r.stderr
    assert any(line.startswith("[3/4] AS organisations from ") and ": 100 rows (50 ASNs) in "
               in line for line in lines), r.stderr
    assert any(line.startswith("[4/4] GeoIP databases from ")
               and ": country and ASN databases of " in line for line in lines), r.stderr
    assert "      swapped citizenlab and citizenlab_flip" in lines  # the importer's own steps
    assert lines[-1] == "oonibackend bootstrap: done"
    assert counts(data) == {"citizenlab": 11, "fingerprints_dns": 2, "fingerprints_http": 3,
                            "asnmeta": 100}
    geoip = {p.name for p in (data / "geoip").iterdir() if not p.name.endswith(".lock")}
    assert geoip == {"cc.mmdb", "asn.mmdb"}
    loaded = status(data)
    assert loaded == {"status": {"citizenlab": 11, "fingerprints": 5, "asnmeta": 100,
                                 "geoip": 1}, "empty": [], "advice": ""}

    # Everything is loaded: a second run changes nothing, even from other sources.
    r = bootstrap(data, *local(sources, "test-lists-bigger"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        "[1/4] test lists: already loaded (11 rows), skipped (--force reloads)",
        "[2/4] fingerprints: already loaded (5 rows), skipped (--force reloads)",
        "[3/4] AS organisations: already loaded (100 rows), skipped (--force reloads)",
        "[4/4] GeoIP databases: already loaded (installed), skipped (--force reloads)",
        "oonibackend bootstrap: done"]
    assert status(data) == loaded

    # --force --only reloads that one alone.
    r = bootstrap(data, "--force", "--only", "test-lists", *local(sources, "test-lists-bigger"))
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("[1/1] test lists from ") and ": 16 rows in " in line
               for line in r.stderr.splitlines()), r.stderr
    assert "fingerprints" not in r.stderr and "[2/" not in r.stderr
    assert counts(data)["citizenlab"] == 16
    assert status(data)["status"] == {"citizenlab": 16, "fingerprints": 5, "asnmeta": 100,
                                      "geoip": 1}


def test_a_failed_dataset_does_not_stop_the_others(sources, tmp_path):
    data = make_data(tmp_path / "data", sources)
    missing = tmp_path / "no-such-dir"
    r = bootstrap(data, "--skip", "asnmeta", "--test-lists-source", str(missing),
                  "--fingerprints-source", str(sources["fingerprints"]),
                  "--geoip-source", f"file://{tmp_path}/dbip-{{kind}}-{{month}}.mmdb.gz")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert any(line.startswith(f"[1/3] test lists from {missing}: FAILED after ")
               and "not a directory or a git URL" in line for line in lines), r.stderr
    assert any(line.startswith("[2/3] fingerprints from ") and ": 5 rows" in line
               for line in lines), r.stderr
    assert any(line.startswith("[3/3] GeoIP databases from ") and ": FAILED after " in line
               for line in lines), r.stderr
    i = lines.index("oonibackend bootstrap: 2 of 3 datasets failed (left as they were):")
    assert lines[i + 1].startswith("  test-lists: ") and "not a directory" in lines[i + 1]
    assert lines[i + 2].startswith("  geoip: ")
    assert lines[i + 3] == "retry with: oonibackend bootstrap --only test-lists,geoip"
    got = status(data)
    assert got["status"] == {"citizenlab": 0, "fingerprints": 5, "asnmeta": 0, "geoip": 0}
    assert got["empty"] == ["citizenlab", "asnmeta", "geoip"]
    assert not (data / "geoip" / "cc.mmdb").exists()
