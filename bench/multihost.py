#!/usr/bin/env python3
"""Several hosts on one machine: two API hosts and one fastpath host on one database.

Starts the topology of tests/integration/test_multihost.py (docs/deployment.md) in a
temporary directory, submits real measurements from tests/data/samples to BOTH APIs at
--rate per second in total for --duration seconds, then prints: rows stored and duplicates
(count per uid, without FINAL), the submit -> row lag, and the latency of `raw_measurement`
on the host that received the measurement (its spool) and on the other one (through its
sibling's spool), over --lookups uids of each host. The fastpath has 2 scoring workers.
Usage: python bench/multihost.py [--rate 300] [--duration 10] [--lookups 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from lag import collect, submit  # noqa: E402
from run import SAMPLES, percentile, post_json  # noqa: E402

from tests.conftest import write_mmdb  # noqa: E402
from tests.integration.test_multihost import Deployment  # noqa: E402


def bodies(report_id: str) -> list[bytes]:
    """The samples in report `report_id` (where the read side looks for a body depends on
    it), dated now (the fastpath flags older ones as bad dates)."""
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    out = []
    for f in sorted(SAMPLES.glob("*.json")):
        if f.name.startswith("fingerprints"):
            continue
        msm = json.loads(f.read_text())
        msm.update(probe_cc="IT", probe_asn="AS12874", measurement_start_time=now,
                   test_start_time=now, report_id=report_id)
        out.append(json.dumps({"format": "json", "content": msm}).encode())
    return out


async def lookups(api: str, uids: list[str]) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as s:
        for uid in uids:
            t0 = time.perf_counter()
            async with s.get(f"{api}/api/v1/raw_measurement",
                             params={"measurement_uid": uid}) as r:
                await r.read()
                assert r.status == 200, (api, uid, r.status)
            out.append(time.perf_counter() - t0)
    return out


def ms(values: list[float]) -> str:
    return "  ".join(f"p{int(p * 100)} {percentile(values, p) * 1000:.1f} ms"
                     for p in (0.5, 0.99))


async def measure(d: Deployment, rate: float, duration: float, n_lookups: int) -> None:
    report = {"probe_cc": "IT", "probe_asn": "AS12874", "test_name": "web_connectivity"}
    rid_a = post_json(d.a.url + "/report", report)["report_id"]
    rid_b = post_json(d.b.url + "/report", report)["report_id"]
    t0 = time.monotonic()
    got_a, got_b = await asyncio.gather(
        submit(d.a.url, rid_a, bodies(rid_a), rate / 2, duration),
        submit(d.b.url, rid_b, bodies(rid_b), rate / 2, duration))
    answered = {**got_a, **got_b}
    print(f"submitted {len(got_a)} to A and {len(got_b)} to B, "
          f"{len(answered) / (time.monotonic() - t0):.0f}/s in total (asked {rate:.0f}/s)")
    stored = await collect(d.a.cfg(), answered, 120)
    lags = [stored[u] - answered[u] for u in stored]
    counts = [r["n"] for r in await d.query(
        "SELECT measurement_uid, count() AS n FROM fastpath GROUP BY measurement_uid")]
    print(f"rows stored: {len(stored)} / {len(answered)}; uids with more than one row: "
          f"{sum(n > 1 for n in counts)}")
    print("lag API answer -> row stored: "
          + "  ".join(f"p{int(p * 100)} {percentile(lags, p):.2f} s" for p in (0.5, 0.9, 0.99))
          + f"  max {max(lags, default=0):.2f} s")
    for name, own, other, uids in (("A", d.a.url, d.b.url, list(got_a)[:n_lookups]),
                                   ("B", d.b.url, d.a.url, list(got_b)[:n_lookups])):
        print(f"raw_measurement of {len(uids)} bodies received by {name}: on {name} (spool) "
              f"{ms(await lookups(own, uids))}; on the other host (sibling) "
              f"{ms(await lookups(other, uids))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=300.0, help="submissions per second, total")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of submission")
    ap.add_argument("--lookups", type=int, default=200, help="bodies read back per host")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="oonimultihost-") as tmp:
        root = Path(tmp)
        d = Deployment(root, write_mmdb(root / "geoip"), fastpath_workers=2)
        try:
            d.start()
            asyncio.run(measure(d, args.rate, args.duration, args.lookups))
        finally:
            d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
