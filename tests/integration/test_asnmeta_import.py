"""`oonibackend update-asnmeta` as a real subprocess on the embedded database (no backend
running: the job opens chdb itself under the owner lock), read back with `oonibackend db
exec`. Sources: files, file:// URLs and a loopback HTTP server."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_config

OONIBACKEND = [sys.executable, "-m", "oonibackend"]


class FileServer:
    """A loopback HTTP server of in-memory files. `stall(path, data, after)` serves the
    first `after` bytes of `data`, then hangs until the server stops."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.stalls: dict[str, tuple[bytes, int]] = {}
        self.requests: list[str] = []
        self._release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                if self.path in server.stalls:
                    data, after = server.stalls[self.path]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:after])
                    self.wfile.flush()
                    server._release.wait(60)
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stall(self, path: str, data: bytes, after: int) -> None:
        self.stalls[path] = (data, after)

    def stop(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    s = FileServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory, its table seeded with 300 rows (tests start from whatever the
    previous one left: each reads the state it begins with)."""
    d = tmp_path_factory.mktemp("asnmeta")
    write_config(d / "test.toml", {"logging": {"format": "text", "level": "WARNING"},
                                   "asnmeta": {"source": str(d / "missing.json")}})
    r = cli(d, "--source", str(write_doc(d / "seed.json", make_doc(150, "Seed"))))
    assert r.returncode == 0, r.stderr
    return d


def make_doc(n: int, org: str = "Org", start: int = 1) -> dict[str, list]:
    """`n` ASNs from `start`, each with two history entries (both list orders)."""
    return {str(a): [[f"{org} {a}", "IT", "2019-01-01", f"AUT-{a}", "RIPE"],
                     [f"{org} {a} renamed", "IT", f"AUT-{a}", "20230615", "RIPE"]]
            for a in range(start, start + n)}


def write_doc(path: Path, doc: dict, gz: bool = False) -> Path:
    raw = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def cli(data: Path, *args: str, command: str = "update-asnmeta"
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OONIBACKEND, command, "--config", str(data / "test.toml"),
                           "--data-dir", str(data), *args],
                          capture_output=True, text=True, timeout=120)


def query(data: Path, sql: str) -> list[dict]:
    f = data / "query.sql"
    f.write_text(sql)
    r = subprocess.run([*OONIBACKEND, "db", "exec", str(f), "--config", str(data / "test.toml"),
                        "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def state(data: Path, *asns: int) -> dict:
    """One `db exec`: rows and a content hash of asnmeta, rows of asnmeta_tmp, and the
    newest org_name of each of `asns` (what GET /api/_/asnmeta answers)."""
    sql = ["SELECT 'live' AS k, toString(count()) AS v FROM asnmeta",
           "SELECT 'hash' AS k, toString(sum(cityHash64(asn, org_name, cc, changed, aut_name, "
           "source))) AS v FROM asnmeta",
           "SELECT 'tmp' AS k, toString(count()) AS v FROM asnmeta_tmp"]
    sql += [f"SELECT 'org{a}' AS k, org_name AS v FROM asnmeta WHERE asn = {a} "
            f"ORDER BY changed DESC LIMIT 1" for a in asns]
    rows = {r["k"]: r["v"] for r in query(data, ";\n".join(sql) + ";\n")}
    out = {"live": int(rows["live"]), "hash": rows["hash"], "tmp": int(rows["tmp"])}
    out.update({a: rows.get(f"org{a}", "Unknown") for a in asns})
    return out


def metrics(data: Path) -> dict[str, float]:
    out = {}
    for line in (data / "metrics" / "asnmeta.prom").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name.removeprefix("oonibackend_asnmeta_last_run_")] = float(value)
    return out


def test_import_from_file_then_gzip_url(data, tmp_path):
    src = write_doc(tmp_path / "as-org-map.json", make_doc(300))
    r = cli(data, "--source", str(src), "--batch-size", "250")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "inserted 250 rows" in lines[1] and "swapped asnmeta_tmp and asnmeta" in lines
    assert lines[-1].startswith("imported 600 rows for 300 ASNs (0 invalid entries")
    got = state(data, 42)
    assert (got["live"], got["tmp"], got[42]) == (600, 0, "Org 42 renamed")
    m = metrics(data)
    assert (m["success"], m["rows"], m["invalid_entries"]) == (1, 600, 0)

    gz = write_doc(tmp_path / "as-org-map.json.gz", make_doc(400, "New"), gz=True)
    r = cli(data, "--source", f"file://{gz}")
    assert r.returncode == 0, r.stderr
    assert "previous table had 600 rows" in r.stdout
    got = state(data, 400, 401)
    assert (got["live"], got["tmp"]) == (800, 0)
    assert (got[400], got[401]) == ("New 400 renamed", "Unknown")


def test_broken_sources_leave_the_table_untouched(data, tmp_path):
    before = state(data)
    assert before["live"] > 0 and before["tmp"] == 0
    raw = json.dumps(make_doc(500)).encode()
    (tmp_path / "cut.json").write_bytes(raw[: len(raw) * 2 // 3])
    (tmp_path / "cut.json.gz").write_bytes(gzip.compress(raw)[:-20])
    bad = make_doc(500)
    for a in range(1, 30):  # 29 of 1000 entries invalid: more than 1 %
        bad[str(a)][0][1] = "Italy"
    write_doc(tmp_path / "invalid.json", bad)
    cases = {"cut.json": "truncated", "cut.json.gz": "truncated gzip",
             "invalid.json": "29 of 1000 entries are invalid"}
    for name, message in cases.items():
        r = cli(data, "--source", str(tmp_path / name), "--batch-size", "100")
        assert r.returncode == 1, (name, r.stdout)
        assert message in r.stderr and "nothing changed" in r.stderr, (name, r.stderr)
        assert "inserted 100 rows" in r.stdout  # tmp was being loaded when it failed
    # Without --source the configured one is used (here a missing file).
    r = cli(data)
    assert r.returncode == 1 and "missing.json: no such file" in r.stderr
    assert metrics(data)["success"] == 0
    # None of the failed runs changed the table (and each emptied asnmeta_tmp again).
    assert state(data) == before


def test_few_invalid_entries_are_skipped(data, tmp_path):
    bad = make_doc(500)
    bad["7"][1][1] = "it"
    r = cli(data, "--source", str(write_doc(tmp_path / "few.json", bad)))
    assert r.returncode == 0, r.stderr
    assert "imported 999 rows for 500 ASNs (1 invalid entries skipped" in r.stdout
    assert metrics(data)["invalid_entries"] == 1
    assert state(data, 7)[7] == "Org 7"  # the renamed entry was the invalid one


def test_shrinking_is_refused_unless_forced_and_dry_run_changes_nothing(data, tmp_path):
    before = state(data)
    k = before["live"] // 8  # 2k rows: a quarter of the table
    small = write_doc(tmp_path / "small.json", make_doc(k, "Small"))
    r = cli(data, "--source", str(small))
    assert r.returncode == 1
    assert (f"{2 * k} rows, less than 50% of the current {before['live']} (use --force"
            in r.stderr)
    r = cli(data, "--source", str(small), "--dry-run", "--force")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"would import {2 * k} rows for {k} ASNs")
    assert state(data) == before
    r = cli(data, "--source", str(small), "--force")
    assert r.returncode == 0, r.stderr
    got = state(data, k)
    assert (got["live"], got[k]) == (2 * k, f"Small {k} renamed")


def test_http_source(data, server):
    server.files["/as-org-map.json.gz"] = gzip.compress(json.dumps(make_doc(200, "Web")).encode())
    server.files["/as-org-map.json"] = json.dumps(make_doc(250, "Plain")).encode()
    r = cli(data, "--source", server.url + "/as-org-map.json.gz")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("imported 400 rows for 200 ASNs")
    r = cli(data, "--source", server.url + "/nope.json")
    assert r.returncode == 1 and "HTTP 404" in r.stderr
    r = cli(data, "--source", server.url + "/as-org-map.json")
    assert r.returncode == 0, r.stderr
    assert "previous table had 400 rows" in r.stdout
    got = state(data, 9, 250)
    assert (got["live"], got[9], got[250]) == (500, "Plain 9 renamed", "Plain 250 renamed")


def test_sigkill_mid_run_then_rerun(data, server, tmp_path):
    before = state(data)
    doc = json.dumps(make_doc(20_000, "Big")).encode()
    server.stall("/big.json", doc, after=len(doc) // 2)  # sends half, then hangs
    proc = subprocess.Popen(
        [*OONIBACKEND, "update-asnmeta", "--config", str(data / "test.toml"), "--data-dir",
         str(data), "--source", server.url + "/big.json", "--batch-size", "1000",
         "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = []
    assert proc.stdout is not None
    while True:  # the server hangs after half the document: this cannot run to the end
        line = proc.stdout.readline()
        seen.append(line)
        if line.startswith("inserted 3000 rows") or not line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert any(s.startswith("inserted 3000 rows") for s in seen), seen
    after_kill = state(data)
    assert (after_kill["live"], after_kill["hash"]) == (before["live"], before["hash"])
    assert after_kill["tmp"] >= 3000  # the half-loaded rows, discarded by the next run

    r = cli(data, "--source", str(write_doc(tmp_path / "big.json", make_doc(20_000, "Big"))),
            "--batch-size", "5000")
    assert r.returncode == 0, r.stderr
    got = state(data, 19_999)
    assert (got["live"], got["tmp"], got[19_999]) == (40_000, 0, "Big 19999 renamed")


def test_usage_errors(data):
    r = cli(data, "--batch-size", "0")
    assert r.returncode == 2 and "--batch-size" in r.stderr
    r = cli(data, "--help")
    assert r.returncode == 0
    assert "[org_name, cc, aut_name, changed, source]" in r.stdout
