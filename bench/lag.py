#!/usr/bin/env python3
"""End-to-end lag: API answered -> fastpath row queryable, at a fixed submission rate.

Starts `oonibackend run` (embedded chdb, real fastpath) in a temporary directory, submits real
measurements from tests/data/samples through `POST /report/<id>` at --rate per second for
--duration seconds, then reads each row's `update_time` (when ClickHouse stored it) and
compares it with the moment the API answered. Prints the achieved rate, p50/p90/p99/max lag,
how many rows arrived, the load average, and the CPU time (user + system, from /proc) each
process of the instance spent from the first submission until the last row was stored, per
measurement: where the time goes (the 2026-11 figures showed ~530 µs in the fastpath main
process and ~470 µs in its scoring workers at 1,000/s).
Usage: python bench/lag.py [--rate 1000] [--duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    SAMPLES,
    free_port,
    percentile,
    post_json,
    start_instance,
    wait_http,
)


def cpu_by_process(pgid: int) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds used so far) of every live process in group `pgid`."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) != pgid:  # field 5: process group
            continue
        out[int(d.name)] = (role(cmd), (int(fields[11]) + int(fields[12])) / tick)
    return out


def role(cmd: list[bytes]) -> str:
    """A short name for a process of `oonibackend run` from its command line."""
    args = [a.decode(errors="replace") for a in cmd if a]
    if "multiprocessing" in " ".join(args):
        return "fastpath worker"
    for name in ("db-owner", "fastpath", "serve"):
        if name in args:
            return {"serve": "API"}.get(name, name)
    return "supervisor" if "run" in args else " ".join(args)[:40]


def cpu_report(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
               count: int) -> str:
    """CPU µs per measurement by role (processes of one role summed)."""
    used: dict[str, float] = {}
    for pid, (name, t) in after.items():
        used[name] = used.get(name, 0.0) + t - before.get(pid, (name, 0.0))[1]
    fp = sum(v for k, v in used.items() if k.startswith("fastpath"))
    parts = [f"{k} {v / count * 1e6:.0f}" for k, v in sorted(used.items())]
    return (f"CPU µs per measurement: {', '.join(parts)}; fastpath total "
            f"{fp / count * 1e6:.0f}")


def settle(pgid: int, fp_port: int, timeout: float = 60.0) -> None:
    """Wait until the fastpath listens and the instance is idle (under 5 % of a core for two
    seconds in a row): start-up (spawned workers importing, the first fingerprint load) must
    not count as per-measurement CPU. It did at first: the API answers /health before the
    fastpath is up, and one run showed 535 µs of fastpath CPU per measurement instead of
    ~280."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", fp_port), 1).close()
            break
        except OSError:
            time.sleep(0.2)
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        a = sum(t for _, t in cpu_by_process(pgid).values())
        time.sleep(1.0)
        quiet = quiet + 1 if sum(t for _, t in cpu_by_process(pgid).values()) - a < 0.05 else 0


async def submit(base: str, rid: str, bodies: list[bytes], rate: float, duration: float
                 ) -> dict[str, float]:
    import aiohttp

    answered: dict[str, float] = {}
    interval = 1.0 / rate
    conn = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one(body: bytes) -> None:
            async with s.post(f"{base}/report/{rid}", data=body,
                              headers={"Content-Type": "application/json"}) as r:
                if r.status == 200:
                    uid = (await r.json())["measurement_uid"]
                    answered[uid] = time.time()

        tasks = []
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < duration:
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
            i += 1
            delay = t0 + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*tasks, return_exceptions=True)
    return answered


async def collect(cfg, answered: dict[str, float], timeout: float) -> dict[str, float]:
    from oonibackend import storage

    db = storage.connect(cfg)  # the running instance's database owner
    stored: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    uids = list(answered)
    try:
        while time.monotonic() < deadline and len(stored) < len(uids):
            missing = [u for u in uids if u not in stored]
            for i in range(0, len(missing), 2000):
                rows = await db.query(
                    "SELECT measurement_uid, min(update_time) AS t FROM fastpath "
                    "WHERE measurement_uid IN %(uids)s GROUP BY measurement_uid",
                    {"uids": missing[i:i + 2000]})
                for r in rows:
                    stored[r["measurement_uid"]] = r["t"].replace(
                        tzinfo=__import__("datetime").UTC).timestamp()
            await asyncio.sleep(0.5)
    finally:
        await db.close()
    return stored


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="submissions per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of submission")
    ap.add_argument("--batch-interval", type=float, default=None,
                    help="[fastpath] batch_interval (default: the config's, 1 s)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="oonilag-"))
    api_port, fp_port = free_port(), free_port()
    backend, conf = start_instance(tmp, "lag", f"""
[server]
port = {api_port}
[fastpath]
port = {fp_port}
{"" if args.batch_interval is None else f"batch_interval = {args.batch_interval}"}
[quotas]
enabled = false
[logging]
level = "WARNING"
""")
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_http(base + "/health")
        # Measurements dated now: the fastpath flags ones older than a day as bad dates.
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        bodies = []
        for f in sorted(SAMPLES.glob("*.json")):
            if f.name.startswith("fingerprints"):
                continue
            msm = json.loads(f.read_text())
            msm.update(probe_cc="IT", probe_asn="AS12874", measurement_start_time=now,
                       test_start_time=now)
            bodies.append(json.dumps({"format": "json", "content": msm}).encode())
        rid = post_json(base + "/report", {"probe_cc": "IT", "probe_asn": "AS12874",
                                           "test_name": "web_connectivity"})["report_id"]
        settle(backend.pid, fp_port)
        cpu0 = cpu_by_process(backend.pid)
        t0 = time.monotonic()
        answered = asyncio.run(submit(base, rid, bodies, args.rate, args.duration))
        achieved = len(answered) / (time.monotonic() - t0)
        from oonibackend import config

        cfg = config.load(str(conf), data_dir=str(tmp / "var"))
        stored = asyncio.run(collect(cfg, answered, 120))
        cpu1 = cpu_by_process(backend.pid)
        lags = [stored[u] - answered[u] for u in stored]
        print(f"submitted {len(answered)} at {achieved:.0f}/s (asked {args.rate:.0f}/s); "
              f"rows stored: {len(stored)}")
        print("lag API answer -> row stored: "
              + "  ".join(f"p{int(p * 100)} {percentile(lags, p):.2f} s"
                          for p in (0.5, 0.9, 0.99)) + f"  max {max(lags, default=0):.2f} s")
        print(cpu_report(cpu0, cpu1, max(1, len(stored))))
        print("load average (1, 5, 15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        os.killpg(backend.pid, signal.SIGTERM)
        backend.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
