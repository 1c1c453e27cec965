"""ClickHouse over the native protocol (asynch), the production driver.

asynch connections do not survive errors well (stack notes, verified on 18.16): after a
network error a Connection stays broken, and after a syntax error the next query on it fails
with "expected Pong, got Exception". So this driver keeps its own small pool and throws a
connection away after *any* failed query; the next query opens a fresh one, which also makes
the driver recover by itself once a restarted server is back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from asynch import Connection
from asynch import errors as aerrors

from oonibackend.storage import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Params,
    Row,
    Settings,
    sql,
    types,
)

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger(__name__)
# asynch logs a WARNING per failed connect attempt; our exceptions already report it (its
# logger, by asynch's module name).
logging.getLogger("asynch.proto.connection").setLevel(logging.ERROR)

_NETWORK_ERRORS = (
    aerrors.NetworkError, aerrors.SocketTimeoutError, aerrors.UnexpectedPacketFromServerError,
    aerrors.UnknownPacketFromServerError, aerrors.AsynchPoolError, ConnectionError, OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError,
)


def connection_kwargs(cfg: Config) -> dict[str, Any]:
    """asynch Connection arguments from `database.url` (clickhouse[s]://user:pass@host:port/db),
    falling back to database.user/password/database for parts the URL leaves out."""
    d = cfg.database
    u = urlsplit(d.url or "clickhouse://127.0.0.1:9000")
    if u.scheme not in ("clickhouse", "clickhouses", "tcp"):
        raise ValueError(f"database.url must be clickhouse://..., not {d.url!r}")
    secure = u.scheme == "clickhouses"
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or (9440 if secure else 9000),
        "user": unquote(u.username) if u.username else d.user,
        "password": unquote(u.password) if u.password else d.password,
        "database": u.path.strip("/") or d.database,
        "secure": secure,
        "connect_timeout": d.connect_timeout,
        "send_receive_timeout": d.read_timeout,
        "sync_request_timeout": d.connect_timeout,
    }


def map_error(e: BaseException) -> DatabaseError:
    if isinstance(e, aerrors.ServerException):
        return types.classify(f"Code: {e.code}. {e.message}", e.code)
    if isinstance(e, _NETWORK_ERRORS):
        return DatabaseUnavailable(f"ClickHouse unreachable: {e!r}"[:500])
    return DatabaseError(f"{type(e).__name__}: {e}"[:2000])


class NativeDatabase(Database):
    def __init__(self, cfg: Config) -> None:
        self.kwargs = connection_kwargs(cfg)
        self.max_execution_time = cfg.database.max_execution_time
        self.pool_size = cfg.database.pool_size
        self._idle: list[Connection] = []
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_stats: dict[str, Any] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            # Connections and semaphores belong to one loop (tests use several).
            self._loop, self._sem, self._idle = loop, asyncio.Semaphore(self.pool_size), []
        return self._sem

    async def _run(self, statement: str, args: Any, settings: Mapping[str, Any]
                   ) -> tuple[list[Row], dict[str, Any]]:
        async with self._semaphore():
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = Connection(**self.kwargs)
                    await conn.connect()
                async with conn.cursor() as cur:
                    if settings:
                        cur.set_settings(dict(settings))
                    await cur.execute(statement, args)
                    data = await cur.fetchall() if cur.description else []
                    desc = cur.description or []
                info = conn.last_query
            except BaseException as e:
                if conn is not None:
                    await _discard(conn)
                if isinstance(e, Exception):
                    raise map_error(e) from e
                raise
            self._idle.append(conn)
        names = [c[0] for c in desc]
        rows = types.convert_rows(names, [c[1] for c in desc], data) if names else []
        stats = {"rows_read": 0, "bytes_read": 0, "elapsed": 0.0}
        if info is not None:
            progress = getattr(info, "progress", None)
            stats = {"rows_read": int(getattr(progress, "rows", 0) or 0),
                     "bytes_read": int(getattr(progress, "bytes", 0) or 0),
                     "elapsed": float(getattr(info, "elapsed", 0.0) or 0.0)}
        return rows, stats

    async def query_with_stats(self, statement: str, params: Params = None,
                               settings: Settings = None) -> tuple[list[Row], dict[str, Any]]:
        s = dict(settings or {})
        if self.max_execution_time:
            s.setdefault("max_execution_time", self.max_execution_time)
        # args=None: asynch must not %-substitute our already rendered SQL.
        rows, stats = await self._run(sql.render(statement, params), None, s)
        self.last_stats = stats
        return rows, stats

    async def query(self, statement: str, params: Params = None, settings: Settings = None
                    ) -> list[Row]:
        rows, _ = await self.query_with_stats(statement, params, settings)
        return rows

    async def execute(self, statement: str, params: Params = None, settings: Settings = None
                      ) -> None:
        if _inline_insert(statement):
            # The native protocol sends INSERT data as blocks: inline data would be ignored
            # (or hang asynch until the read timeout), so refuse it clearly.
            raise DatabaseError("INSERT with inline data (VALUES/FORMAT) is not supported by "
                                "the native driver; use insert() or INSERT ... SELECT")
        await self._run(sql.render(statement, params), None, dict(settings or {}))

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, settings: Settings = None) -> None:
        if not rows:
            return
        cols = list(columns or rows[0].keys())
        statement = (f"INSERT INTO {sql.ident(table)} "
                     f"({', '.join(sql.ident(c) for c in cols)}) VALUES")
        data = [tuple(_insert_value(r.get(c)) for c in cols) for r in rows]
        await self._run(statement, data, dict(settings or {}))

    def stream(self, statement: str, params: Params = None,
               fmt: str = "TabSeparatedWithNamesAndTypes", settings: Settings = None
               ) -> AsyncIterator[bytes]:
        """Not available: asynch decodes the native protocol's blocks into Python values and
        has no way to hand over a server-formatted result (backups want the http driver)."""
        raise DatabaseError("raw streaming (backup/export) is not supported by the native "
                            "driver; point these jobs at the server's HTTP interface "
                            "(database.driver = \"http\")")

    async def insert_raw(self, table: str, fmt: str, chunks: AsyncIterable[bytes],
                         columns: Sequence[str] | None = None, settings: Settings = None
                         ) -> None:
        """Not available: the native protocol sends INSERT data as typed blocks only."""
        raise DatabaseError("raw inserts (restore) are not supported by the native driver; "
                            "point restore at the server's HTTP interface "
                            "(database.driver = \"http\")")

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await _discard(conn)


def _inline_insert(statement: str) -> bool:
    return sql.statement_kind(statement) == "insert"


def _insert_value(v: Any) -> Any:
    if v.__class__ is bool:
        return int(v)
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return types.naive_utc(v)
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    return v


async def _discard(conn: Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2)
    except Exception:  # the connection is being thrown away anyway
        pass
