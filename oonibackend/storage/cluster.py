"""DDL for a ClickHouse cluster (`[database] cluster`): ON CLUSTER, replicated engines.

DDL sent to one server of a cluster must change every server (a migration's CREATE, a job's
TRUNCATE and EXCHANGE TABLES swap), and the tables must keep their rows on every replica of
the shard. `on_cluster` rewrites one statement for that, as text, so the migrations and jobs
stay plain OONI SQL and an unclustered database gets them unchanged; `ClusterDatabase`
(what `storage.connect` returns with a cluster configured) applies it to every `execute`:

* DDL (CREATE, ALTER, DROP, TRUNCATE, OPTIMIZE, RENAME, EXCHANGE) runs `ON CLUSTER NAME`,
  placed where ClickHouse's grammar wants it: after the object's name, or at the end of a
  RENAME / EXCHANGE.
* `ENGINE = <X>MergeTree(args)` becomes `Replicated<X>MergeTree('<path>', '<replica>', args)`,
  every other clause (ORDER BY, PARTITION BY, SETTINGS, a view's SELECT) kept as written.
  The path holds `{uuid}` (ClickHouse's own default_replica_path), not `{database}/{table}`:
  ClickHouse unfolds those two at creation, so `CREATE TABLE citizenlab_flip AS citizenlab`
  would copy citizenlab's path and collide with it, and the tables the jobs swap with
  EXCHANGE TABLES would keep paths named after each other. `{uuid}` stays a macro, every
  table gets its own, and the initiator of an ON CLUSTER query picks it for all hosts.
* Engines that do not replicate (EmbeddedRocksDB, Join) are created on every host; each host
  keeps its own rows (docs/deployment.md §4).
* Everything else (SELECT, INSERT, SYSTEM) is returned unchanged.

Statements the rules do not know how to place are refused (ValueError), so a new kind of DDL
in a migration fails its unit test instead of running on one host only.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from oonibackend.storage import Database, DatabaseError, Params, Row, Settings, sql

# ClickHouse's default_replica_path and default_replica_name (docs of ReplicatedMergeTree);
# the servers define the {shard} and {replica} macros.
REPLICA_PATH = "/clickhouse/tables/{uuid}/{shard}"
REPLICA_NAME = "{replica}"

MERGE_TREES = frozenset({
    "MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree",
    "CollapsingMergeTree", "VersionedCollapsingMergeTree", "GraphiteMergeTree",
})

# A cluster name as ClickHouse's config allows it, or a `{macro}` the servers expand.
_NAME = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_\-]*|\{[A-Za-z_][A-Za-z0-9_]*\})$")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_TOKEN = re.compile(r"""
    (?P<space>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<quoted>`(?:[^`\\]|\\.)*`|"(?:[^"\\]|\\.)*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<other>.)
""", re.S | re.X)


@dataclass(frozen=True)
class _Tok:
    kind: str  # word, quoted, string, other
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


def _tokens(statement: str) -> list[_Tok]:
    out = []
    for m in _TOKEN.finditer(statement):
        kind = m.lastgroup or "other"
        if kind != "space":
            out.append(_Tok(kind, m.group(), m.start(), m.end()))
    return out


def valid_name(cluster: str) -> bool:
    return bool(_NAME.match(cluster))


def cluster_clause(cluster: str) -> str:
    """`ON CLUSTER name` (a string literal for names that are not plain identifiers)."""
    if not valid_name(cluster):
        raise ValueError(f"invalid cluster name {cluster!r}")
    return f"ON CLUSTER {cluster if _PLAIN.match(cluster) else repr(cluster)}"


# Object kinds after CREATE / DROP, longest first; and their optional IF [NOT] EXISTS.
_CREATE_KINDS = (("MATERIALIZED", "VIEW"), ("TABLE",), ("VIEW",), ("DICTIONARY",),
                 ("DATABASE",))
_DROP_KINDS = (("TABLE",), ("VIEW",), ("DICTIONARY",), ("DATABASE",))


def _match(toks: list[_Tok], i: int, words: tuple[str, ...]) -> int | None:
    """Index after `words` if they start at toks[i], else None."""
    for j, w in enumerate(words):
        if i + j >= len(toks) or toks[i + j].upper != w:
            return None
    return i + len(words)


def _skip(toks: list[_Tok], i: int, words: tuple[str, ...]) -> int:
    j = _match(toks, i, words)
    return i if j is None else j


def _name_end(toks: list[_Tok], i: int, statement: str) -> int:
    """Index of the last token of a (possibly `db.`-qualified) name starting at toks[i]."""
    if i >= len(toks) or toks[i].kind not in ("word", "quoted"):
        raise ValueError(f"no object name where expected in: {statement[:200]}")
    if i + 2 < len(toks) and toks[i + 1].text == "." and toks[i + 2].kind in ("word", "quoted"):
        return i + 2
    return i


def _cluster_at(toks: list[_Tok], statement: str) -> int | None:
    """Offset in `statement` where ` ON CLUSTER x` goes; None: not DDL, leave it alone."""
    first = toks[0].upper if toks else ""
    i = 1
    if first == "CREATE":
        i = _skip(toks, i, ("OR", "REPLACE"))
        for kind in _CREATE_KINDS:
            if (j := _match(toks, i, kind)) is not None:
                j = _skip(toks, j, ("IF", "NOT", "EXISTS"))
                return toks[_name_end(toks, j, statement)].end
    elif first == "DROP":
        for kind in _DROP_KINDS:
            if (j := _match(toks, i, kind)) is not None:
                j = _skip(toks, j, ("IF", "EXISTS"))
                return toks[_name_end(toks, j, statement)].end
    elif first in ("ALTER", "OPTIMIZE"):
        if (j := _match(toks, i, ("TABLE",))) is not None:
            return toks[_name_end(toks, j, statement)].end
    elif first == "TRUNCATE":
        j = _skip(toks, _skip(toks, i, ("TABLE",)), ("IF", "EXISTS"))
        return toks[_name_end(toks, j, statement)].end
    elif first in ("RENAME", "EXCHANGE"):
        return toks[-1].end if toks[-1].text != ";" else toks[-2].end
    elif first in ("SELECT", "WITH", "INSERT", "SHOW", "DESCRIBE", "DESC", "EXISTS", "SET",
                   "SYSTEM"):
        return None
    raise ValueError(f"cannot run on a cluster (unknown statement): {statement[:200]}")


def _engine(toks: list[_Tok], statement: str) -> tuple[int, int, str] | None:
    """(start, end, replacement) of a MergeTree-family ENGINE clause at the top level."""
    depth = 0
    for i, t in enumerate(toks):
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        elif depth == 0 and t.upper == "ENGINE":
            j = i + 2 if i + 1 < len(toks) and toks[i + 1].text == "=" else i + 1
            if j >= len(toks) or toks[j].text not in MERGE_TREES:
                return None
            name = toks[j]
            args, end = "", name.end
            if j + 1 < len(toks) and toks[j + 1].text == "(":
                close = _closing(toks, j + 1, statement)
                args, end = statement[toks[j + 1].end:toks[close].start].strip(), toks[close].end
            params = f"'{REPLICA_PATH}', '{REPLICA_NAME}'" + (f", {args}" if args else "")
            return name.start, end, f"Replicated{name.text}({params})"
    return None


def _closing(toks: list[_Tok], i: int, statement: str) -> int:
    depth = 0
    for j in range(i, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[j].text, 0)
        if depth == 0:
            return j
    raise ValueError(f"unbalanced parentheses in: {statement[:200]}")


def on_cluster(statement: str, cluster: str) -> str:
    """`statement` for every host of `cluster` (module docstring); unchanged without one."""
    if not cluster:
        return statement
    clause = cluster_clause(cluster)
    toks = _tokens(statement)
    at = _cluster_at(toks, statement)
    if at is None:
        return statement
    edits: list[tuple[int, int, str]] = []
    if not any(a.upper == "ON" and b.upper == "CLUSTER" for a, b in pairwise(toks)):
        edits.append((at, at, " " + clause))
    if toks[0].upper == "CREATE" and (engine := _engine(toks, statement)):
        edits.append(engine)
    out = statement
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return out


class ClusterDatabase(Database):
    """A driver whose `execute` runs on the whole cluster (`on_cluster`, parameters rendered
    first); reads and inserts pass through. Other attributes are the driver's."""

    def __init__(self, inner: Database, cluster: str) -> None:
        cluster_clause(cluster)  # a bad name fails here, not at the first DDL
        self.inner = inner
        self.cluster = cluster

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def execute(self, statement: str, params: Params = None,
                      settings: Settings = None) -> None:
        try:
            rewritten = on_cluster(sql.render(statement, params), self.cluster)
        except ValueError as e:
            raise DatabaseError(str(e)) from e
        await self.inner.execute(rewritten, None, settings)

    async def query(self, statement: str, params: Params = None, settings: Settings = None
                    ) -> list[Row]:
        return await self.inner.query(statement, params, settings)

    async def query_with_stats(self, statement: str, params: Params = None,
                               settings: Settings = None) -> tuple[list[Row], dict[str, Any]]:
        return await self.inner.query_with_stats(statement, params, settings)

    def stream(self, statement: str, params: Params = None,
               fmt: str = "TabSeparatedWithNamesAndTypes", settings: Settings = None
               ) -> AsyncIterator[bytes]:
        return self.inner.stream(statement, params, fmt, settings)

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]],
                     columns: Sequence[str] | None = None, settings: Settings = None) -> None:
        await self.inner.insert(table, rows, columns, settings)

    async def insert_raw(self, table: str, fmt: str, chunks: AsyncIterable[bytes],
                         columns: Sequence[str] | None = None, settings: Settings = None
                         ) -> None:
        await self.inner.insert_raw(table, fmt, chunks, columns, settings)

    async def probe(self, statement: str = "SELECT 1 AS ok", timeout: float | None = None
                    ) -> list[Row]:
        return await self.inner.probe(statement, timeout)

    async def close(self) -> None:
        await self.inner.close()
