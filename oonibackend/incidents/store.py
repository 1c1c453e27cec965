"""Findings in the `incidents` table: every query of the findings routes (docs/api.md §2.10).

The table is a ReplacingMergeTree versioned by `update_time` and read with FINAL: a write
inserts the whole row with a strictly newer version (`next_version`), so the newest write
always wins and none is half applied; a delete is a synchronous mutation.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from oonibackend.accounts.tokens import Session
from oonibackend.storage import Database, Row

TABLE = "incidents"
COLUMNS = ("id, update_time, start_time, end_time, reported_by, title, event_type, published, "
           "CCs, ASNs, domains, tags, test_names, links, short_description, email_address, "
           "create_time, creator_account_id, themes, slug")


def _visible(session: Session | None) -> tuple[str, dict[str, Any]]:
    """Anonymous callers see published findings only, users also their own, admins all."""
    if session is None:
        return "published = 1", {}
    if session.role == "admin":
        return "1", {}
    return "(published = 1 OR creator_account_id = %(me)s)", {"me": session.account_id}


async def search(db: Database, session: Session | None, *, mine: str | None,
                 ccs: list[str], themes: list[str], asns: list[int],
                 domains: list[str]) -> list[Row]:
    """The findings `session` may see, by title; `mine`: only this creator's. Within a filter
    any value matches, all filters together."""
    where, params = _visible(session)
    clauses = ["deleted != 1", where]
    if mine is not None:
        clauses.append("creator_account_id = %(me)s")
        params["me"] = mine
    for column, name, values in (("CCs", "ccs", ccs), ("themes", "themes", themes),
                                 ("ASNs", "asns", asns), ("domains", "domains", domains)):
        if values:
            clauses.append(f"hasAny({column}, %({name})s)")
            params[name] = values
    return await db.query(
        f"SELECT {COLUMNS} FROM {TABLE} FINAL WHERE {' AND '.join(clauses)} ORDER BY title",
        params)


async def load(db: Database, key: str) -> Row | None:
    """A finding by id or slug (the id wins), with its text; None when unknown or deleted."""
    return await db.query_one(
        f"SELECT {COLUMNS}, text FROM {TABLE} FINAL "
        "WHERE deleted != 1 AND (id = %(k)s OR (slug != '' AND slug = %(k)s)) "
        "ORDER BY id = %(k)s DESC LIMIT 1", {"k": key})


async def slug_taken(db: Database, slug: str, incident_id: str) -> bool:
    """Whether another finding than `incident_id` uses `slug`."""
    row = await db.query_one(f"SELECT id FROM {TABLE} FINAL WHERE deleted != 1 AND "
                             "slug = %(s)s AND id != %(id)s LIMIT 1",
                             {"s": slug, "id": incident_id})
    return row is not None


async def save(db: Database, row: dict[str, Any]) -> None:
    """Write a whole row: the new version of its finding."""
    await db.insert(TABLE, [row])


async def delete(db: Database, incident_id: str) -> None:
    await db.execute(f"ALTER TABLE {TABLE} DELETE WHERE id = %(id)s", {"id": incident_id},
                     settings={"mutations_sync": 2})


def new_id(collector_id: str) -> str:
    """A random numeric id whose last two digits are the collector id's."""
    suffix = int(collector_id) if collector_id.isdigit() else 0
    return str(secrets.randbits(32) * 100 + suffix % 100)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def next_version(current: dt.datetime | None) -> dt.datetime:
    """An `update_time` strictly after `current` (the ReplacingMergeTree version)."""
    t = now()
    return t if current is None or t > current else current + dt.timedelta(seconds=1)


def row(fields: dict[str, Any], incident_id: str, creator: str, created: dt.datetime,
        version: dt.datetime) -> dict[str, Any]:
    """The stored row of a created or updated finding."""
    out = {k: v for k, v in fields.items() if k != "id"}
    out.update(id=incident_id, creator_account_id=creator, create_time=created,
               update_time=version, deleted=0)
    return out
