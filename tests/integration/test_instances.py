"""Instances side by side on one host, started as an operator would: `oonibackend run` with
nothing but --data-dir, --port and --fastpath-port. Each keeps to its own data; its internal
channels (database owner, fastpath feeder) refuse everyone else, the other instance included;
a taken port is a clear error within seconds; /health tells the truth when the database hangs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from oonibackend import config, storage
from tests.conftest import free_port
from tests.integration.test_fastpath_stack import open_report, sample, submit
from tests.unixhttp import request as unix_request


def health(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Instance:
    """`oonibackend run --data-dir D --port P --fastpath-port F`, no config file."""

    def __init__(self, data_dir: Path, port: int | None = None,
                 fastpath_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.fastpath_port = fastpath_port or free_port()
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cfg(self) -> config.Config:
        return config.load(None, data_dir=str(self.data_dir))

    def spawn(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oonibackend", "run", "--data-dir", str(self.data_dir),
             "--port", str(self.port), "--fastpath-port", str(self.fastpath_port)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        return self.proc

    def start(self, timeout: float = 120.0) -> Instance:
        """Spawn and wait until /health sees the database, the spool and the fastpath."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status, body = health(self.url, timeout=2)
                checks = body.get("checks", {})
                if status == 200 and all(checks.get(c, {}).get("ok")
                                         for c in ("database", "fastpath", "spool")):
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"did not become healthy:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def owner_pid(self) -> int:
        return int((self.data_dir / "db.lock").read_text().split()[0])

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    async def submit(self, name: str) -> tuple[str, str]:
        """(report_id, measurement_uid) of one sample submitted through the API."""
        msm = sample(name)
        async with aiohttp.ClientSession() as s:
            rid = await open_report(s, self.url, msm)
            return rid, await submit(s, self.url, rid, msm)

    async def fastpath_uids(self) -> set[str]:
        db = storage.connect(self.cfg())  # found from the data directory alone
        try:
            return {r["measurement_uid"] for r in await db.query(
                "SELECT measurement_uid FROM fastpath")}
        finally:
            await db.close()

    async def wait_rows(self, uids: set[str], timeout: float = 60.0) -> set[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self.fastpath_uids()
            if uids <= found:
                return found
            await asyncio.sleep(0.2)
        raise AssertionError(f"rows missing: {uids - found}\n{self.output()}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    root = tmp_path_factory.mktemp("instances")
    a, b = Instance(root / "a"), Instance(root / "b")
    try:
        yield a.start(), b.start()
    finally:
        a.stop(), b.stop()


async def test_each_instance_scores_and_lists_only_its_own(pair):
    a, b = pair
    rid_a, uid_a = await a.submit("report1.json")
    rid_b, uid_b = await b.submit("report2.json")
    assert (await a.wait_rows({uid_a})) == {uid_a}
    assert (await b.wait_rows({uid_b})) == {uid_b}
    for inst, own, other in ((a, rid_a, rid_b), (b, rid_b, rid_a)):
        for rid, n in ((own, 1), (other, 0)):
            with urllib.request.urlopen(f"{inst.url}/api/v1/measurements?report_id={rid}"
                                        "&since=2000-01-01", timeout=10) as r:
                assert len(json.loads(r.read())["results"]) == n, (inst.url, rid)
    # Each has its own socket, key, spool and queue under its data directory.
    ca, cb = a.cfg(), b.cfg()
    assert ca.owner_socket() != cb.owner_socket() and ca.internal_key() != cb.internal_key()


async def test_internal_channels_refuse_strangers(pair):
    a, b = pair
    feeder = f"http://127.0.0.1:{a.fastpath_port}/20240101120000.123456_IT_webconnectivity_0123456789abcdef"
    for headers in ({}, {"Authorization": f"Bearer {b.cfg().internal_key()}"},
                    {"Origin": "https://evil.example", "Content-Type": "text/plain"}):
        req = urllib.request.Request(feeder, data=b"{}", headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 401
    sock = str(a.cfg().owner_socket())
    for headers in ({}, {"X-ClickHouse-Key": b.cfg().internal_key()}):
        status, text = unix_request(sock, "POST", "/", b"SELECT count() FROM accounts",
                                    headers=headers)
        assert status == 403 and b"AUTHENTICATION_FAILED" in text
    # The instance's own key works on both.
    status, text = unix_request(sock, "POST", "/", b"SELECT 1",
                                headers={"X-ClickHouse-Key": a.cfg().internal_key()})
    assert (status, text) == (200, b"1\n")


def test_a_taken_port_is_a_clear_error(pair, tmp_path):
    a, _ = pair
    for port, fastpath_port, taken in ((a.port, None, a.port),
                                       (None, a.fastpath_port, a.fastpath_port)):
        third = Instance(tmp_path / f"third-{taken}", port, fastpath_port)
        t0 = time.monotonic()
        rc = third.spawn().wait(30)
        assert rc == 78 and time.monotonic() - t0 < 10
        assert f"127.0.0.1:{taken}" in third.output() and "in use" in third.output()
    assert health(a.url)[0] == 200  # the first one keeps serving
    # `serve` alone on a taken port: the same, with the "do not restart" exit code.
    r = subprocess.run([sys.executable, "-m", "oonibackend", "serve", "--data-dir",
                        str(tmp_path / "serve"), "--port", str(a.port)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and f"127.0.0.1:{a.port}" in r.stderr


def test_a_child_failing_at_start_stops_the_backend(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "fastpath").write_text("not a directory")  # the fastpath cannot open its queue
    inst = Instance(data)
    t0 = time.monotonic()
    try:
        rc = inst.spawn().wait(90)
    finally:
        inst.stop()
    assert rc == 1, inst.output()
    assert "fastpath failed 3 times in a row" in inst.output()
    print(f"stopped after {time.monotonic() - t0:.1f} s")


def test_health_follows_a_hung_database(pair):
    a, _ = pair
    pid = a.owner_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        while True:
            t1 = time.monotonic()
            status, body = health(a.url)
            latency = time.monotonic() - t1
            assert latency < 1.0, latency  # the route never waits on the database
            if status == 503:
                break
            assert time.monotonic() - t0 < 10, body
            time.sleep(0.2)
        print(f"503 after {time.monotonic() - t0:.1f} s, /health answered in {latency * 1000:.0f} ms")
        assert body["status"] == "fail" and "clickhouse_error" in body["errors"]
        assert body["checks"]["database"]["ok"] is False
        assert body["checks"]["spool"]["ok"] is True
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while health(a.url)[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
