"""The test_helper_instances table: one row per test-helper host the rotation made.

CollapsingMergeTree(sign): a row is added with sign 1; an update inserts a sign -1 copy of the
current row plus the new row (sign 1); a deletion inserts only the -1 copy. Reads group on
every column and keep the versions whose signs sum to more than 0, which is right whatever
the order of the rows before merges (a row still to be collapsed counts 1 - 1 = 0).
A host is live while draining_at is NULL; draining hosts are no longer published or served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from oonibackend.storage import Database

TABLE = "test_helper_instances"
COLUMNS = ("rdn", "dns_zone", "name", "provider", "region", "ipaddr", "ipv6addr",
           "draining_at", "sign")

CURRENT_SQL = """
SELECT rdn, dns_zone, name, provider, region, toString(ipaddr) AS ipaddr,
       toString(ipv6addr) AS ipv6addr, draining_at
FROM (
    SELECT rdn, dns_zone, name, provider, region, ipaddr, ipv6addr, draining_at,
           sum(sign) AS net
    FROM test_helper_instances
    GROUP BY rdn, dns_zone, name, provider, region, ipaddr, ipv6addr, draining_at
)
WHERE net > 0
ORDER BY name, rdn
"""


@dataclass(frozen=True)
class Instance:
    rdn: str
    dns_zone: str
    name: str
    provider: str
    region: str
    ipaddr: str
    ipv6addr: str = "::"
    draining_at: dt.datetime | None = None  # naive UTC

    @property
    def fqdn(self) -> str:
        return f"{self.rdn}.{self.dns_zone}"

    @property
    def draining(self) -> bool:
        return self.draining_at is not None

    def row(self, sign: int) -> dict[str, Any]:
        return {"rdn": self.rdn, "dns_zone": self.dns_zone, "name": self.name,
                "provider": self.provider, "region": self.region, "ipaddr": self.ipaddr,
                "ipv6addr": self.ipv6addr or "::", "draining_at": self.draining_at,
                "sign": sign}

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Instance:
        return cls(rdn=str(r["rdn"]), dns_zone=str(r["dns_zone"]), name=str(r["name"]),
                   provider=str(r["provider"]), region=str(r["region"]),
                   ipaddr=str(r["ipaddr"]), ipv6addr=str(r["ipv6addr"] or "::"),
                   draining_at=r.get("draining_at"))


async def read_instances(db: Database) -> list[Instance]:
    """The current version of every row (live and draining)."""
    return [Instance.from_row(r) for r in await db.query(CURRENT_SQL)]


async def add(db: Database, inst: Instance) -> None:
    await db.insert(TABLE, [inst.row(1)], COLUMNS)


async def mark_draining(db: Database, inst: Instance, when: dt.datetime) -> Instance:
    """Replace the row by its draining version (one insert: the -1 copy and the new row)."""
    new = replace(inst, draining_at=when.replace(microsecond=0))
    await db.insert(TABLE, [inst.row(-1), new.row(1)], COLUMNS)
    return new


async def remove(db: Database, instances: Sequence[Instance]) -> None:
    if instances:
        await db.insert(TABLE, [i.row(-1) for i in instances], COLUMNS)
