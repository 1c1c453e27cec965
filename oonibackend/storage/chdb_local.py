"""chdb (embedded ClickHouse) in this process.

Only one process may open a chdb directory, so this driver is used by the owner process
(which serves it to everyone else over HTTP) and by offline CLI jobs holding the owner lock.
chdb calls block, so they run in a dedicated thread pool and never on the event loop. SQL is
always rendered client-side: chdb's `params=` is not thread-safe (see stack notes).
chdb itself is imported lazily: a process that forks after importing it hangs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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

log = logging.getLogger(__name__)
T = TypeVar("T")


def ensure_utc() -> None:
    """chdb renders DateTime in the process time zone; the project works in UTC."""
    if os.environ.get("TZ") not in ("UTC", "Etc/UTC", ":UTC"):
        os.environ["TZ"] = "UTC"
        if hasattr(time, "tzset"):
            time.tzset()


def _chdb_error(e: Exception) -> DatabaseError:
    text = str(e)
    if "Cannot lock file" in text or "already running" in text:
        return DatabaseUnavailable(types.clean_message(text))
    return types.classify(text)


class ChdbDatabase(Database):
    """chdb on `path`, driven through a thread pool with one chdb Session per thread.

    Measured on chdb 26.9: queries on one Session run one at a time (the engine queues
    them), while Sessions on the same path run in parallel; and a query that fails after
    its output started (a timeout in JSONCompact, say) leaves that output behind to be
    prepended to the *next* result of the same Session. So each worker thread borrows its
    own Session, and a Session is drained with a throw-away query after any failure.
    """

    def __init__(self, path: str, *, workers: int = 1, database: str = "default",
                 max_execution_time: int | None = None) -> None:
        self.path = path
        self.workers = max(1, workers)
        self.database = sql.ident(database)
        self.max_execution_time = max_execution_time
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="chdb")
        self._cond = threading.Condition()
        self._free: list[Any] = []
        self._sessions: list[Any] = []
        self._closed = False

    # ---- sync API (runs in the executor threads) ----

    def _new_session(self) -> Any:
        ensure_utc()
        os.makedirs(self.path, exist_ok=True)
        from chdb import session as chdb_session  # lazy: see module docstring

        try:
            s = chdb_session.Session(self.path)
            if self.database != "default":
                s.query(f"CREATE DATABASE IF NOT EXISTS {self.database}", "CSV")
                s.query(f"USE {self.database}", "CSV")
        except Exception as e:
            raise _chdb_error(e) from e
        if not self._sessions:
            log.info("chdb opened", extra={"path": self.path})
        return s

    def _acquire(self) -> Any:
        with self._cond:
            while True:
                if self._closed:
                    raise DatabaseUnavailable("database is closed")
                if self._free:
                    return self._free.pop()
                if len(self._sessions) < self.workers:
                    s = self._new_session()
                    self._sessions.append(s)
                    return s
                self._cond.wait()

    def _release(self, s: Any, failed: bool) -> None:
        if failed:
            try:  # consume output a failed query left behind (see class docstring)
                s.query("SELECT 1", "CSV")
            except Exception:
                log.warning("chdb session drain failed", exc_info=True)
        with self._cond:
            self._free.append(s)
            self._cond.notify()

    def open(self) -> None:
        """Open the first session now; raises DatabaseUnavailable if the dir is locked."""
        self._release(self._acquire(), False)

    def raw(self, statement: str, fmt: str = "JSONCompact") -> bytes:
        """Run one statement and return chdb's output bytes in `fmt`."""
        s = self._acquire()
        failed = True
        try:
            res = s.query(statement, fmt)
            out = res.bytes() if res is not None else b""
            failed = False
            return out
        except Exception as e:
            raise _chdb_error(e) from e
        finally:
            self._release(s, failed)

    def raw_insert(self, prefix: str, fmt: str, data: bytes) -> int:
        """Stream `data` in `fmt` into `prefix` ("INSERT INTO t (cols)"); returns rows written."""
        s = self._acquire()
        failed = True
        try:
            ins = s.send_insert(prefix, fmt)
            try:
                ins.append(data)
                res = ins.finish()
            except BaseException:
                try:
                    ins.cancel()
                except Exception:  # already failing; keep the first error
                    pass
                raise
            failed = False
            return int(getattr(res, "rows_written", 0) or 0)
        except Exception as e:
            raise _chdb_error(e) from e
        finally:
            self._release(s, failed)

    def close_sync(self) -> None:
        """Wait for running calls, then close every session (releases the directory)."""
        self.executor.shutdown(wait=True)
        with self._cond:
            self._closed = True
            sessions, self._sessions, self._free = self._sessions, [], []
            self._cond.notify_all()
        for s in sessions:
            try:
                s.close()
            except Exception:
                log.warning("chdb session close failed", exc_info=True)
        if sessions:
            log.info("chdb closed", extra={"path": self.path})

    # ---- async API ----

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _read_settings(self, settings: Settings) -> dict[str, Any]:
        s = dict(settings or {})
        if self.max_execution_time and "max_execution_time" not in s:
            s["max_execution_time"] = self.max_execution_time
        return s

    async def query_with_stats(self, statement: str, params: Params = None,
                               settings: Settings = None) -> tuple[list[Row], dict[str, Any]]:
        text = sql.append_settings(sql.render(statement, params), self._read_settings(settings))
        body = await self.run(self.raw, text, "JSONCompact")
        if not body.strip():
            return [], {"rows_read": 0, "bytes_read": 0, "elapsed": 0.0}
        try:
            return types.parse_json_compact(body)
        except ValueError as e:
            raise DatabaseError(f"unparsable chdb output: {body[:200]!r}") from e

    async def query(self, statement: str, params: Params = None, settings: Settings = None
                    ) -> list[Row]:
        rows, _ = await self.query_with_stats(statement, params, settings)
        return rows

    async def execute(self, statement: str, params: Params = None, settings: Settings = None
                      ) -> None:
        text = sql.append_settings(sql.render(statement, params), settings)
        await self.run(self.raw, text, "CSV")

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, settings: Settings = None) -> None:
        if not rows:
            return
        cols = list(columns or rows[0].keys())
        prefix = sql.insert_prefix(table, cols, settings)
        # One JSON array: the fastest path into chdb (stack notes), accepted by JSONEachRow.
        data = types.dumps([types.prepare_row(r, cols) for r in rows])
        await self.run(self.raw_insert, prefix, "JSONEachRow", data)

    async def stream(self, statement: str, params: Params = None,
                     fmt: str = "TabSeparatedWithNamesAndTypes", settings: Settings = None
                     ) -> AsyncIterator[bytes]:
        """chdb's streaming query: one Session is held until the iteration ends, so do not
        run other queries on a single-worker instance meanwhile.

        chdb formats every piece on its own, header included (measured on 26.9): the
        header lines of a *WithNames* format are kept from the first piece only."""
        text = sql.append_settings(sql.render(statement, params), self._read_settings(settings))
        fmt = sql.format_name(fmt)
        lines = sql.header_lines(fmt)
        header: bytes | None = None
        s = await self._call(self._acquire)
        failed, res = True, None
        try:
            res = await self._call(s.send_query, text, fmt)
            while True:
                piece = await self._call(_fetch, res)
                if piece is None:
                    break
                if lines and header is None:
                    header = _head(piece, lines)
                elif header and piece.startswith(header):
                    piece = piece[len(header):]
                if piece:
                    yield piece
            failed = False
        finally:
            # Not awaited (this may run during cancellation): the single-file executor keeps
            # the order, so the Session is free again before any later call.
            if failed and res is not None:
                self.executor.submit(_quiet, res.cancel)
            self.executor.submit(self._release, s, failed)

    async def insert_raw(self, table: str, fmt: str, chunks: AsyncIterable[bytes],
                         columns: Sequence[str] | None = None, settings: Settings = None
                         ) -> None:
        prefix = sql.insert_prefix(table, columns, settings)
        fmt = sql.format_name(fmt)
        s = await self._call(self._acquire)
        failed, ins = True, None
        try:
            async for data in chunks:  # the source's own errors pass through unchanged
                if data:  # no data at all: no insert (chdb refuses an empty one)
                    if ins is None:
                        ins = await self._call(s.send_insert, prefix, fmt)
                    await self._call(ins.append, data)
            if ins is not None:
                await self._call(ins.finish)
            failed = False
        finally:
            if failed and ins is not None:
                self.executor.submit(_quiet, ins.cancel)
            self.executor.submit(self._release, s, failed)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """`run`, with chdb's exceptions mapped to DatabaseError."""
        try:
            return await self.run(fn, *args)
        except DatabaseError:
            raise
        except Exception as e:
            raise _chdb_error(e) from e

    async def close(self) -> None:
        if not self._closed:
            await asyncio.to_thread(self.close_sync)


def _head(piece: bytes, lines: int) -> bytes:
    end = -1
    for _ in range(lines):
        end = piece.find(b"\n", end + 1)
        if end < 0:
            return b""
    return piece[:end + 1]


def _fetch(res: Any) -> bytes | None:
    """The next piece of a chdb StreamingResult, None at its end."""
    piece = res.fetch()
    return None if piece is None else piece.bytes()


def _quiet(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # cleaning up after a failure: keep the first error
        log.debug("chdb cleanup call failed", exc_info=True)
