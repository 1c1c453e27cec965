"""`update-citizenlab` against a real embedded database owner (its own, not the shared backend:
the import swaps the whole table)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from oonibackend.jobs.citizenlab.importer import ImportRefused, import_citizenlab
from oonibackend.jobs.citizenlab.lists import HEADER, ListError
from oonibackend.storage.http import HTTPDatabase
from oonibackend.storage.migrate import migrate
from tests.clickhouse_server import OwnerProcess

H = ",".join(HEADER) + "\n"
GLOBAL = [("https://www.ushmm.org/", "CULTR"), ("http://ncac.org/", "NEWS"),
          ("https://ncac.org/", "NEWS"), ("https://www.facebook.com/", "GRP"),
          ("https://twitter.com/", "GRP"), ("https://www.Torproject.org/", "ANON")]
COUNTRIES = {"it": [("https://www.repubblica.it/", "NEWS"), ("https://www.arcigay.it/", "LGBT")],
             "br": [("http://www.cabofrio.rj.gov.br/", "CULTR")],
             "ve": [("http://www.aporrea.org/", "POLR"), ("https://www.el-nacional.com/", "NEWS"),
                    ("http://www.aporrea.org/", "POLR")]}


def make_lists(repo: Path, extra_global: int = 0) -> Path:
    lists = repo / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    rows = list(GLOBAL) + [(f"https://site{i}.example.org/", "MISC") for i in range(extra_global)]
    (lists / "global.csv").write_text(
        H + "".join(f"{u},{c},Desc,2017-04-12,citizenlab,\n" for u, c in rows))
    for cc, entries in COUNTRIES.items():
        (lists / f"{cc}.csv").write_text(
            H + "".join(f'{u},{c},Desc,2017-04-12,,"note, with comma"\n' for u, c in entries))
    (lists / "00-LEGEND-category_codes.csv").write_text("CODE,NAME\nNEWS,News\n")
    return repo


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnerProcess]:
    o = OwnerProcess(tmp_path_factory.mktemp("citizenlab-owner")).start()
    yield o
    o.stop()


@pytest.fixture
async def db(owner: OwnerProcess) -> AsyncIterator[HTTPDatabase]:
    d = HTTPDatabase(owner.config())
    await migrate(d)
    await d.execute("TRUNCATE TABLE citizenlab")
    yield d
    await d.close()


async def table(db) -> list[tuple[str, str, str, str]]:
    rows = await db.query("SELECT domain, url, cc, category_code FROM citizenlab FINAL "
                          "ORDER BY cc, url")
    return [(r["domain"], r["url"], r["cc"], r["category_code"]) for r in rows]


async def test_import(db, tmp_path):
    messages: list[str] = []
    stats = await import_citizenlab(db, make_lists(tmp_path), progress=messages.append)
    assert (stats.files, stats.rows, stats.duplicates, stats.countries) == (4, 11, 1, 3)
    assert stats.global_rows == 6 and stats.previous_rows == 0
    assert "imported 11 rows from 4 files" in stats.summary()
    assert any("inserted 11/11" in m for m in messages)
    rows = await table(db)
    assert len(rows) == 11
    assert ("www.torproject.org", "https://www.Torproject.org/", "ZZ", "ANON") in rows
    assert ("www.repubblica.it", "https://www.repubblica.it/", "it", "NEWS") in rows
    assert ("www.cabofrio.rj.gov.br", "http://www.cabofrio.rj.gov.br/", "br", "CULTR") in rows
    assert {r[2] for r in rows} == {"ZZ", "it", "br", "ve"}


async def test_reimport_replaces_and_keeps_previous_in_flip(db, tmp_path):
    await import_citizenlab(db, make_lists(tmp_path / "a"))
    repo = make_lists(tmp_path / "b")
    (repo / "lists" / "br.csv").unlink()
    stats = await import_citizenlab(db, repo)
    assert stats.previous_rows == 11 and stats.rows == 10
    assert "br" not in {r[2] for r in await table(db)}
    flip = await db.query("SELECT count() AS n FROM citizenlab_flip FINAL")
    assert flip[0]["n"] == 11  # the previous list, for a manual swap back


async def test_broken_file_leaves_table_unchanged(db, tmp_path):
    await import_citizenlab(db, make_lists(tmp_path / "good"))
    before = await table(db)
    repo = make_lists(tmp_path / "bad")
    with open(repo / "lists" / "it.csv", "a") as f:
        f.write("https://www.corriere.it/,NOPE,News,2014-04-15,,\n")
    with pytest.raises(ListError, match=r"it\.csv:4: unknown category code 'NOPE'"):
        await import_citizenlab(db, repo)
    assert await table(db) == before


async def test_shrinking_list_is_refused_unless_forced(db, tmp_path):
    await import_citizenlab(db, make_lists(tmp_path / "big", extra_global=40))
    before = await table(db)
    small = make_lists(tmp_path / "small")
    with pytest.raises(ImportRefused, match="less than 50%"):
        await import_citizenlab(db, small)
    assert await table(db) == before
    stats = await import_citizenlab(db, small, force=True)
    assert stats.rows == 11 and len(await table(db)) == 11


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org",
                    "-c", "init.defaultBranch=master", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def cli(owner: OwnerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`oonibackend update-citizenlab` on the owner's data dir (it goes through the owner)."""
    cfg = owner.data_dir / "cli.toml"
    cfg.write_text("[logging]\nformat = \"text\"\n")
    return subprocess.run(
        [sys.executable, "-m", "oonibackend", "update-citizenlab", "--config", str(cfg),
         "--data-dir", str(owner.data_dir), *args],
        capture_output=True, text=True, timeout=300)


async def test_cli_from_git_url(db, owner, tmp_path):
    work = make_lists(tmp_path / "work")
    git("init", "-q", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "lists", cwd=work)
    bare = tmp_path / "test-lists.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    r = cli(owner, "--source", f"file://{bare}")
    assert r.returncode == 0, r.stderr
    assert "read 4 files, 11 rows" in r.stdout
    assert "imported 11 rows from 4 files" in r.stdout.splitlines()[-1]
    assert len(await table(db)) == 11


async def test_cli_errors(db, owner, tmp_path):
    repo = make_lists(tmp_path / "repo")
    (repo / "lists" / "ve.csv").write_text(H + "gopher://x.ve/,NEWS,,,,\n")
    r = cli(owner, "--source", str(repo))
    assert r.returncode == 1
    assert "ve.csv:2: url must be http or https" in r.stderr
    assert await table(db) == []
    r = cli(owner, "--source", str(tmp_path / "missing"))
    assert r.returncode == 1 and "not a directory or a git URL" in r.stderr
    r = cli(owner, "--source", f"file://{tmp_path}/no-such-repo.git")
    assert r.returncode == 1 and "git clone" in r.stderr
    r = subprocess.run([sys.executable, "-m", "oonibackend", "update-citizenlab"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--source" in r.stderr
