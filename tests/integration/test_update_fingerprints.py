"""`update-fingerprints` against a real embedded database owner (its own: the import swaps
whole tables)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from oonibackend.jobs.fingerprints.importer import import_fingerprints
from oonibackend.jobs.fingerprints.parse import FingerprintError, read_dir
from oonibackend.storage.http import HTTPDatabase
from oonibackend.storage.migrate import migrate
from oonibackend.storage.swap import ImportRefused
from tests.clickhouse_server import OwnerProcess
from tests.conftest import SAMPLES
from tests.unit.test_fingerprints_update import DNS, HTTP, write_dir

# The real command line.
OONIBACKEND = [sys.executable, "-m", "oonibackend"]


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnerProcess]:
    o = OwnerProcess(tmp_path_factory.mktemp("fingerprints-owner")).start()
    yield o
    o.stop()


@pytest.fixture
async def db(owner: OwnerProcess) -> AsyncIterator[HTTPDatabase]:
    d = HTTPDatabase(owner.config())
    await migrate(d)
    for t in ("fingerprints_dns", "fingerprints_http"):
        await d.execute(f"TRUNCATE TABLE {t}")
    yield d
    await d.close()


async def tables(db) -> dict[str, list[dict]]:
    return {k: await db.query(f"SELECT * FROM fingerprints_{k} ORDER BY name")
            for k in ("dns", "http")}


def cli(owner: OwnerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = owner.data_dir / "cli.toml"
    cfg.write_text("[logging]\nformat = \"text\"\n")
    return subprocess.run(
        [*OONIBACKEND, "update-fingerprints", "--config", str(cfg),
         "--data-dir", str(owner.data_dir), *args],
        capture_output=True, text=True, timeout=300)


async def test_import_csv(db, tmp_path):
    messages: list[str] = []
    stats = await import_fingerprints(db, read_dir(write_dir(tmp_path)),
                                      progress=messages.append)
    assert (stats.dns, stats.http, stats.previous_dns) == (2, 3, 0)
    got = await tables(db)
    assert [r["name"] for r in got["dns"]] == ["ooni.by_4", "ooni.cn_0"]
    cn = got["dns"][1]
    assert (cn["scope"], cn["confidence_no_fp"], cn["expected_countries"], cn["notes"]) == \
        ("nat", 5, ",CN ", "a, note")
    assert {r["scope"] for r in got["http"]} == {"nat", "injb"}
    assert any("swapped" in m for m in messages)
    # the previous (empty) tables are now the _tmp ones
    assert (await db.query_one("SELECT count() AS n FROM fingerprints_dns_tmp"))["n"] == 0


async def test_cli_csv_then_broken_csv_leaves_tables(db, owner, tmp_path):
    r = cli(owner, "--source", str(write_dir(tmp_path / "good")))
    assert r.returncode == 0, r.stderr
    assert "imported 2 DNS and 3 HTTP fingerprints" in r.stdout.splitlines()[-1]
    before = await tables(db)
    assert len(before["http"]) == 3

    broken = write_dir(tmp_path / "broken", http=HTTP + [
        ["ooni.bad", "nat", "", "body", "regexp", "(unclosed", "5", "", "", "", ""]])
    r = cli(owner, "--source", str(broken))
    assert r.returncode == 1
    assert "fingerprints_http.csv:5: pattern is not a valid regexp" in r.stderr
    assert await tables(db) == before

    r = cli(owner, "--source", str(tmp_path / "missing"))
    assert r.returncode == 1 and "not a directory" in r.stderr
    r = subprocess.run([*OONIBACKEND, "update-fingerprints"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--source" in r.stderr


async def test_sample_json_and_shrink_check(db, owner, tmp_path):
    src = tmp_path / "json"
    src.mkdir()
    for k in ("dns", "http"):
        shutil.copy(SAMPLES / f"fingerprints_{k}.json", src)
    r = cli(owner, "--source", str(src))
    assert r.returncode == 0, r.stderr
    counts = {k: len(v) for k, v in (await tables(db)).items()}
    assert counts == {"dns": 150, "http": 1699}

    small = read_dir(write_dir(tmp_path / "small"))
    with pytest.raises(ImportRefused, match="less than 50%"):
        await import_fingerprints(db, small)
    assert {k: len(v) for k, v in (await tables(db)).items()} == counts
    stats = await import_fingerprints(db, small, force=True)
    assert (stats.previous_dns, stats.previous_http) == (150, 1699)
    assert {k: len(v) for k, v in (await tables(db)).items()} == {"dns": 2, "http": 3}


async def test_failed_swap_leaves_tables(db, tmp_path):
    """A database error between the two swaps undoes the first one."""
    await import_fingerprints(db, read_dir(write_dir(tmp_path / "a")))
    before = await tables(db)

    class FailingSecondSwap:
        def __getattr__(self, name):
            return getattr(db, name)

        async def execute(self, sql, *a, **kw):
            if sql.startswith("EXCHANGE TABLES fingerprints_http"):
                from oonibackend.storage import DatabaseError

                raise DatabaseError("simulated failure")
            return await db.execute(sql, *a, **kw)

    other = write_dir(tmp_path / "b", dns=DNS[:1] + [
        ["ooni.new", "isp", "", "dns", "full", "9.9.9.9", "1", "", "", "", ""]])
    from oonibackend.storage import DatabaseError

    with pytest.raises(DatabaseError, match="simulated"):
        await import_fingerprints(FailingSecondSwap(), read_dir(other))
    assert await tables(db) == before


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org",
                    "-c", "init.defaultBranch=master", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


async def test_cli_from_git_url(db, owner, tmp_path):
    work = write_dir(tmp_path / "work")
    git("init", "-q", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "fingerprints", cwd=work)
    bare = tmp_path / "blocking-fingerprints.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    r = cli(owner, "--source", f"file://{bare}")
    assert r.returncode == 0, r.stderr
    assert {k: len(v) for k, v in (await tables(db)).items()} == {"dns": 2, "http": 3}


def test_read_errors_before_database(tmp_path):
    d = write_dir(tmp_path, dns=DNS + [DNS[0]])
    with pytest.raises(FingerprintError, match=r"fingerprints_dns\.csv:4: duplicate name"):
        read_dir(d)
