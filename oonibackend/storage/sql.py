"""SQL text built and inspected client-side, the same for every driver.

Every driver sends fully rendered SQL, so quoting rules live in one place: `%(name)s`
parameters become ClickHouse literals, strings escaped per ClickHouse's rules (backslash and
single quote) so hostile input cannot break out of a literal. The statement helpers (kind,
SETTINGS clause, INSERT prefix, format names) are shared by the chdb, HTTP and native drivers
and the embedded owner.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PARAM = re.compile(r"%\((\w+)\)s")


def quote_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal(v: Any) -> str:
    """A ClickHouse literal for a Python value."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        if v.microsecond:
            return f"toDateTime64('{v.isoformat(sep=' ')}', 6)"
        return f"toDateTime('{v.strftime('%Y-%m-%d %H:%M:%S')}')"
    if isinstance(v, dt.date):
        return f"toDate('{v.isoformat()}')"
    if isinstance(v, str):
        return quote_str(v)
    if isinstance(v, bytes):
        return quote_str(v.decode("utf-8", "replace"))
    if isinstance(v, list | tuple | set | frozenset):
        return "[" + ",".join(literal(x) for x in v) + "]"
    raise TypeError(f"cannot render {type(v).__name__} as a ClickHouse literal")


def render(sql: str, params: Mapping[str, Any] | None) -> str:
    """Substitute `%(name)s` placeholders; a missing parameter is a programming error."""
    if not params:
        return sql

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in params:
            raise KeyError(f"missing SQL parameter {name!r}")
        return literal(params[name])

    return _PARAM.sub(sub, sql)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def ident(name: str) -> str:
    """Validate a table or column name used to build SQL."""
    if not _IDENT.match(name):
        raise ValueError(f"invalid identifier {name!r}")
    return name


def split_statements(text: str) -> list[str]:
    """Split a .sql file on `;` outside quotes and comments; drops empty statements."""
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    quote: str | None = None
    while i < n:
        c = text[i]
        if quote:
            buf.append(c)
            if c == "\\" and i + 1 < n:
                buf.append(text[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in ("'", '"', "`"):
            quote = c
            buf.append(c)
        elif c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        elif c == ";":
            stmt = "".join(buf).strip()
            if stmt:
                out.append(stmt)
            buf = []
        else:
            buf.append(c)
        i += 1
    stmt = "".join(buf).strip()
    if stmt:
        out.append(stmt)
    return out


_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_SELECT = re.compile(r"^(?:\(\s*)*(SELECT|WITH)\b", re.I)
_INSERT_SELECT = re.compile(r"^INSERT\b(?:(?!\b(?:FORMAT|VALUES)\b).)*\bSELECT\b", re.I | re.S)


def statement_kind(statement: str) -> str:
    """'select' (SELECT/WITH), 'insert_select', 'insert' (inline VALUES/FORMAT data), 'other'."""
    s = _LEADING_NOISE.sub("", statement, count=1)
    if _SELECT.match(s):
        return "select"
    if _INSERT_SELECT.match(s):
        return "insert_select"
    if s[:6].upper() == "INSERT":
        return "insert"
    return "other"


def settings_list(settings: Mapping[str, Any]) -> str:
    """`k1=v1, k2=v2`: the body of a SETTINGS clause."""
    return ", ".join(f"{ident(k)}={literal(v)}" for k, v in settings.items())


def append_settings(statement: str, settings: Mapping[str, Any] | None) -> str:
    """Add a SETTINGS clause to a SELECT (or INSERT ... SELECT); other statements unchanged.

    chdb has no per-call settings, and SET on a shared session would leak into concurrent
    queries, so settings travel inside the statement. A second SETTINGS clause and one
    after FORMAT are both accepted by ClickHouse 26.x.
    """
    if not settings or statement_kind(statement) not in ("select", "insert_select"):
        return statement  # may carry inline INSERT data: leave it byte for byte
    s = statement.rstrip()
    while s.endswith(";"):
        s = s[:-1].rstrip()
    return f"{s}\nSETTINGS {settings_list(settings)}"


_FORMAT = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def format_name(fmt: str) -> str:
    """Validate a ClickHouse format name used to build SQL."""
    if not _FORMAT.match(fmt):
        raise ValueError(f"invalid format name {fmt!r}")
    return fmt


def insert_prefix(table: str, columns: Sequence[str] | None,
                  settings: Mapping[str, Any] | None) -> str:
    """`INSERT INTO t (cols) SETTINGS k=v` without FORMAT: the statement of a raw insert.
    Settings go inline because the owner's HTTP interface ignores URL settings on inserts."""
    prefix = f"INSERT INTO {ident(table)}"
    if columns:
        prefix += f" ({', '.join(ident(c) for c in columns)})"
    if settings:
        prefix += f" SETTINGS {settings_list(settings)}"
    return prefix


def header_lines(fmt: str) -> int:
    """Header lines a ClickHouse text format writes before the rows."""
    if fmt.endswith("WithNamesAndTypes"):
        return 2
    return 1 if fmt.endswith("WithNames") else 0
