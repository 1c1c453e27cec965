#!/usr/bin/env python3
"""Submissions per second with valid anonymous-credential proofs, against the real server.

Starts `oonibackend run` (embedded chdb, real fastpath, fsync on) in a temporary directory,
plays probes with ooniauth-py's UserState (manifest, sign_credential), makes --count proofs
beforehand (on every core, outside the timing: a proof costs the client ~8 ms), then sends
them to `POST /api/v1/submit_measurement` with --concurrency requests in flight, and the same
measurements without proofs for comparison. Prints submissions/s, p50/p99 latency and the
verdicts (all must be `verified`).
Usage: python bench/anonc.py [--count 1000] [--concurrency 32] [--verify-threads 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    SAMPLES,
    free_port,
    percentile,
    post_json,
    start_instance,
    wait_http,
)

CC, ASN = "IT", "AS12874"


def make_proofs(base: str, version: str, manifest: dict, contents: list[str]) -> list[dict]:
    """One probe's credential and a proof for each content (runs in a worker process)."""
    import ooniauth_py

    user = ooniauth_py.UserState(manifest["public_parameters"])
    signed = post_json(base + "/api/v1/sign_credential", {
        "manifest_version": version,
        "credential_sign_request": user.make_registration_request()})
    user.handle_registration_response(signed["credential_sign_response"])
    policy = manifest["submission_policy"][-1]["policy"]  # the catch-all
    out = []
    for c in contents:
        req = user.make_submit_request_with_hash(CC, ASN, c, tuple(policy["age"]),
                                                 policy["min_measurement_count"])
        out.append({"format": "json", "content": c, "nym": req.nym,
                    "zkp_request": req.request, "manifest_version": version,
                    "protocol_version": ooniauth_py.get_protocol_version()})
    return out


async def send(base: str, bodies: list[dict], concurrency: int
               ) -> tuple[float, list[float], Counter]:
    import aiohttp

    latencies: list[float] = []
    verdicts: Counter = Counter()
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                t0 = time.monotonic()
                async with s.post(base + "/api/v1/submit_measurement", json=body) as r:
                    doc = await r.json()
                latencies.append(time.monotonic() - t0)
                verdicts[doc.get("verification_status") if r.status == 200 else r.status] += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    return len(bodies) / elapsed, latencies, verdicts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="submissions per run")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    ap.add_argument("--verify-threads", type=int, default=0,
                    help="[anonc] verify_threads (0: the default, cores - 1)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ooniauthbench-"))
    api_port, fp_port = free_port(), free_port()
    backend, _ = start_instance(tmp, "anonc", f"""
[server]
port = {api_port}
[fastpath]
port = {fp_port}
[quotas]
enabled = false
[anonc]
verify_threads = {args.verify_threads}
[logging]
level = "WARNING"
""")
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_http(base + "/health")
        import urllib.request

        with urllib.request.urlopen(base + "/api/v1/manifest") as r:
            doc = json.loads(r.read())
        rid = post_json(base + "/report", {"probe_cc": CC, "probe_asn": ASN,
                                           "test_name": "web_connectivity"})["report_id"]
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        sample = json.loads((SAMPLES / "20250527233111.802678_ID_webconnectivity_"
                             "5a37ec909dbf14e3.json").read_text())
        contents = []
        for i in range(args.count):
            sample.update(report_id=rid, input=f"https://example.org/{i}", probe_cc=CC,
                          probe_asn=ASN, measurement_start_time=now, test_start_time=now)
            contents.append(json.dumps(sample))
        workers = os.cpu_count() or 2
        t0 = time.monotonic()
        with ProcessPoolExecutor(workers) as pool:
            parts = pool.map(make_proofs, [base] * workers, [doc["meta"]["version"]] * workers,
                             [doc["manifest"]] * workers,
                             [contents[i::workers] for i in range(workers)])
            proved = [b for part in parts for b in part]
        print(f"{len(proved)} proofs made in {time.monotonic() - t0:.1f} s (client side)")
        plain = [{"format": "json", "content": c} for c in contents]
        for name, bodies in (("with proofs", proved), ("without proofs", plain)):
            rate, lat, verdicts = asyncio.run(send(base, bodies, args.concurrency))
            print(f"{name}: {rate:.0f} submissions/s, p50 {percentile(lat, 0.5) * 1e3:.0f} ms, "
                  f"p99 {percentile(lat, 0.99) * 1e3:.0f} ms, verdicts {dict(verdicts)}")
    finally:
        os.killpg(backend.pid, signal.SIGTERM)
        backend.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
