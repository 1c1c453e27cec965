"""Schema migrations: numbered .sql files applied in order, recorded in `schema_migrations`.

Every statement is idempotent (IF NOT EXISTS), so a migration interrupted half-way, or one
run concurrently by two processes, is simply applied again. Files are named
`NNNN_description.sql` and live next to this module.

With `[database] cluster` set, `storage.connect` gives a driver that runs every statement,
`schema_migrations` included, ON CLUSTER with replicated engines (storage/cluster.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from oonibackend.storage import Database, sql

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d+)_([A-Za-z0-9_\-]+)\.sql$")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    `version` UInt32,
    `name` String,
    `applied_at` DateTime
)
ENGINE = MergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        return sql.split_statements(self.path.read_text(encoding="utf-8"))


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migration files sorted by version; a duplicate version is a packaging error."""
    out: dict[int, Migration] = {}
    for p in sorted(directory.glob("*.sql")):
        m = _NAME.match(p.name)
        if not m:
            raise ValueError(f"bad migration file name {p.name!r} (want NNNN_name.sql)")
        v = int(m.group(1))
        if v in out:
            raise ValueError(f"duplicate migration version {v}: {out[v].path.name}, {p.name}")
        out[v] = Migration(v, m.group(2), p)
    return [out[v] for v in sorted(out)]


async def applied_versions(db: Database) -> set[int]:
    await db.execute(CREATE_TABLE)
    rows = await db.query("SELECT DISTINCT version FROM schema_migrations")
    return {int(r["version"]) for r in rows}


async def current_version(db: Database) -> int:
    """Highest applied version, 0 for an empty database."""
    return max(await applied_versions(db), default=0)


async def migrate(db: Database, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations in order; returns the versions applied by this call."""
    done = await applied_versions(db)
    applied: list[int] = []
    for m in available(directory):
        if m.version in done:
            continue
        log.info("applying migration %04d_%s", m.version, m.name)
        for stmt in m.statements():
            await db.execute(stmt)
        # insert(), not INSERT ... VALUES text: asynch hangs on inline VALUES data.
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        await db.insert("schema_migrations",
                        [{"version": m.version, "name": m.name, "applied_at": now}])
        applied.append(m.version)
    return applied
