"""The real fastpath under `oonibackend run` (database owner + API + fastpath, supervised),
plus the helpers the other test_fastpath_* modules share: submitting through the API,
posting to the feeder, polling the fastpath table, finding and killing processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oonibackend import config, storage
from tests.conftest import SAMPLES, Backend, free_port

# Samples the fastpath scores (with their probe_cc / asn / test name as the API sees them).
SAMPLE_FILES = ("report1.json", "report2.json", "tor.json", "openvpn.json", "signal_022.json",
                "telegram_nourl.json", "whatsapp.json", "riseupvpn.json", "vanilla_tor.json",
                "web_connectivity_ir_fp.json", "http_header_field_manipulation_1.json")


def sample(name: str) -> dict[str, Any]:
    msm = json.loads((SAMPLES / name).read_text())
    return msm.get("content", msm) if "format" in msm else msm


class Stack:
    """`oonibackend run` with the fastpath enabled on a free port."""

    def __init__(self, data_dir: Path, geoip: tuple[Path, Path],
                 **fastpath: object) -> None:
        self.fp_port = free_port()
        cc, asn = geoip
        fp = {"enabled": True, "port": self.fp_port, "workers": 2,
              "urls": [f"http://127.0.0.1:{self.fp_port}/"], "retry_min": 0.1,
              "retry_max": 0.5, "timeout": 10.0, "batch_interval": 0.2,
              "insert_retry_max": 1.0, "fingerprint_refresh": 3600.0, **fastpath}
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "psiphon.json").write_text('{"a": "b"}')
        self.backend = Backend(data_dir, {
            "fastpath": fp,
            "geoip": {"cc_db": str(cc), "asn_db": str(asn)},
            "probe": {"jwt_secret": "x" * 32,
                      "psiphon_config_file": str(data_dir / "psiphon.json")},
            "quotas": {"enabled": False},
            "server": {"max_body_size": 4 * 1024 * 1024},
        })
        self.data_dir = data_dir
        # What the instance's API sends the feeder (it refuses requests without it).
        self.headers = {"Authorization": f"Bearer {self.cfg().internal_key()}"}

    # -- processes -------------------------------------------------------------------------

    def start(self) -> Stack:
        self.backend.start()
        try:
            self.wait_fastpath()
        except BaseException:
            self.backend.kill_group()
            raise
        return self

    def stop(self) -> int | None:
        return self.backend.stop(timeout=60)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        """Whatever happened in the test, leave no process behind."""
        proc = self.backend.proc
        if proc is not None and proc.poll() is None:
            self.stop()
        self.backend.kill_group()

    @property
    def api(self) -> str:
        return self.backend.url

    @property
    def feeder(self) -> str:
        return f"http://127.0.0.1:{self.fp_port}"

    def wait_fastpath(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.feeder_request("/"), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"fastpath did not start:\n{self.log()[-6000:]}")

    def feeder_request(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(self.feeder + path, headers=self.headers)

    def log(self) -> str:
        return self.backend.log.read_text(errors="replace")

    def _pid(self, lock: Path, marker: str) -> int | None:
        try:
            pid = int(lock.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if marker.encode() in cmdline else None

    def fastpath_pid(self) -> int | None:
        return self._pid(self.data_dir / "fastpath" / "queue" / "lock", "fastpath")

    def owner_pid(self) -> int | None:
        return self._pid(self.data_dir / "db.lock", "db-owner")

    def kill(self, which: str) -> int:
        """SIGKILL the fastpath or the database owner; the supervisor restarts it."""
        pid = self.fastpath_pid() if which == "fastpath" else self.owner_pid()
        assert pid, f"no {which} process"
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, which: str, old: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.fastpath_pid() if which == "fastpath" else self.owner_pid()
            if pid and pid != old:
                return pid
            time.sleep(0.1)
        raise RuntimeError(f"{which} was not restarted:\n{self.log()[-4000:]}")

    # -- database --------------------------------------------------------------------------

    def cfg(self) -> config.Config:
        return config.load(str(self.backend.config), data_dir=str(self.data_dir))

    async def query(self, sql: str, params: dict | None = None) -> list[dict]:
        db = storage.connect(self.cfg())
        try:
            return await db.query(sql, params)
        finally:
            await db.close()

    async def query_uids(self, sql: str, uids: list[str]) -> list[dict]:
        """`sql` with `%(u)s` (an array of uids), in chunks (max_query_size), retried while
        the database owner restarts."""
        out: list[dict] = []
        for i in range(0, len(uids), 1000):
            chunk = uids[i:i + 1000]
            for attempt in range(150):
                try:
                    out += await self.query(sql, {"u": chunk})
                    break
                except storage.DatabaseError:
                    if attempt == 149:
                        raise
                    await asyncio.sleep(0.2)
        return out

    async def fastpath_rows(self, uids: list[str]) -> list[dict]:
        return await self.query_uids(
            "SELECT measurement_uid, test_name, probe_cc, scores, anomaly, confirmed, "
            "msm_failure, blocking_type FROM fastpath FINAL WHERE has(%(u)s, measurement_uid)", uids)

    async def wait_rows(self, uids: list[str], timeout: float = 90.0) -> dict[str, dict]:
        """Poll until every uid has its fastpath row."""
        deadline = time.monotonic() + timeout
        found: dict[str, dict] = {}
        while time.monotonic() < deadline:
            found = {r["measurement_uid"]: r for r in await self.fastpath_rows(uids)}
            if set(uids) <= set(found):
                return found
            await asyncio.sleep(0.2)
        missing = sorted(set(uids) - set(found))
        raise AssertionError(f"{len(missing)} rows missing, e.g. {missing[:3]}\n"
                             f"{self.log()[-4000:]}")

    # -- HTTP ------------------------------------------------------------------------------

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.feeder_request("/metrics"), timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


async def open_report(s: aiohttp.ClientSession, api: str, msm: dict) -> str:
    req = {"probe_cc": msm["probe_cc"], "probe_asn": msm["probe_asn"],
           "test_name": msm["test_name"], "software_name": "ooniprobe",
           "software_version": "3.20", "test_version": "0.1", "format": "json",
           "data_format_version": "0.2.0", "test_start_time": msm.get("test_start_time")}
    async with s.post(api + "/report", json=req) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["report_id"]


async def submit(s: aiohttp.ClientSession, api: str, rid: str, msm: dict) -> str:
    body = json.dumps({"format": "json", "content": {**msm, "report_id": rid}}).encode()
    async with s.post(f"{api}/report/{rid}", data=body) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["measurement_uid"]


def new_uid(i: int, cc: str = "IT", testname: str = "webconnectivity") -> str:
    ts = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"{ts}.{i % 1000000:06d}_{cc}_{testname}_{os.urandom(8).hex()}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("fpstack"), geoip_files).start() as s:
        yield s


async def test_run_starts_the_fastpath(stack):
    async with aiohttp.ClientSession() as s, s.get(stack.feeder + "/",
                                                   headers=stack.headers) as r:
        assert r.status == 200 and await r.json() == {}
    assert stack.fastpath_pid()
    assert stack.metric("fastpath_workers_alive") == 2
    # The fingerprint tables were read at start-up (empty here, but loaded).
    assert "fastpath_fingerprint_load_failures_total" not in urllib.request.urlopen(
        stack.feeder_request("/metrics")).read().decode()


async def test_sigterm_stops_everything_cleanly(tmp_path, geoip_files):
    with Stack(tmp_path / "data", geoip_files).start() as s:
        pid = s.fastpath_pid()
        assert pid
        assert s.stop() == 0
        assert not Path(f"/proc/{pid}").exists()
        assert '"fastpath stopped"' in s.log()
