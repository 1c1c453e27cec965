"""The embedded database owner: the only process that opens the chdb directory.

chdb allows one process per data directory, while the API, fastpath and CLI jobs are
separate processes. The owner holds an exclusive lock on `<dbdir>.lock`, opens chdb and
serves the subset of ClickHouse's HTTP interface that `HTTPDatabase` uses. Everyone else
therefore talks to embedded and real ClickHouse the same way.

The interface is a Unix socket inside the data directory (`database.owner_socket`): no other
instance can collide with it, jobs find it from `--data-dir` alone, and no browser page can
reach it. Only the instance may use it: the socket's directory is 0700 and the socket 0600
(its user only), and every query must carry the instance's key (`Config.db_password`, the
generated internal key unless `database.password` is set), compared in constant time. An
unauthenticated request gets ClickHouse's own AUTHENTICATION_FAILED, and no SQL reaches chdb,
so table functions such as file() or url() stay out of reach of strangers.

    python -m oonibackend.storage.owner [--config FILE] [--data-dir DIR] [--socket PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from oonibackend.exitcodes import EXIT_CANNOT_LISTEN, EXIT_LOCKED
from oonibackend.fileutil import release_flock as release_lock  # noqa: F401 (API)
from oonibackend.fileutil import try_flock
from oonibackend.storage import DatabaseError, DatabaseUnavailable, sql

if TYPE_CHECKING:
    from oonibackend.config import Config
    from oonibackend.storage.chdb_local import ChdbDatabase

# The module name spelled out: `python -m oonibackend.storage.owner` runs this as __main__.
log = logging.getLogger("oonibackend.storage.owner")

WORKERS = 4
MAX_BODY = 1024 * 1024 * 1024
# HTTP-interface parameters that are not query settings.
_RESERVED = {
    "query", "database", "default_format", "user", "password", "quota_key", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress",
    "buffer_size", "wait_end_of_query", "enable_http_compression",
}
_INSERT_FORMAT = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*;?\s*$", re.I | re.S)
_STATUS = {516: 403, 62: 400, 60: 404, 81: 404}


# ---- the lock ----

def lock_path(cfg: Config) -> Path:
    return Path(str(cfg.path(cfg.database.path)) + ".lock")


def try_lock(cfg: Config) -> int | None:
    """Take the owner lock without blocking: a file descriptor, or None if it is held.

    CLI jobs use this too: holding the lock means no owner runs and chdb may be opened
    in-process. Release with `release_lock`.
    """
    p = lock_path(cfg)
    p.parent.mkdir(parents=True, exist_ok=True)
    return try_flock(p, write_pid=True)



def lock_holder(cfg: Config) -> str:
    """The pid written by the lock holder (for error messages), or '?'."""
    try:
        return lock_path(cfg).read_text().strip() or "?"
    except OSError:
        return "?"


# ---- the HTTP interface ----

def _error(code: int, text: str) -> web.Response:
    body = text if text.startswith("Code:") else f"Code: {code}. DB::Exception: {text}"
    return web.Response(status=_STATUS.get(code, 500), text=body.rstrip() + "\n",
                        headers={"X-ClickHouse-Exception-Code": str(code)})


def _content_type(fmt: str) -> str:
    return "application/json" if fmt.startswith("JSON") else "text/plain"


class OwnerHandler:
    """Serves `/`, `/ping` and queries with ClickHouse HTTP semantics."""

    def __init__(self, db: ChdbDatabase, password: str, database: str,
                 setting_names: set[str]) -> None:
        self.db = db
        self.password = password
        self.database = database
        self.setting_names = setting_names - _RESERVED

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("X-ClickHouse-Key") or request.query.get("password") or ""
        auth = request.headers.get("Authorization", "")
        if not given and auth.lower().startswith("basic "):
            try:
                given = base64.b64decode(auth[6:]).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = ""
        return hmac.compare_digest(given.encode(), self.password.encode())

    async def ping(self, request: web.Request) -> web.Response:
        """Liveness without credentials (as ClickHouse's /ping): it runs no SQL."""
        return web.Response(text="Ok.\n")

    async def handle(self, request: web.Request) -> web.Response:
        q = request.query
        query = q.get("query", "")
        if not query and request.method == "GET":
            return web.Response(text="Ok.\n")  # liveness, as ClickHouse: no SQL, no key
        if not self._authorized(request):
            return _error(516, "Code: 516. DB::Exception: Authentication failed: "
                               "password is incorrect. (AUTHENTICATION_FAILED)")
        body = await request.read() if request.method == "POST" else b""
        if not query and not body:
            return _error(62, "Empty query. (SYNTAX_ERROR)")
        database = q.get("database")
        if database and database != self.database:
            return _error(81, f"Database {database} does not exist; this embedded server "
                              f"serves only {self.database!r}. (UNKNOWN_DATABASE)")
        settings = {k: v for k, v in q.items() if k in self.setting_names}
        fmt = q.get("default_format") or "TabSeparated"
        try:
            m = _INSERT_FORMAT.match(query) if query and body else None
            if m:
                await self.db.run(self.db.raw_insert, m.group(1), m.group(2), body)
                return web.Response(text="")
            text = query + ("\n" if query and body else "") + body.decode("utf-8", "replace")
            out = await self.db.run(self.db.raw, sql.append_settings(text, settings), fmt)
        except DatabaseUnavailable as e:  # no "Code:": clients map it to unavailable
            return web.Response(status=503, text=f"{e}\n")
        except DatabaseError as e:
            code = getattr(e, "code", None) or 1000
            log.info("query failed", extra={"code": code, "error": str(e)[:300]})
            return _error(code, getattr(e, "server_text", None) or str(e))
        return web.Response(body=out, content_type=_content_type(fmt),
                            headers={"X-ClickHouse-Format": fmt})


def make_app(db: ChdbDatabase, password: str, database: str,
             setting_names: set[str]) -> web.Application:
    if not password:
        raise ValueError("the database owner needs a key")
    h = OwnerHandler(db, password, database, setting_names)
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/ping", h.ping)
    app.router.add_route("GET", "/", h.handle)
    app.router.add_route("POST", "/", h.handle)
    return app


def _setting_names(db: ChdbDatabase) -> set[str]:
    out = db.raw("SELECT name FROM system.settings", "TabSeparated")
    return {line for line in out.decode().splitlines() if line}


async def serve(cfg: Config, stop: asyncio.Event | None = None) -> int:
    """Own the database until SIGTERM/SIGINT (or `stop` is set). Returns an exit code."""
    from oonibackend.storage.chdb_local import ChdbDatabase

    d = cfg.database
    dbdir = cfg.path(d.path)
    fd = try_lock(cfg)
    if fd is None:
        log.error("database directory %s is in use by another owner (pid %s)",
                  dbdir, lock_holder(cfg))
        return EXIT_LOCKED
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    db = ChdbDatabase(str(dbdir), workers=WORKERS, database=d.database)
    runner: web.AppRunner | None = None
    try:
        try:
            await db.run(db.open)
            names = await db.run(_setting_names, db)
        except DatabaseError as e:
            log.error("cannot open database %s: %s", dbdir, e)
            return 1
        runner = web.AppRunner(make_app(db, cfg.db_password(), d.database, names),
                               access_log=None)
        await runner.setup()
        sock = cfg.owner_socket()
        try:
            await listen_unix(runner, sock)
        except OSError as e:
            log.error("database owner cannot listen on %s: %s", sock, e.strerror or e)
            return EXIT_CANNOT_LISTEN
        log.info("database owner listening on %s (dir %s)", sock, dbdir)
        await stop.wait()
        log.info("database owner stopping")
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        await db.close()
        release_lock(fd)


async def listen_unix(runner: web.AppRunner, sock: Path) -> None:
    """Serve `runner` on the Unix socket `sock`, private to this user. The caller holds the
    owner lock, so a socket file left by a crashed owner is stale and is replaced."""
    sock.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(sock.parent, 0o700)
    try:
        sock.unlink()
    except FileNotFoundError:
        pass
    old = os.umask(0o177)  # the socket is created 0600: no window where others may connect
    try:
        await web.UnixSite(runner, str(sock)).start()
    finally:
        os.umask(old)


def main(cfg: Config) -> int:
    """Run the owner in this (fresh) process until it is signalled."""
    try:
        import uvloop

        return uvloop.run(serve(cfg))
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        return asyncio.run(serve(cfg))


def cli(argv: list[str] | None = None) -> int:
    from oonibackend import config, logs

    ap = argparse.ArgumentParser(prog="python -m oonibackend.storage.owner",
                                 description="Serve the embedded chdb database over HTTP.")
    ap.add_argument("--config", help="TOML config file")
    ap.add_argument("--data-dir", help="data directory (overrides data_dir)")
    ap.add_argument("--socket", help="Unix socket to listen on (database.owner_socket)")
    ap.add_argument("--path", help="chdb directory (database.path)")
    a = ap.parse_args(argv)
    overrides: dict[str, Any] = {
        "data_dir": a.data_dir, "database.owner_socket": a.socket, "database.path": a.path,
    }
    try:
        cfg = config.load(a.config, **overrides)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.logging.level, cfg.logging.format)
    return main(cfg)


if __name__ == "__main__":
    sys.exit(cli())
