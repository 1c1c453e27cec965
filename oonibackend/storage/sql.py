"""Client-side rendering of `%(name)s` parameters into ClickHouse literals.

Every driver sends fully rendered SQL, so quoting rules live in one place. Strings are escaped
per ClickHouse's rules (backslash and single quote), so hostile input cannot break out of a
literal.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
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
