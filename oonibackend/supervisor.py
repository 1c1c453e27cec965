"""`oonibackend run`: the whole backend on one machine, in the foreground.

Starts, as separate fresh processes (never forked after importing chdb):
1. the database owner (embedded driver only): the one process that opens the chdb directory
   and serves ClickHouse's HTTP interface on loopback;
2. the API (`oonibackend serve`), after the schema is migrated;
3. the fastpath, once it exists (`workers`), on --fastpath-port.
A child that dies is restarted with back-off. SIGTERM/SIGINT stop the API first (it finishes
in-flight submissions), then the fastpath, then the database owner.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time

from oonibackend import storage
from oonibackend.config import Config

log = logging.getLogger("oonibackend.run")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole backend on embedded defaults (foreground)",
        description="Start the database owner (chdb), the API and the fastpath; logs to "
        "stderr; stops cleanly on SIGTERM.",
    )
    p.add_argument("--host", help="API listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="API listen port (default 8000)")
    p.add_argument("--fastpath-port", type=int, help="fastpath feeder port (default 8472)")
    p.set_defaults(func=run)
    o = sub.add_parser("db-owner", help="embedded database owner process (started by run)",
                       description="Open the chdb directory and serve ClickHouse's HTTP "
                       "interface on loopback. `run` starts it; use it alone for debugging.")
    o.set_defaults(func=_db_owner)


def _db_owner(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend.storage import owner

    return owner.main(cfg)


class Child:
    """One supervised process."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.backoff = 0.5

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        log.info("started", extra={"child": self.name, "child_pid": self.proc.pid})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time, killing", extra={"child": self.name})
            self.proc.kill()
            self.proc.wait()
        log.info("stopped", extra={"child": self.name, "rc": self.proc.returncode})


def _base_args(args: argparse.Namespace, cfg: Config) -> list[str]:
    out = ["--data-dir", cfg.data_dir]
    if getattr(args, "config", None):
        out = ["--config", args.config, *out]
    return out


async def _wait_for_db(cfg: Config, owner: Child, timeout: float = 60.0) -> None:
    db = storage.connect(cfg)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await db.ping():
                return
            if not owner.alive():
                raise RuntimeError("database owner exited during start-up")
            await asyncio.sleep(0.1)
        raise RuntimeError("database owner did not answer in time")
    finally:
        await db.close()


async def _migrate(cfg: Config) -> None:
    from oonibackend.storage.migrate import migrate

    db = storage.connect(cfg)
    try:
        applied = await migrate(db)
        if applied:
            log.info("schema migrated", extra={"applied": [str(a) for a in applied]})
    finally:
        await db.close()


def run(args: argparse.Namespace, cfg: Config) -> int:
    os.makedirs(cfg.data_dir, exist_ok=True)
    py = [sys.executable, "-m", "oonibackend"]
    base = _base_args(args, cfg)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    children: list[Child] = []
    owner = None
    if cfg.database.driver == "embedded":
        owner = Child("db-owner", [*py, "db-owner", *base])
        owner.start()
        children.append(owner)
    try:
        if owner is not None:
            asyncio.run(_wait_for_db(cfg, owner))
        asyncio.run(_migrate(cfg))
    except Exception as e:
        log.error("start-up failed: %s", e)
        for c in reversed(children):
            c.stop()
        return 1

    fastpath = None
    if cfg.fastpath.enabled and importlib.util.find_spec("workers.service") is not None:
        fastpath = Child("fastpath", [*py, "fastpath", "serve", *base,
                                      "--fastpath-port", str(cfg.fastpath.port)])
        fastpath.start()
        children.append(fastpath)
    api = Child("api", [*py, "serve", *base, "--host", cfg.server.host,
                        "--port", str(cfg.server.port)])
    api.start()
    children.append(api)
    log.info("backend running", extra={"api": f"http://{cfg.server.host}:{cfg.server.port}",
                                       "data_dir": cfg.data_dir})

    while not stopping:
        time.sleep(0.2)
        for c in children:
            if stopping or c.alive():
                continue
            rc = c.proc.returncode if c.proc else None
            log.error("child exited, restarting", extra={"child": c.name, "rc": rc,
                                                          "in_seconds": c.backoff})
            time.sleep(c.backoff)
            c.backoff = min(c.backoff * 2, 10.0)
            c.restarts += 1
            if not stopping:
                c.start()

    log.info("stopping")
    # Stop order: API (flushes the spool), fastpath (commits its batch), database owner.
    for c in (api, fastpath, owner):
        if c is not None:
            c.stop()
    return 0
