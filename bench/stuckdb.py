"""Read latency while the database is stuck: p50/p99 of a read route with the database owner
stopped (SIGSTOP), against the same route while it runs.

    .venv/bin/python bench/stuckdb.py [--requests 200] [--concurrency 4] [--rows 100000]
                                      [--path '/api/v1/measurements?limit=10']

Starts the real backend (`oonibackend run`, embedded chdb, fastpath and quotas off) on free
ports in a temporary data directory, fills `fastpath` with `--rows` generated rows
(bench/gen_fastpath.py), then:

1. running: `--requests` reads with `--concurrency` clients (after a few to warm up);
2. first read: SIGSTOP the owner (its pid is the first field of `<data_dir>/db.lock`) and
   time one read sent at that moment (it waits for the health probe to find the database
   stuck);
3. stopped: once /health says 503 (the probe found it, at most a few seconds), the same
   reads again (`--stopped-requests`, default `--requests`: lower it to measure a backend
   without the circuit breaker, whose reads each wait for `database.read_timeout`);
4. recovery: SIGCONT, and the time until the route answers 200 again.

Prints p50/p99/max and the status codes per phase; `--json FILE` saves them. The owner is
always continued and the backend stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from readside import percentile, start_backend  # noqa: E402 (beside this file)


def status_of(url: str, timeout: float = 90) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_status(url: str, want: int, within: float) -> float:
    """Seconds until `url` answers `want` (SystemExit after `within`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        try:
            if status_of(url, timeout=within) == want:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer {want} within {within} s")


async def drive(url: str, n: int, concurrency: int) -> dict[str, object]:
    lat: list[float] = []
    statuses: Counter[int] = Counter()
    left = n
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                try:
                    async with session.get(url) as r:
                        await r.read()
                        statuses[r.status] += 1
                except (aiohttp.ClientError, TimeoutError) as e:
                    statuses[type(e).__name__] += 1  # type: ignore[index]
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"requests": len(lat), "statuses": dict(statuses), "wall_s": wall,
            "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "max_ms": max(lat) * 1000}


def show(name: str, r: dict[str, object]) -> None:
    print(f"{name:9s} {r['requests']:4d} req  p50 {r['p50_ms']:9.1f} ms  "
          f"p99 {r['p99_ms']:9.1f} ms  max {r['max_ms']:9.1f} ms  statuses {r['statuses']}",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", default="/api/v1/measurements?limit=10", help="the read route")
    ap.add_argument("--requests", type=int, default=200, help="reads per phase")
    ap.add_argument("--stopped-requests", type=int, help="reads while stopped (--requests)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rows", type=int, default=100_000, help="generated fastpath rows")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    ap.add_argument("--json", help="write the results as JSON to this file")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="oonibench-stuckdb-"))
    data = tmp / "data"
    backend, base, conf = start_backend(data, tmp)
    url = base + args.path
    results: dict[str, object] = {"path": args.path, "concurrency": args.concurrency}
    owner = None
    try:
        wait_status(base + args.path, 200, 120)
        if args.rows:
            import gen_fastpath  # beside this file

            from oonibackend import config

            cfg = config.load(str(conf), data_dir=str(data))
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
            asyncio.run(gen_fastpath.generate(cfg, args.rows, 30, now, seed=1,
                                              batch=1_000_000))
        asyncio.run(drive(url, 20, args.concurrency))  # warm up
        r = asyncio.run(drive(url, args.requests, args.concurrency))
        results["running"] = r
        show("running", r)

        owner = int((data / "db.lock").read_text().split()[0])
        os.kill(owner, signal.SIGSTOP)
        t0 = time.perf_counter()
        first = status_of(url)
        results["first_read"] = {"status": first, "ms": (time.perf_counter() - t0) * 1000}
        print(f"first read after SIGSTOP: {first} in "
              f"{results['first_read']['ms']:.0f} ms", flush=True)  # type: ignore[index]
        results["health_503_after_s"] = wait_status(base + "/health", 503, 30)
        r = asyncio.run(drive(url, args.stopped_requests or args.requests, args.concurrency))
        results["stopped"] = r
        show("stopped", r)

        os.kill(owner, signal.SIGCONT)
        owner = None
        results["recovery_s"] = wait_status(url, 200, 120)
        print(f"reads answered 200 again {results['recovery_s']:.2f} s after SIGCONT",
              flush=True)
    finally:
        if owner is not None:
            os.kill(owner, signal.SIGCONT)
        os.killpg(backend.pid, signal.SIGTERM)
        try:
            backend.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(backend.pid, signal.SIGKILL)
            backend.wait()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
