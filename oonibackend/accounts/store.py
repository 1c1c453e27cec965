"""Roles (`accounts`) and forced re-logins (`session_expunge`) in ClickHouse.

Roles are read at login and written by admins: rare, so straight to the database. Expunge
thresholds are checked on every authenticated request, so the whole (small) table is held in
memory and reloaded every `accounts.expunge_refresh` seconds; an expunge made through this
process applies at once, one made through another process within that interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from oonibackend.accounts.tokens import ROLES, Session
from oonibackend.storage import Database, DatabaseError

log = logging.getLogger(__name__)


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._expunge: dict[str, int] = {}

    async def role(self, account_id: str) -> str | None:
        row = await self.db.query_one(
            "SELECT role FROM accounts WHERE account_id = %(a)s", {"a": account_id})
        return row["role"] if row else None

    async def effective_role(self, account_id: str) -> str:
        """The role a new session token gets: the stored one, `user` when none is set."""
        role = await self.role(account_id)
        return role if role in ROLES else "user"

    async def set_role(self, account_id: str, role: str) -> None:
        # EmbeddedRocksDB: an insert on an existing key replaces the row.
        await self.db.insert("accounts", [{"account_id": account_id, "role": role}])

    async def expunge(self, account_id: str, now: int) -> None:
        """Refuse every session of this account issued before `now`."""
        when = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)
        await self.db.insert("session_expunge", [{"account_id": account_id, "threshold": when}])
        self._expunge[account_id] = now

    def expunged(self, session: Session) -> bool:
        threshold = self._expunge.get(session.account_id)
        return threshold is not None and session.issued_at < threshold

    async def reload(self) -> None:
        rows = await self.db.query("SELECT account_id, threshold FROM session_expunge")
        self._expunge = {r["account_id"]: int(r["threshold"].replace(tzinfo=dt.UTC).timestamp())
                         for r in rows}


async def refresh_loop(store: AccountStore, interval: float) -> None:
    while True:
        try:
            await store.reload()
        except DatabaseError as e:
            log.warning("cannot reload session_expunge", extra={"error": str(e)})
        await asyncio.sleep(interval)

