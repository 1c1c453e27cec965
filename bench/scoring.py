#!/usr/bin/env python3
"""Fastpath scoring speed on one core: `workers.process.process(raw, uid, fingerprints)` over
the real measurements in tests/data/samples, with the real fingerprint lists.

Prints measurements/s for the web_connectivity samples alone and for all samples, next to
OONI's reference figures (1,257/s and 2,144/s per core on a 2-core machine), and the same
loops with OONI's linear scan of the body fingerprints swapped in, measured here.
Usage: python bench/scoring.py [--seconds 3] [--no-linear]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "samples"
UID = "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3"


def rate(process, fps, items: list[bytes], seconds: float) -> float:
    n, t = 0, time.perf_counter()
    while True:
        for body in items:
            try:
                process(body, UID, fps)
            except Exception:
                pass
        n += len(items)
        elapsed = time.perf_counter() - t
        if elapsed > seconds:
            return n / elapsed


class LinearScan:
    """OONI's body matching: one substring search per fingerprint pattern."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns

    def find(self, text):
        pats = self.patterns
        if isinstance(text, bytes):
            return [i for i, p in enumerate(pats) if text.find(p.encode()) != -1]
        return [i for i, p in enumerate(pats) if text.find(p) != -1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each loop")
    ap.add_argument("--no-linear", action="store_true", help="skip the linear-scan comparison")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from workers.fingerprints import Fingerprints
    from workers.process import process

    fps = Fingerprints.from_json_files(SAMPLES / "fingerprints_dns.json",
                                       SAMPLES / "fingerprints_http.json")
    bodies = [p.read_bytes() for p in sorted(SAMPLES.glob("*.json"))
              if not p.name.startswith("fingerprints_")]
    wc = [b for b in bodies if b'"web_connectivity"' in b]
    print(f"web_connectivity samples ({len(wc)}): {rate(process, fps, wc, args.seconds):8.0f}"
          " msm/s per core   (OONI: 1,257)")
    print(f"all samples ({len(bodies)}):           {rate(process, fps, bodies, args.seconds):8.0f}"
          " msm/s per core   (OONI: 2,144)")
    if not args.no_linear:
        fps._body_search = LinearScan([fp.pattern for fp in fps._body])
        print(f"with OONI's linear body scan: web_connectivity "
              f"{rate(process, fps, wc, args.seconds):.0f}/s, all "
              f"{rate(process, fps, bodies, args.seconds):.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
