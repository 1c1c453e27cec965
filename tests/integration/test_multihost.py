"""Several hosts on one machine (docs/deployment.md): two API hosts and one fastpath host, each
its own process with its own data directory (spool, quotas, fastpath queue), sharing one
database and the deployment's internal key:

* host A, `oonibackend run` with its fastpath disabled: the embedded database owner (standing
  in for the ClickHouse server) and API A;
* host B, `oonibackend serve`: API B, on A's database (`[database] path` and `owner_socket`);
* the fastpath host, `oonibackend fastpath`: the one feeder both APIs deliver to
  (`[fastpath] urls`), with the internal key as credentials, writing into A's database.

Real measurements (tests/data/samples) are submitted to both APIs. Every one gets exactly one
row in `fastpath` (counted without FINAL), and each body is served by BOTH APIs
(`raw_measurement`, `measurement_meta?full=true`): the host that did not receive it finds it in
its sibling's spool (`[server] other_collectors`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oonibackend import config, storage
from tests.conftest import Backend, free_port, write_config
from tests.integration.test_fastpath_stack import SAMPLE_FILES, open_report, sample, submit


class FastpathHost:
    """`oonibackend fastpath` alone, as on a fastpath host: ready when its feeder answers
    the deployment's key."""

    def __init__(self, data_dir: Path, sections: dict[str, dict[str, Any]]) -> None:
        self.data_dir = data_dir
        self.port = sections["fastpath"]["port"]
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config = write_config(data_dir / "test.toml", sections)
        self.log = data_dir / "fastpath.log"
        self.key = sections["server"]["internal_key"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> FastpathHost:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oonibackend", "fastpath", "--config", str(self.config),
             "--data-dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/",
                                     headers={"Authorization": f"Bearer {self.key}"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastpath exited:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(req, timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fastpath did not start:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wait_healthy(b: Backend, timeout: float = 90.0) -> None:
    """Until /health sees the database, the fastpath and the spool."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(b.url + "/health", timeout=2) as r:
                body = json.loads(r.read())
            if all(body["checks"].get(c, {}).get("ok") for c in ("database", "fastpath", "spool")):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{b.url} not healthy: {body}\n{b.log.read_text()[-4000:]}")


class Deployment:
    """Hosts A and B and the fastpath host, wired as docs/deployment.md describes."""

    def __init__(self, root: Path, geoip: tuple[Path, Path], fastpath_workers: int = 1) -> None:
        key = secrets.token_hex(32)  # the deployment's [server] internal_key
        fp_port = free_port()
        cc, asn = geoip
        a_dir = root / "a"
        database = {"path": str(a_dir / "db"), "owner_socket": str(a_dir / "run" / "db.sock")}
        common: dict[str, dict[str, Any]] = {
            "server": {"internal_key": key},
            "database": database,
            "fastpath": {"urls": [f"http://127.0.0.1:{fp_port}/"], "enabled": False,
                         "retry_min": 0.1, "retry_max": 0.5},
            "geoip": {"cc_db": str(cc), "asn_db": str(asn)},
            "probe": {"jwt_secret": "x" * 32},
            "quotas": {"enabled": False},
        }

        def sections(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
            out = {k: dict(v) for k, v in common.items()}
            for k, v in extra.items():
                out.setdefault(k, {}).update(v)
            return out

        self.a = Backend(a_dir, sections(server={"collector_id": "1"}), command="run")
        self.b = Backend(root / "b", sections(server={"collector_id": "2"}), command="serve")
        # The same list of API hosts on both; each knows itself by [server] hostname.
        collectors = [self.a.url, self.b.url]
        for host in (self.a, self.b):
            host.sections["server"].update(other_collectors=collectors, hostname=host.url)
            write_config(host.config, host.sections)
        self.fastpath = FastpathHost(root / "fastpath", sections(
            fastpath={"host": "127.0.0.1", "port": fp_port, "workers": fastpath_workers,
                      "batch_interval": 0.2, "insert_retry_max": 1.0}))

    def start(self) -> Deployment:
        self.a.start()  # migrates the database
        self.fastpath.start()
        self.b.start()
        wait_healthy(self.a)
        wait_healthy(self.b)
        return self

    def stop(self) -> None:
        for stop in (self.b.stop, self.fastpath.stop, self.a.stop):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stop the others whatever happened
                pass
        self.a.kill_group()
        self.b.kill_group()

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict]:
        db = storage.connect(self.a.cfg())
        try:
            return await db.query(sql, params)
        finally:
            await db.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("multihost"), geoip_files)
    try:
        yield d.start()
    finally:
        d.stop()


async def submit_to(api: str, names: tuple[str, ...]) -> dict[str, dict]:
    """{measurement_uid: content as submitted} of samples submitted through `api`."""
    out = {}
    async with aiohttp.ClientSession() as s:
        for name in names:
            msm = sample(name)
            rid = await open_report(s, api, msm)
            out[await submit(s, api, rid, msm)] = {**msm, "report_id": rid}
    return out


async def get_body(s: aiohttp.ClientSession, api: str, uid: str) -> tuple[Any, Any]:
    """(raw_measurement, measurement_meta?full=true's raw_measurement) from `api`."""
    async with s.get(f"{api}/api/v1/raw_measurement", params={"measurement_uid": uid}) as r:
        assert r.status == 200, (api, uid, r.status, await r.text())
        raw = await r.json()
    async with s.get(f"{api}/api/v1/measurement_meta",
                     params={"measurement_uid": uid, "full": "true"}) as r:
        assert r.status == 200, (api, uid, r.status, await r.text())
        meta = await r.json()
    assert meta["measurement_uid"] == uid
    return raw, json.loads(meta["raw_measurement"])


async def test_two_apis_one_fastpath_one_database(deployment):
    d = deployment
    sent_a, sent_b = await asyncio.gather(submit_to(d.a.url, SAMPLE_FILES),
                                          submit_to(d.b.url, SAMPLE_FILES))
    sent = {**sent_a, **sent_b}
    assert len(sent) == 2 * len(SAMPLE_FILES)
    uids = sorted(sent)

    # Every measurement, whichever API took it, gets its row from the one fastpath.
    sql = ("SELECT measurement_uid, count() AS n FROM fastpath "
           "WHERE has(%(u)s, measurement_uid) GROUP BY measurement_uid")
    deadline = time.monotonic() + 90
    counts: dict[str, int] = {}
    while time.monotonic() < deadline and set(counts) != set(uids):
        counts = {r["measurement_uid"]: r["n"] for r in await d.query(sql, {"u": uids})}
        await asyncio.sleep(0.3)
    assert set(counts) == set(uids), (f"missing: {sorted(set(uids) - set(counts))[:3]}\n"
                                      f"{d.fastpath.log.read_text()[-3000:]}")
    await asyncio.sleep(1.0)  # a second delivery would land within a few batch intervals
    counts = {r["measurement_uid"]: r["n"] for r in await d.query(sql, {"u": uids})}
    assert counts == dict.fromkeys(uids, 1)  # exactly once, without FINAL
    total = await d.query("SELECT count() AS n FROM fastpath")
    assert total[0]["n"] == len(uids)

    # Every body from either API: the receiving host from its spool, the other through it.
    async with aiohttp.ClientSession() as s:
        for uid in uids:
            for api in (d.a.url, d.b.url):
                raw, full = await get_body(s, api, uid)
                # As submitted, plus its measurement_uid.
                assert raw == full == {**sent[uid], "measurement_uid": uid}, (api, uid)

    # Each spool holds only what its host received (nothing is uploaded yet, so `jsonl` is
    # empty): the other host served those bodies from its sibling's spool.
    for host, received in ((d.a, sent_a), (d.b, sent_b)):
        posts = {p.stem for p in (host.data_dir / "spool" / "incoming").rglob("*.post")}
        assert posts == set(received)
    assert (await d.query("SELECT count() AS n FROM jsonl"))[0]["n"] == 0


async def test_each_host_keeps_its_own_spool_and_queue(deployment):
    d = deployment
    ca, cb, cf = d.a.cfg(), d.b.cfg(), config.load(str(d.fastpath.config),
                                                 data_dir=str(d.fastpath.data_dir))
    assert ca.path(ca.spool.dir) != cb.path(cb.spool.dir)
    assert len({ca.path(ca.fastpath.dir), cb.path(cb.fastpath.dir), cf.path(cf.fastpath.dir)}) == 3
    assert (d.fastpath.data_dir / "fastpath" / "queue").is_dir()
    assert not (d.b.data_dir / "db").exists()  # B opened no database of its own
    assert ca.internal_key() == cb.internal_key() == cf.internal_key()
    # The feeder takes deliveries only with the deployment's key.
    req = urllib.request.Request(f"http://127.0.0.1:{d.fastpath.port}/", method="GET")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401

