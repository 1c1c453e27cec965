"""The storage layer: one interface to ClickHouse for the whole code base.

    db = storage.connect(cfg)        # picks the driver from cfg.database
    rows = await db.query("SELECT ... WHERE probe_cc = %(cc)s", {"cc": "IT"})
    await db.insert("fastpath", rows)
    await db.execute("CREATE TABLE ...")

Parameters use the pyformat style `%(name)s` and are rendered client-side into ClickHouse
literals by `sql.render`, identically for every driver (this also avoids chdb's thread-unsafe
`params=`). Query results are lists of dicts with Python types (int, float, str, datetime,
date, list, None), whatever the driver.

Drivers:
* `http`: ClickHouse's HTTP interface (a real server, or the embedded owner process).
* `native`: ClickHouse's native protocol via asynch (production).
* `chdb`: chdb in this process; only the owner process and offline CLI jobs use it, since
  only one process may open a chdb directory.

With `[database] cluster` set, `connect` wraps the driver so that every `execute` runs ON
CLUSTER with replicated engines (`storage.cluster`).
`connect(cfg, breaker=True)` (the API) puts the driver behind a circuit breaker
(`storage.breaker`): while the database is known down, reads fail at once instead of waiting
for `database.read_timeout`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oonibackend.config import Config

Row = dict[str, Any]
Params = Mapping[str, Any] | None
Settings = Mapping[str, Any] | None


class DatabaseError(Exception):
    """A query failed (syntax, unknown table, timeout, server error)."""


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached; the caller may retry later."""


class QueryLimitExceeded(DatabaseError):
    """The query hit max_execution_time or a rows/bytes-to-read limit."""


class Database(abc.ABC):
    """Async access to ClickHouse. Implementations are safe to share within one event loop."""

    @abc.abstractmethod
    async def query(self, sql: str, params: Params = None, settings: Settings = None) -> list[Row]:
        """Run a SELECT and return its rows as dicts."""

    async def query_with_stats(self, sql: str, params: Params = None, settings: Settings = None
                               ) -> tuple[list[Row], dict[str, Any]]:
        """Rows plus what the server reports: rows_read, bytes_read, elapsed (seconds)."""
        return await self.query(sql, params, settings), {}

    async def query_one(self, sql: str, params: Params = None, settings: Settings = None
                        ) -> Row | None:
        rows = await self.query(sql, params, settings)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = None, settings: Settings = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""

    @abc.abstractmethod
    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, settings: Settings = None) -> None:
        """Insert rows (dicts) in one batch. Columns default to the first row's keys."""

    def stream(self, sql: str, params: Params = None,
               fmt: str = "TabSeparatedWithNamesAndTypes", settings: Settings = None
               ) -> AsyncIterator[bytes]:
        """The raw output of a SELECT in ClickHouse format `fmt`, piece by piece: for backups
        and exports, which must neither parse rows nor hold a result whole in memory. A query
        failing midway raises from the iteration (what was yielded is then incomplete)."""
        raise DatabaseError(f"{type(self).__name__} cannot stream raw query output")

    async def insert_raw(self, table: str, fmt: str, chunks: AsyncIterable[bytes],
                         columns: Sequence[str] | None = None, settings: Settings = None
                         ) -> None:
        """Insert data already in ClickHouse format `fmt` (e.g. what `stream` produced), fed
        piece by piece; no data at all inserts nothing. An error of `chunks` itself is raised
        as is, but what was sent before may have been inserted: insert into a scratch table."""
        raise DatabaseError(f"{type(self).__name__} cannot insert raw formatted data")

    async def ping(self) -> bool:
        try:
            await self.query("SELECT 1 AS ok")
            return True
        except DatabaseError:
            return False

    async def probe(self, sql: str = "SELECT 1 AS ok", timeout: float | None = None
                    ) -> list[Row]:
        """A health probe: `sql` within `timeout` seconds (else TimeoutError). Behind a
        circuit breaker (`storage.breaker`) it is sent even while reads are refused, and its
        outcome opens or closes the breaker."""
        if timeout is None:
            return await self.query(sql)
        return await asyncio.wait_for(self.query(sql), timeout)

    async def close(self) -> None:  # noqa: B027 - optional for drivers without resources
        pass


def connect(cfg: Config, *, direct: bool = False, breaker: bool = False) -> Database:
    """The database client for `cfg`.

    Embedded: the HTTP driver to the owner process, or chdb in this process when `direct`
    (only for the owner itself and offline jobs holding the owner lock).
    `breaker`: behind a circuit breaker (`storage.breaker`): reads fail at once while the
    database is known down. The API uses it; jobs and the fastpath, which would rather wait,
    do not.
    """
    db = _driver(cfg, direct)
    if cfg.database.cluster:
        from oonibackend.storage.cluster import ClusterDatabase

        db = ClusterDatabase(db, cfg.database.cluster)
    if breaker and not direct:
        from oonibackend.storage.breaker import GuardedDatabase

        return GuardedDatabase(db, probe_timeout=cfg.database.probe_timeout)
    return db


def _driver(cfg: Config, direct: bool) -> Database:
    d = cfg.database
    if d.driver == "native":
        from oonibackend.storage.native import NativeDatabase

        return NativeDatabase(cfg)
    if d.driver == "embedded" and direct:
        from oonibackend.storage.chdb_local import ChdbDatabase

        return ChdbDatabase(str(cfg.path(d.path)), database=d.database,
                            max_execution_time=d.max_execution_time)
    from oonibackend.storage.http import HTTPDatabase

    return HTTPDatabase(cfg)
