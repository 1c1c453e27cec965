"""The `oonirun` table: one row per (link, descriptor version), translations replaced in place."""

from __future__ import annotations

import datetime as dt
from typing import Any

from oonibackend import jsonutil
from oonibackend.storage import Database

COLUMNS = ("ooni_run_link_id, descriptor_creation_time, translation_creation_time, "
           "creator_account_id, archived, descriptor, author, name, short_description, icon")
MS = dt.timedelta(milliseconds=1)


def now_ms() -> dt.datetime:
    t = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def after(t: dt.datetime | None) -> dt.datetime:
    """Now, or just after `t` if the clock has not moved past it (versions strictly grow)."""
    n = now_ms()
    return n if t is None or n > t else t + MS


async def versions(db: Database, link_id: int) -> list[dict[str, Any]]:
    """Every descriptor version of a link, oldest first (revision = index + 1)."""
    return await db.query(
        f"SELECT {COLUMNS} FROM oonirun FINAL WHERE ooni_run_link_id = %(id)s "
        "ORDER BY descriptor_creation_time", {"id": link_id})


async def links(db: Database, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return await db.query(
        f"SELECT {COLUMNS} FROM oonirun FINAL WHERE {where} "
        "ORDER BY descriptor_creation_time, translation_creation_time", params)


def row(link_id: int, created: dt.datetime, translated: dt.datetime, creator: str,
        archived: bool, d: dict[str, Any]) -> dict[str, Any]:
    return {"ooni_run_link_id": link_id, "descriptor_creation_time": created,
            "translation_creation_time": translated, "creator_account_id": creator,
            "archived": int(archived), "descriptor": jsonutil.dumps(d).decode(),
            "author": d.get("author") or "", "name": d.get("name") or "",
            "short_description": d.get("short_description") or "", "icon": d.get("icon") or ""}


async def insert(db: Database, rows: list[dict[str, Any]]) -> None:
    await db.insert("oonirun", rows)
