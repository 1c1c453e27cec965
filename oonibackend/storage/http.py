"""Client of ClickHouse's HTTP interface: a real server, or the embedded owner process.

SQL is rendered client-side (`sql.render`) and POSTed as the body; results come back as
JSONCompact and are converted by declared column type (`types`), so rows look the same as
with the other drivers. Inserts stream JSONEachRow, which every ClickHouse version accepts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp

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


def setting_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


class HTTPDatabase(Database):
    """One aiohttp session per instance, created lazily inside the running loop."""

    def __init__(self, cfg: Config) -> None:
        d = cfg.database
        self.embedded = d.driver == "embedded"
        # The embedded owner listens on a Unix socket of the data directory (storage.owner).
        self.socket = str(cfg.owner_socket()) if self.embedded else None
        self.url = "http://localhost/" if self.embedded else d.url.rstrip("/") + "/"
        self.where = cfg.db_url()
        self.database = d.database
        self.max_execution_time = d.max_execution_time
        self.pool_size = d.pool_size
        self.timeout = aiohttp.ClientTimeout(total=None, connect=d.connect_timeout,
                                             sock_connect=d.connect_timeout,
                                             sock_read=d.read_timeout)
        self.headers = {"X-ClickHouse-User": d.user}
        if password := cfg.db_password():
            self.headers["X-ClickHouse-Key"] = password
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_stats: dict[str, Any] = {}

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop  # a session cannot move between loops (tests use several)
            connector = (aiohttp.UnixConnector(self.socket, limit=self.pool_size)
                         if self.socket else aiohttp.TCPConnector(limit=self.pool_size))
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout, headers=self.headers)
        return self._session

    def _params(self, settings: Settings, read: bool) -> dict[str, str]:
        p = {
            "database": self.database,
            "default_format": "JSONCompact",
            "output_format_json_quote_64bit_integers": "0",
        }
        if read and self.max_execution_time:
            p["max_execution_time"] = str(self.max_execution_time)
        for k, v in (settings or {}).items():
            p[sql.ident(k)] = setting_value(v)
        return p

    async def _post(self, params: Mapping[str, str], body: bytes) -> bytes:
        try:
            async with self._client().post(self.url, params=params, data=body) as r:
                data = await r.read()
                status = r.status
                code = r.headers.get("X-ClickHouse-Exception-Code")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise DatabaseUnavailable(f"ClickHouse at {self.where} unreachable: {e!r}") from e
        if status == 200:
            return data
        self._raise(status, data, code)

    async def query_with_stats(self, statement: str, params: Params = None,
                               settings: Settings = None) -> tuple[list[Row], dict[str, Any]]:
        """Rows plus the server's statistics (rows_read, bytes_read, elapsed)."""
        body = sql.render(statement, params).encode()
        data = await self._post(self._params(settings, True), body)
        if not data.strip():
            return [], {"rows_read": 0, "bytes_read": 0, "elapsed": 0.0}
        try:
            rows, stats = types.parse_json_compact(data)
        except ValueError as e:
            # An error after streaming started arrives inside a 200 response.
            text = data.decode("utf-8", "replace")
            idx = text.find("Code:")
            if idx >= 0:
                raise types.classify(text[idx:]) from e
            raise DatabaseError(f"unparsable ClickHouse response: {text[:200]!r}") from e
        self.last_stats = stats
        return rows, stats

    async def query(self, statement: str, params: Params = None, settings: Settings = None
                    ) -> list[Row]:
        rows, _ = await self.query_with_stats(statement, params, settings)
        return rows

    async def execute(self, statement: str, params: Params = None, settings: Settings = None
                      ) -> None:
        await self._post(self._params(settings, False), sql.render(statement, params).encode())

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, settings: Settings = None) -> None:
        """Settings (e.g. insert_deduplication_token) go as URL parameters, and also inline
        for the embedded owner, which ignores URL settings on inserts (as `insert_raw`)."""
        if not rows:
            return
        cols = list(columns or rows[0].keys())
        p = self._params(settings, False)
        p.pop("default_format", None)
        inline = settings if self.embedded else None
        p["query"] = f"{sql.insert_prefix(table, cols, inline)} FORMAT JSONEachRow"
        await self._post(p, types.json_each_row(rows, cols))

    async def stream(self, statement: str, params: Params = None,
                     fmt: str = "TabSeparatedWithNamesAndTypes", settings: Settings = None
                     ) -> AsyncIterator[bytes]:
        """The response body as it arrives (the embedded owner sends it whole, a real server
        streams it). An error after the first bytes arrives in the body: the tail is checked."""
        p = self._params(settings, True)
        p["default_format"] = sql.format_name(fmt)
        body = sql.render(statement, params).encode()
        tail = b""
        try:
            async with self._client().post(self.url, params=p, data=body) as r:
                if r.status != 200:
                    self._raise(r.status, await r.read(),
                                r.headers.get("X-ClickHouse-Exception-Code"))
                async for piece in r.content.iter_chunked(STREAM_PIECE):
                    yield piece
                    tail = (tail + piece)[-TAIL:]
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise DatabaseUnavailable(f"ClickHouse at {self.where}: stream broken: {e!r}") from e
        if error := stream_error(tail):
            raise types.classify(error)

    async def insert_raw(self, table: str, fmt: str, chunks: AsyncIterable[bytes],
                         columns: Sequence[str] | None = None, settings: Settings = None
                         ) -> None:
        """POSTed with chunked transfer encoding as `chunks` come. Settings go as URL
        parameters, and also inline for the embedded owner, which ignores URL settings on
        inserts (inline INSERT ... SETTINGS needs ClickHouse 20+)."""
        p = self._params(settings, False)
        p.pop("default_format", None)
        inline = settings if self.embedded else None
        p["query"] = f"{sql.insert_prefix(table, columns, inline)} FORMAT {sql.format_name(fmt)}"
        rest = aiter(chunks)
        first = b""
        async for data in rest:
            if data:
                first = data
                break
        if not first:
            return  # no data at all: nothing to insert
        failure: list[BaseException] = []  # the source's own error, whatever aiohttp makes of it
        try:
            async with self._client().post(self.url, params=p,
                                           data=_body(first, rest, failure)) as r:
                data = await r.read()
                if not failure and r.status != 200:
                    self._raise(r.status, data, r.headers.get("X-ClickHouse-Exception-Code"))
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            if failure:
                raise failure[0] from None
            raise DatabaseUnavailable(f"ClickHouse at {self.where} unreachable: {e!r}") from e
        if failure:
            raise failure[0]

    def _raise(self, status: int, data: bytes, code: str | None) -> NoReturn:
        """The DatabaseError of a non-200 answer (same mapping as `_post`)."""
        text = data.decode("utf-8", "replace")
        ncode = int(code) if code and code.isdigit() else types.error_code(text)
        if ncode is None:
            if status >= 500:
                raise DatabaseUnavailable(
                    f"ClickHouse at {self.where} answered HTTP {status}: {text.strip()[:200]}")
            raise DatabaseError(f"HTTP {status}: {text.strip()[:200]}")
        raise types.classify(text, ncode)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


STREAM_PIECE = 1 << 20
TAIL = 4096
_STREAM_ERROR = re.compile(
    rb"(?:^|\n)(?:(Code: \d+[.,] [^\n]*DB::Exception.*)$|__exception__\r?\n)", re.S)


def stream_error(tail: bytes) -> str | None:
    """The exception a server appended to a streamed body after sending its first bytes
    (`Code: N. DB::Exception: ...` on its own line, or the newer `__exception__` block)."""
    m = _STREAM_ERROR.search(tail)
    if m is None:
        return None
    return (m.group(1) or tail[m.start():]).decode("utf-8", "replace").strip()


async def _body(first: bytes, rest: AsyncIterator[bytes], failure: list[BaseException]
                ) -> AsyncIterator[bytes]:
    yield first
    try:
        async for data in rest:
            if data:
                yield data
    except Exception as e:
        failure.append(e)
        raise
