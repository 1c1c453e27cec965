"""`oonibackend run`: the whole backend as operators start it, and jobs beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.conftest import Backend


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def _children(pid: int) -> dict[str, int]:
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines()[1:]:
        p, pp, args = line.split(None, 2)
        if int(pp) == pid:
            for name in ("db-owner", "serve"):
                if f" {name} " in f"{args} ":
                    found[name] = int(p)
    return found


def _cli(backend: Backend, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oonibackend", *args, "--config", str(backend.config),
         "--data-dir", str(backend.data_dir)],
        input=stdin, capture_output=True, text=True, timeout=120,
    )


def test_serves_health_metrics_and_docs(backend):
    # The API may answer before the fastpath listens: wait for the round that sees it.
    deadline = time.monotonic() + 30
    while True:
        status, body = _get(backend.url + "/health")
        health = json.loads(body)
        if health["checks"]["fastpath"]["ok"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and health["status"] in ("ok", "degraded"), health
    assert health["checks"]["database"]["ok"] and health["checks"]["spool"]["ok"]
    assert health["checks"]["fastpath"]["ok"], health  # the run's own fastpath, with its key
    status, body = _get(backend.url + "/metrics")
    assert status == 200 and b"oonibackend_http_requests_total" in body
    status, body = _get(backend.url + "/apispec_1.json")
    spec = json.loads(body)
    assert "/api/v1/check-in" in spec["paths"] and "/report/{report_id}" in spec["paths"]
    status, body = _get(backend.url + "/robots.txt")
    assert b"Disallow: /api/_" in body


def test_unknown_path_is_a_json_404(backend):
    try:
        _get(backend.url + "/no/such/route")
    except urllib.error.HTTPError as e:
        assert e.code == 404
        assert json.loads(e.read()) == {"error": "Not found"}
    else:
        raise AssertionError("expected 404")


def test_db_commands_work_while_run_is_up(backend, tmp_path):
    r = _cli(backend, "db", "migrate")
    assert r.returncode == 0, r.stderr
    f = tmp_path / "q.sql"
    f.write_text("SELECT count() AS n FROM test_groups;\nSELECT 'a''b' AS s;")
    r = _cli(backend, "db", "exec", str(f))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines == [{"n": 23}, {"s": "a'b"}]


def test_db_exec_reports_sql_errors(backend, tmp_path):
    f = tmp_path / "bad.sql"
    f.write_text("SELECT * FROM no_such_table;")
    r = _cli(backend, "db", "exec", str(f))
    assert r.returncode != 0
    assert "no_such_table" in r.stderr


def test_sigterm_stops_every_process_and_a_dead_api_is_restarted(tmp_path):
    b = Backend(tmp_path / "data", {"fastpath": {"enabled": False}}).start()
    try:
        kids = _children(b.proc.pid)
        assert set(kids) == {"db-owner", "serve"}
        os.kill(kids["serve"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = _children(b.proc.pid).get("serve")
            if new and new != kids["serve"]:
                try:
                    if _get(b.url + "/health")[0] == 200:
                        break
                except OSError:
                    pass
            time.sleep(0.2)
        else:
            raise AssertionError("the API was not restarted")
        kids = _children(b.proc.pid)
    finally:
        rc = b.stop()
    assert rc == 0
    for pid in kids.values():
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()
