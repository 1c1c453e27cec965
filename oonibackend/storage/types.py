"""ClickHouse values to Python values, shared by every driver.

The HTTP interface and chdb return JSONCompact (`meta` with type names, `data` as JSON
arrays); the native driver returns Python objects that still need small fixes (aware
datetimes, padded FixedStrings). Converting by the declared column type here keeps query
results identical whatever the driver: int, float, str, naive UTC datetime, date, list,
dict, None.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import orjson

from oonibackend.storage import DatabaseError, QueryLimitExceeded

Converter = Callable[[Any], Any]

# ClickHouse error codes meaning "the query hit a configured limit".
LIMIT_CODES = frozenset({158, 159, 160, 307, 396})
_CODE = re.compile(r"Code:\s*(\d+)")
_EPOCH = dt.datetime(1970, 1, 1)


def split_type_args(s: str) -> list[str]:
    """Split `A, B(C, D), 'x,y'` on top-level commas."""
    out: list[str] = []
    depth, start, quote = 0, 0, False
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == "'":
                quote = False
        elif c == "'":
            quote = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(s[start:i].strip())
            start = i + 1
        i += 1
    tail = s[start:].strip()
    if tail:
        out.append(tail)
    return out


def _parse_type(t: str) -> tuple[str, list[str]]:
    t = t.strip()
    p = t.find("(")
    if p < 0 or not t.endswith(")"):
        return t, []
    return t[:p], split_type_args(t[p + 1:-1])


def _datetime(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return naive_utc(v)
    if isinstance(v, int | float):
        return _EPOCH + dt.timedelta(seconds=v)
    if v.startswith("0000-00-00"):  # zero DateTime on old servers
        return _EPOCH
    return dt.datetime.fromisoformat(v)


def _date(v: Any) -> Any:
    if v is None or isinstance(v, dt.date):
        return v
    if v.startswith("0000-00-00"):
        return _EPOCH.date()
    return dt.date.fromisoformat(v)


def _int(v: Any) -> Any:
    return None if v is None else int(v)


def _float(v: Any) -> Any:
    if v is None or isinstance(v, float):
        return v
    return float(v)  # ints and the quoted "inf" / "nan" forms


def _fixed_string(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v.rstrip("\x00") if isinstance(v, str) else v


def _str(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)  # Enum objects, IPv4Address, UUID


def _enum(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    return getattr(v, "name", str(v))


def _array(inner: Converter | None) -> Converter:
    if inner is None:
        return lambda v: v if v is None or isinstance(v, list) else list(v)
    return lambda v: None if v is None else [inner(x) for x in v]


def _tuple(inners: list[Converter | None]) -> Converter:
    def conv(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, dict):  # named tuples are JSON objects in some formats
            v = list(v.values())
        return [c(x) if c else x for c, x in zip(inners, v, strict=False)]

    return conv


def _map(k: Converter | None, val: Converter | None) -> Converter:
    def conv(v: Any) -> Any:
        if v is None:
            return None
        return {(k(a) if k else a): (val(b) if val else b) for a, b in dict(v).items()}

    return conv


_INTS = {"Int64", "UInt64", "Int128", "UInt128", "Int256", "UInt256"}
_SMALL_INTS = {"Int8", "Int16", "Int32", "UInt8", "UInt16", "UInt32"}


@lru_cache(maxsize=512)
def converter(type_name: str) -> Converter | None:
    """A function turning a value of ClickHouse type `type_name` into Python (None: as is)."""
    base, args = _parse_type(type_name)
    if base in ("Nullable", "LowCardinality", "SimpleAggregateFunction"):
        return converter(args[-1]) if args else None
    if base in ("DateTime", "DateTime32", "DateTime64"):
        return _datetime
    if base in ("Date", "Date32"):
        return _date
    if base in _INTS:
        return _int
    if base in _SMALL_INTS:
        return _int  # values are JSON ints already, but native may give numpy-like ints
    if base in ("Float32", "Float64", "BFloat16") or base.startswith("Decimal"):
        return _float
    if base == "FixedString":
        return _fixed_string
    if base in ("Enum8", "Enum16"):
        return _enum
    if base in ("String", "UUID", "IPv4", "IPv6"):
        return _str
    if base == "Bool":
        return lambda v: v if v is None else bool(v)
    if base == "Array" and args:
        return _array(converter(args[0]))
    if base == "Tuple":
        return _tuple([converter(_strip_name(a)) for a in args])
    if base == "Map" and len(args) == 2:
        return _map(converter(args[0]), converter(args[1]))
    return None


def _strip_name(arg: str) -> str:
    """`name Type` (named tuple element) -> `Type`."""
    m = re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s+(?=[A-Z])", arg)
    return arg[m.end():] if m else arg


def convert_rows(names: Sequence[str], types: Sequence[str], data: Sequence[Sequence[Any]]
                 ) -> list[dict[str, Any]]:
    """Rows (value lists in column order) to dicts with Python values."""
    convs = [converter(t) for t in types]
    if not any(convs):
        return [dict(zip(names, row, strict=False)) for row in data]
    pairs = list(zip(names, convs, strict=True))
    return [
        {n: (c(v) if c is not None and v is not None else v)
         for (n, c), v in zip(pairs, row, strict=False)}
        for row in data
    ]


def parse_json_compact(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Parse a JSONCompact document into (rows, statistics)."""
    doc = orjson.loads(body)
    meta = doc.get("meta", [])
    rows = convert_rows([m["name"] for m in meta], [m["type"] for m in meta], doc.get("data", []))
    st = doc.get("statistics") or {}
    stats = {
        "rows_read": int(st.get("rows_read", 0) or 0),
        "bytes_read": int(st.get("bytes_read", 0) or 0),
        "elapsed": float(st.get("elapsed", 0.0) or 0.0),
    }
    return rows, stats


# ---- Python -> ClickHouse input (JSONEachRow) ----

def naive_utc(v: dt.datetime) -> dt.datetime:
    if v.tzinfo is not None:
        return v.astimezone(dt.UTC).replace(tzinfo=None)
    return v


def _json_default(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        v = naive_utc(v)
        fmt = "%Y-%m-%d %H:%M:%S.%f" if v.microsecond else "%Y-%m-%d %H:%M:%S"
        return v.strftime(fmt)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    if isinstance(v, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(v).__name__} for ClickHouse")


_OPTS = orjson.OPT_PASSTHROUGH_DATETIME


def prepare_row(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    """The row restricted to `columns`, bools as 0/1; absent keys stay absent (defaults)."""
    out = {}
    for c in columns:
        if c in row:
            v = row[c]
            out[c] = int(v) if v.__class__ is bool else v
    return out


def dumps(obj: Any) -> bytes:
    """orjson with ClickHouse-friendly datetimes ('YYYY-MM-DD HH:MM:SS[.ffffff]')."""
    return orjson.dumps(obj, default=_json_default, option=_OPTS)


def json_each_row(rows: Sequence[Any], columns: Sequence[str]) -> bytes:
    """Newline-delimited JSON objects, accepted by every ClickHouse version."""
    return b"\n".join(dumps(prepare_row(r, columns)) for r in rows) + b"\n"


# ---- errors ----

def error_code(text: str) -> int | None:
    m = _CODE.search(text)
    return int(m.group(1)) if m else None


def clean_message(text: str) -> str:
    """First line of a ClickHouse exception text, without old servers' decoration."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = line.replace("e.displayText() = ", "")
    line = re.sub(r",\s*e\.what\(\) = \S+$", "", line)
    return line[:2000]


def classify(text: str, code: int | None = None) -> DatabaseError:
    """The storage exception for a ClickHouse error text."""
    if code is None:
        code = error_code(text)
    msg = clean_message(text) or f"ClickHouse error {code}"
    err = QueryLimitExceeded(msg) if code in LIMIT_CODES else DatabaseError(msg)
    err.code = code  # type: ignore[attr-defined]  # the owner relays both to its clients
    err.server_text = text  # type: ignore[attr-defined]
    return err
