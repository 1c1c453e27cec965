#!/usr/bin/env python3
"""Load benchmark of the probe-facing routes against the real backend.

Starts `oonibackend run` on embedded defaults in a temporary directory (quotas on, with a
budget large enough for the run), seeds the CitizenLab list and URL priorities from the
test fixtures (tests/data/fixtures), starts a bare aiohttp "hello" server as the baseline (it
also acts as the fastpath sink), then drives each scenario with wrk (Debian package `wrk`):

    submit        POST /report/<report_id> with real measurements from tests/data/samples
    check-in      POST /api/v1/check-in as the real probe sends it
    test-helpers  GET /api/v1/test-helpers
    collectors    GET /api/v1/collectors
    bare-aiohttp  GET / on the bare handler (same machine, same wrk settings)

Prints requests/s, p50 and p99 latency per scenario and the peak RSS (VmHWM) of every process.
Usage: python bench/run.py [--duration 10] [--connections 50] [--threads 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SAMPLES = DATA / "samples"
FIXTURES = DATA / "fixtures"

CHECKIN_BODY = {
    "charging": True, "on_wifi": True, "platform": "linux", "probe_asn": "AS12874",
    "probe_cc": "IT", "run_type": "timed", "software_name": "ooniprobe-cli",
    "software_version": "3.20.0", "web_connectivity": {"category_codes": []},
}

WRK_LUA = """
local bodies = {}
local path = "/"
init = function(args)
  path = args[1]
  for i = 2, #args do
    local f = io.open(args[i], "rb")
    bodies[#bodies + 1] = f:read("*all")
    f:close()
  end
end
request = function()
  if #bodies == 0 then
    return wrk.format("GET", path)
  end
  local b = bodies[math.random(#bodies)]
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, b)
end
"""

BARE_SERVER = """
import sys, uvloop
from aiohttp import web
async def hello(request):
    if request.can_read_body:
        await request.read()
    return web.json_response({"ok": True})
app = web.Application(client_max_size=16 * 1024 * 1024)
app.router.add_route("*", "/{tail:.*}", hello)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def percentile(values: list[float], p: float) -> float:
    """The `p` quantile (0 < p < 1) of `values`, nan when there are none."""
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] if s else float("nan")


def start_instance(tmp: Path, name: str, toml: str) -> tuple[subprocess.Popen, Path]:
    """`oonibackend run` on the config `toml` (written to `tmp/<name>.toml`), its data under
    `tmp/var`, in a process group of its own (stop it with os.killpg)."""
    conf = tmp / f"{name}.toml"
    conf.write_text(toml)
    proc = subprocess.Popen(
        [sys.executable, "-m", "oonibackend", "run", "--config", str(conf),
         "--data-dir", str(tmp / "var")], cwd=ROOT, start_new_session=True)
    return proc, conf


def post_json(url: str, obj: object) -> dict:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def peak_rss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) if m else 0


def process_tree(pid: int) -> dict[int, str]:
    """pid -> command summary for a process and its descendants."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    args: dict[int, str] = {}
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        p, pp = int(parts[0]), int(parts[1])
        children.setdefault(pp, []).append((p, parts[2]))
        args[p] = parts[2]
    result = {pid: args.get(pid, "")}
    stack = [pid]
    while stack:
        for c, a in children.get(stack.pop(), []):
            result[c] = a
            stack.append(c)
    return result


def label(cmd: str) -> str:
    for word in ("db-owner", "serve", "fastpath", "run"):
        if f" {word}" in cmd:
            return {"run": "supervisor", "serve": "api"}.get(word, word)
    return cmd[:40]


def file_create_us(directory: Path, n: int = 2000) -> float:
    """Median cost of creating one 7 KB file here: the spool's floor per measurement, and on
    a shared VM the figure that varies most from run to run (seen from 25 to 900 us)."""
    d = Path(tempfile.mkdtemp(dir=directory))
    body = os.urandom(7000)
    times = []
    try:
        for i in range(n):
            t = time.perf_counter()
            fd = os.open(d / f"{i}.post", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, body)
            os.close(fd)
            times.append(time.perf_counter() - t)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return sorted(times)[n // 2] * 1e6


def parse_wrk(text: str) -> dict[str, float]:
    def dur(v: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s|m)", v)
        if not m:
            return float("nan")
        n, unit = float(m.group(1)), m.group(2)
        return n * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    res: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    res["rps"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        res[key] = dur(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    res["non2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", text)
    res["requests"] = float(m.group(1)) if m else 0.0
    return res


def run_wrk(url: str, path: str, bodies: list[Path], args: argparse.Namespace,
            script: Path) -> dict[str, float]:
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
           "--latency", "-s", str(script), url, "--", path, *map(str, bodies)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def seed(conf: Path, data_dir: Path) -> None:
    """Load the reference CitizenLab rows and URL priorities into the embedded database."""
    sys.path.insert(0, str(ROOT))
    import asyncio

    from oonibackend import config, storage

    async def go() -> None:
        cfg = config.load(str(conf), data_dir=str(data_dir))
        db = storage.connect(cfg)  # the running instance's database owner
        rows = []
        for item in json.loads((FIXTURES / "citizenlab.json").read_text()):
            host = re.sub(r"^https?://([^/:]+).*$", r"\1", item["url"])
            rows.append({"domain": host, "url": item["url"], "cc": "ZZ",
                         "category_code": item["category_code"]})
        for item in json.loads((FIXTURES / "citizenlab_counters_us.json").read_text()):
            if item["cc"] != "ZZ":
                rows.append({"domain": item["domain"], "url": item["url"], "cc": item["cc"],
                             "category_code": item["category_code"]})
        await db.insert("citizenlab", rows)
        prio = [{"sign": 1, **r} for r in json.loads((FIXTURES / "url_priorities_us.json")
                                                     .read_text())]
        await db.insert("url_priorities", prio)
        await db.close()

    asyncio.run(go())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1,
                    help="wrk threads (one saturates these rates and leaves a core to the server)")
    ap.add_argument("--scenarios", default="bare-aiohttp,test-helpers,collectors,check-in,submit")
    ap.add_argument("--json", help="write the results as JSON to this file")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="oonibench-"))
    api_port, bare_port = free_port(), free_port()
    (tmp / "bench.toml").write_text(f"""
[server]
port = {api_port}
[fastpath]
urls = ["http://127.0.0.1:{bare_port}/"]
enabled = false
[quotas]
whitelist = []
daily = 100000000
weekly = 100000000
monthly = 100000000
[probe]
test_list_refresh = 2.0
[logging]
level = "WARNING"
""")
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)])
    backend = subprocess.Popen(
        [sys.executable, "-m", "oonibackend", "run", "--config", str(tmp / "bench.toml"),
         "--data-dir", str(tmp / "var")], cwd=ROOT, start_new_session=True)
    results: dict[str, dict[str, float]] = {}
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_http(base + "/health")
        wait_http(f"http://127.0.0.1:{bare_port}/")
        seed(tmp / "bench.toml", tmp / "var")
        time.sleep(3)  # let the check-in snapshot pick the seeded lists up
        script = tmp / "bench.lua"
        script.write_text(WRK_LUA)
        rid = post_json(base + "/report", {
            "data_format_version": "0.2.0", "format": "json", "probe_asn": "AS12874",
            "probe_cc": "IT", "software_name": "ooniprobe-cli", "software_version": "3.20.0",
            "test_name": "web_connectivity", "test_start_time": "2024-01-01 00:00:00",
            "test_version": "0.4.3"})["report_id"]
        bodies = []
        for i, f in enumerate(sorted(SAMPLES.glob("*.json"))):
            if f.name.startswith("fingerprints"):
                continue
            msm = json.loads(f.read_text())
            p = tmp / f"body{i}.json"
            p.write_text(json.dumps({"format": "json", "content": msm}))
            bodies.append(p)
        checkin = tmp / "checkin.json"
        checkin.write_text(json.dumps(CHECKIN_BODY))
        scenarios = {
            "bare-aiohttp": (f"http://127.0.0.1:{bare_port}", "/", []),
            "test-helpers": (base, "/api/v1/test-helpers", []),
            "collectors": (base, "/api/v1/collectors", []),
            "check-in": (base, "/api/v1/check-in", [checkin]),
            "submit": (base, f"/report/{rid}", bodies),
        }
        fc = file_create_us(tmp)
        print(f"== file creation on this disk now: {fc:.0f} us per 7 KB file (median)")
        results["file_create_us"] = {"median": fc}
        for name in args.scenarios.split(","):
            url, path, b = scenarios[name]
            print(f"== {name}: {args.duration}s, {args.connections} connections", flush=True)
            results[name] = r = run_wrk(url, path, b, args, script)
            print(f"   {r['rps']:9.0f} req/s   p50 {r['p50_ms']:7.2f} ms   "
                  f"p99 {r['p99_ms']:7.2f} ms   non-2xx {r['non2xx']:.0f}", flush=True)
        if "submit" in results:
            spooled = sum(1 for _ in (tmp / "var" / "spool" / "incoming").rglob("*.post"))
            print(f"   spooled .post files: {spooled}")
            results["submit"]["spooled"] = spooled
        print("== peak memory (VmHWM)")
        mem = {}
        for pid, cmd in sorted(process_tree(backend.pid).items()):
            kb = peak_rss_kb(pid)
            mem[label(cmd)] = kb / 1024
            print(f"   {label(cmd):12s} pid {pid:7d}  {kb / 1024:8.1f} MiB")
        results["peak_rss_mib"] = mem  # type: ignore[assignment]
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        os.killpg(backend.pid, signal.SIGTERM)
        backend.wait(60)
        bare.terminate()
        bare.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
