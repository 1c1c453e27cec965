"""`oonibackend run`: the whole backend on one machine, in the foreground.

Starts, as separate fresh processes (never forked after importing chdb):
1. the database owner (embedded driver only): the one process that opens the chdb directory
   and serves ClickHouse's HTTP interface on loopback;
2. the API (`oonibackend serve`), after the schema is migrated;
3. the fastpath, once it exists (`workers`), on --fastpath-port.
A child that dies is restarted with back-off, unless restarting cannot help: a child exiting
with a fatal code (`exitcodes.FATAL`: bad config, data directory in use, address in use), or
failing `MAX_START_FAILURES` times in a row within `START_WINDOW` seconds of its start, stops
the whole backend with a non-zero exit. Every listener's address is checked before any child
starts, so a taken port is one clear line within a second. SIGTERM/SIGINT stop the API first
(it finishes in-flight submissions), then the fastpath, then the database owner.

Wiring has one source: the config after the command line (`--port`, `--fastpath-port`) is
passed to every child, so the API delivers to the fastpath this instance started.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from oonibackend import exitcodes, storage
from oonibackend.config import Config

log = logging.getLogger(__name__)

# A child exiting this soon after its start has failed to start...
START_WINDOW = 10.0
# ...and this many such failures in a row stop the backend.
MAX_START_FAILURES = 3


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run", parents=parents,
        help="run the whole backend on embedded defaults (foreground)",
        description="Start the database owner (chdb), the API and the fastpath; logs to "
        "stderr; stops cleanly on SIGTERM.",
    )
    p.add_argument("--host", help="API listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="API listen port (default 8000)")
    p.add_argument("--fastpath-port", type=int, help="fastpath feeder port (default 8472)")
    p.set_defaults(func=run)
    o = sub.add_parser("db-owner", parents=parents,
                       help="embedded database owner process (started by run)",
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
        self.started = 0.0
        self.start_failures = 0

    def start(self) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        log.info("started", extra={"child": self.name, "child_pid": self.proc.pid})

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

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


def check_listen(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (e.g. "address already in use"), or None."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return str(e.strerror or e)
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's listeners
            try:
                s.bind(addr)
            except OSError as e:
                return str(e.strerror or e).lower()
    return None


def _listeners(cfg: Config) -> list[tuple[str, str, int]]:
    out = [("API", cfg.server.host, cfg.server.port)]
    if _fastpath_enabled(cfg):
        out.append(("fastpath feeder", cfg.fastpath.host, cfg.fastpath.port))
    return out


def _fastpath_enabled(cfg: Config) -> bool:
    return cfg.fastpath.enabled and importlib.util.find_spec("workers.service") is not None


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
    """Migrate the schema, then say once which reference datasets are empty."""
    from oonibackend import refdata
    from oonibackend.storage.migrate import migrate

    db = storage.connect(cfg)
    try:
        applied = await migrate(db)
        if applied:
            log.info("schema migrated", extra={"applied": [str(a) for a in applied]})
        empty = refdata.empty(await refdata.status(db, cfg))
        if empty:
            log.warning(refdata.advice(empty))
    finally:
        await db.close()


def run(args: argparse.Namespace, cfg: Config) -> int:
    os.makedirs(cfg.data_dir, exist_ok=True)
    for what, host, port in _listeners(cfg):
        if why := check_listen(host, port):
            log.error("cannot listen on %s:%s (%s): %s", host, port, what, why)
            return exitcodes.EXIT_CANNOT_LISTEN
    cfg.internal_key()  # generated once, before children race to create it
    py = [sys.executable, "-m", "oonibackend"]
    base = _base_args(args, cfg)
    # Every child gets the same wiring: the listeners' addresses after the command line.
    wiring = ["--fastpath-port", str(cfg.fastpath.port)]
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
    if _fastpath_enabled(cfg):
        fastpath = Child("fastpath", [*py, "fastpath", "serve", *base, *wiring])
        fastpath.start()
        children.append(fastpath)
    api = Child("api", [*py, "serve", *base, *wiring, "--host", cfg.server.host,
                        "--port", str(cfg.server.port)])
    api.start()
    children.append(api)
    log.info("backend running", extra={"api": f"http://{cfg.server.host}:{cfg.server.port}",
                                       "data_dir": cfg.data_dir})

    rc = 0
    while not stopping:
        time.sleep(0.2)
        for c in children:
            if stopping or c.alive():
                continue
            why = _restart_refused(c)
            if why:
                log.error("%s %s; stopping the backend", c.name, why)
                stopping = True
                rc = c.returncode if c.returncode in exitcodes.FATAL else 1
                break
            log.error("child exited, restarting", extra={"child": c.name, "rc": c.returncode,
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
    return rc


def _restart_refused(c: Child) -> str | None:
    """Why a child that exited must not be restarted, or None."""
    rc = c.returncode
    if rc in exitcodes.FATAL:
        return f"exited with code {rc} (see its error above), which a restart cannot fix"
    if time.monotonic() - c.started < START_WINDOW:
        c.start_failures += 1
    else:
        c.start_failures = 0
    if c.start_failures >= MAX_START_FAILURES:
        return (f"failed {c.start_failures} times in a row within {START_WINDOW:g} s of "
                f"starting (last exit code {rc})")
    return None
