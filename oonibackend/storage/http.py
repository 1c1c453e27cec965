"""Client of ClickHouse's HTTP interface: a real server, or the embedded owner process.

SQL is rendered client-side (`sql.render`) and POSTed as the body; results come back as
JSONCompact and are converted by declared column type (`types`), so rows look the same as
with the other drivers. Inserts stream JSONEachRow, which every ClickHouse version accepts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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

log = logging.getLogger("oonibackend.storage.http")


def setting_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


class HTTPDatabase(Database):
    """One aiohttp session per instance, created lazily inside the running loop."""

    def __init__(self, cfg: Config) -> None:
        d = cfg.database
        self.url = cfg.db_url().rstrip("/") + "/"
        self.database = d.database
        self.max_execution_time = d.max_execution_time
        self.pool_size = d.pool_size
        self.timeout = aiohttp.ClientTimeout(total=None, connect=d.connect_timeout,
                                             sock_connect=d.connect_timeout,
                                             sock_read=d.read_timeout)
        self.headers = {"X-ClickHouse-User": d.user}
        if d.password:
            self.headers["X-ClickHouse-Key"] = d.password
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_stats: dict[str, Any] = {}

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop  # a session cannot move between loops (tests use several)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size),
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
            raise DatabaseUnavailable(f"ClickHouse at {self.url} unreachable: {e!r}") from e
        if status == 200:
            return data
        text = data.decode("utf-8", "replace")
        ncode = int(code) if code and code.isdigit() else types.error_code(text)
        if ncode is None:
            if status >= 500:
                raise DatabaseUnavailable(
                    f"ClickHouse at {self.url} answered HTTP {status}: {text.strip()[:200]}")
            raise DatabaseError(f"HTTP {status}: {text.strip()[:200]}")
        raise types.classify(text, ncode)

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
        if not rows:
            return
        cols = list(columns or rows[0].keys())
        p = self._params(settings, False)
        p.pop("default_format", None)
        p["query"] = (f"INSERT INTO {sql.ident(table)} "
                      f"({', '.join(sql.ident(c) for c in cols)}) FORMAT JSONEachRow")
        await self._post(p, types.json_each_row(rows, cols))

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
