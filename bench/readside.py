"""Read-side benchmark: p50/p99 of Explorer's list and aggregation calls on N million rows.

    .venv/bin/python bench/readside.py [--rows 10000000] [--data-dir bench/var-read] [--no-rollups]

Starts the real backend (`oonibackend run`, embedded chdb, fastpath off, quotas off) on the
data directory, fills `fastpath` with generated rows (bench/gen_fastpath.py) up to `--rows`
(kept between runs: a second run reuses them), then sends each scenario's requests with
`--concurrency` clients and prints p50/p99 latency per scenario against its target:

| scenario | request (Explorer's own query strings) | target |
|---|---|---|
| search | /search page: `measurements?limit=50&failure=false&order=desc&since&until` (30 days), a quarter without filter, the rest with probe_cc, test_name+probe_cc or probe_asn | p99 < 300 ms |
| recent-box | country/ASN page box: `measurements?limit=5&failure=false&order=desc&probe_cc=XX` | p99 < 300 ms |
| domain-box | domain page box: the same with `domain=X` (one domain in four has no measurement) | p99 < 300 ms |
| aggregation | per-day by country over 30 days: `aggregation?axis_x=measurement_start_day&axis_y=probe_cc&test_name=web_connectivity&time_grain=day&since&until` | p99 < 1 s |
| calendar | a country's per-day counts over 30 days: `aggregation?probe_cc=XX&axis_x=measurement_start_day&since&until` | p99 < 1 s |

Every request has its own time window (shifted by minutes), so no answer comes from a cache:
the figures are those of real queries. The aggregation scenarios read the rollups (migration
0012: the window's whole days) plus fastpath for its two partial days; `--no-rollups`
(`[aggregation] rollups = false`) reads fastpath alone, the "before" figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

COUNTRIES = ["BR", "RU", "US", "TW", "CH", "AU", "IR", "MY", "JP", "RO", "TH", "ID", "IT",
             "TR", "NL", "DE"]
# Networks of the generated data (its templates are real rows), and one with no measurement.
ASNS = ["AS5650", "AS13030", "AS3269", "AS31549", "AS45090"]
DOMAINS = ["vesselthefilm.com", "www.facebook.com", "twitter.com", "no-such-domain.example"]
TARGETS = {"search": 0.300, "recent-box": 0.300, "domain-box": 0.300, "aggregation": 1.0,
           "calendar": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def paths(scenario: str, n: int, now: dt.datetime) -> list[str]:
    """n distinct request paths of one scenario (windows shifted by i minutes)."""
    out = []
    for i in range(n):
        until = now - dt.timedelta(minutes=i)
        since = until - dt.timedelta(days=30)
        win = f"since={_ts(since)}&until={_ts(until)}"
        cc = COUNTRIES[i % len(COUNTRIES)]
        if scenario == "search":
            extra = ["", f"&probe_cc={cc}", f"&test_name=web_connectivity&probe_cc={cc}",
                     f"&probe_asn={ASNS[i % len(ASNS)]}"][i % 4]
            out.append(f"/api/v1/measurements?limit=50&failure=false&order=desc&{win}{extra}")
        elif scenario == "recent-box":
            out.append(f"/api/v1/measurements?limit=5&failure=false&order=desc&probe_cc={cc}"
                       f"&{win}")
        elif scenario == "domain-box":
            out.append(f"/api/v1/measurements?limit=5&failure=false&order=desc"
                       f"&domain={DOMAINS[i % len(DOMAINS)]}&{win}")
        elif scenario == "aggregation":
            out.append("/api/v1/aggregation?axis_x=measurement_start_day&axis_y=probe_cc"
                       f"&test_name=web_connectivity&time_grain=day&{win}")
        elif scenario == "calendar":
            out.append(f"/api/v1/aggregation?probe_cc={cc}&axis_x=measurement_start_day&{win}")
        else:
            raise ValueError(scenario)
    return out


def start_backend(data: Path, conf_dir: Path, rollups: bool = True
                  ) -> tuple[subprocess.Popen, str, Path]:
    """`oonibackend run` on `data` for read benchmarks (no fastpath, no quotas) on a free
    port: (process, base URL, config file). The caller waits for it to answer."""
    conf, api_port = conf_dir / "bench.toml", free_port()
    conf.write_text(f"""[aggregation]
rollups = {'true' if rollups else 'false'}
[server]
port = {api_port}
[fastpath]
enabled = false
port = {free_port()}
[quotas]
enabled = false
[logging]
level = "WARNING"
""")
    backend = subprocess.Popen(
        [sys.executable, "-m", "oonibackend", "run", "--config", str(conf), "--data-dir",
         str(data)], cwd=ROOT, start_new_session=True)
    return backend, f"http://127.0.0.1:{api_port}", conf


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


async def drive(base: str, reqs: list[str], concurrency: int) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    queue = list(reversed(reqs))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def client() -> None:
            nonlocal errors
            while queue:
                path = queue.pop()
                t0 = time.perf_counter()
                async with session.get(base + path) as r:
                    body = await r.read()
                lat.append(time.perf_counter() - t0)
                if r.status != 200:
                    errors += 1
                    if errors <= 3:
                        print(f"  {r.status} {path}: {body[:200]!r}", file=sys.stderr)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors, "rps": len(lat) / wall,
            "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "max_ms": max(lat) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="fastpath rows (default 10M)")
    ap.add_argument("--days", type=int, default=60, help="generated rows span N days (60)")
    ap.add_argument("--data-dir", default=str(ROOT / "bench" / "var-read"),
                    help="kept between runs so the rows are generated once")
    ap.add_argument("--requests", type=int, default=200, help="requests per scenario")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--scenarios", default="search,recent-box,domain-box,aggregation,calendar")
    ap.add_argument("--no-rollups", action="store_true",
                    help="aggregations read fastpath alone ([aggregation] rollups = false)")
    ap.add_argument("--json", help="write the results as JSON to this file")
    args = ap.parse_args()

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    backend, base, conf = start_backend(data, Path(tempfile.mkdtemp(prefix="oonibench-read-")),
                                        rollups=not args.no_rollups)
    results: dict[str, dict[str, float]] = {}
    try:
        wait_http(base + "/health")
        import gen_fastpath  # beside this file

        from oonibackend import config
        from oonibackend.jobs.harness import open_database

        cfg = config.load(str(conf), data_dir=str(data))

        async def count() -> int:
            async with open_database(cfg) as db:
                return (await db.query_one("SELECT count() AS n FROM fastpath"))["n"]

        have = asyncio.run(count())
        if have < args.rows:
            print(f"generating {args.rows - have:,} rows (have {have:,})")
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
            asyncio.run(gen_fastpath.generate(cfg, args.rows - have, args.days, now,
                                              seed=have + 1, batch=1_000_000))
        print(f"fastpath: {asyncio.run(count()):,} rows")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        for name in args.scenarios.split(","):
            reqs = paths(name, args.requests, now)
            asyncio.run(drive(base, reqs[:8], args.concurrency))  # warm the connection pools
            r = asyncio.run(drive(base, reqs, args.concurrency))
            target = TARGETS[name]
            r["target_p99_ms"] = target * 1000
            r["met"] = float(r["p99_ms"] <= target * 1000 and not r["errors"])
            results[name] = r
            print(f"{name:12s} {r['requests']:4d} req  {r['rps']:7.1f} r/s  "
                  f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                  f"(target {target * 1000:.0f} ms: {'met' if r['met'] else 'NOT met'})"
                  + (f"  {r['errors']} errors" if r["errors"] else ""), flush=True)
    finally:
        os.killpg(backend.pid, signal.SIGTERM)
        backend.wait(60)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
