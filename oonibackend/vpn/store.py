"""The VPN configuration cache in the database (table ooniprobe_vpn_provider, migration 0009).

Every refresh inserts a row; the newest row of a provider is its entry, so several API hosts
sharing the database see each other's refreshes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from oonibackend.storage import Database
from oonibackend.vpn.provider import Credentials, Endpoint

TABLE = "ooniprobe_vpn_provider"


@dataclass(frozen=True, slots=True)
class Entry:
    provider: str
    credentials: Credentials
    date_updated: dt.datetime  # naive UTC, microseconds
    date_created: dt.datetime

    def age(self, now: dt.datetime) -> dt.timedelta:
        return now - self.date_updated


async def load(db: Database, provider: str) -> Entry | None:
    """The newest entry of `provider`, None when there is none."""
    row = await db.query_one(
        f"SELECT date_updated, date_created, openvpn_ca, openvpn_cert, openvpn_key, "
        f"endpoint_address, endpoint_protocol, endpoint_transport FROM {TABLE} "
        "WHERE provider_name = %(p)s ORDER BY date_updated DESC LIMIT 1", {"p": provider})
    if row is None:
        return None
    endpoints = tuple(Endpoint(a, p, t) for a, p, t in zip(
        row["endpoint_address"], row["endpoint_protocol"], row["endpoint_transport"],
        strict=False))
    creds = Credentials(ca=row["openvpn_ca"], cert=row["openvpn_cert"],
                        key=row["openvpn_key"], endpoints=endpoints)
    return Entry(provider, creds, row["date_updated"], row["date_created"])


async def save(db: Database, entry: Entry) -> None:
    c = entry.credentials
    await db.insert(TABLE, [{
        "provider_name": entry.provider,
        "date_updated": entry.date_updated,
        "date_created": entry.date_created,
        "openvpn_ca": c.ca,
        "openvpn_cert": c.cert,
        "openvpn_key": c.key,
        "endpoint_address": [e.address for e in c.endpoints],
        "endpoint_protocol": [e.protocol for e in c.endpoints],
        "endpoint_transport": [e.transport for e in c.endpoints],
    }])
