"""The reference data scoring and the API rely on, and whether it is loaded.

A fresh install has none: no URL test lists (check-in hands probes nothing to test), no
blocking fingerprints (the fastpath then calls a block page "OK"), no AS names, no GeoIP
(every address is ZZ / AS0). `oonibackend bootstrap` loads all of it; each dataset also has
its own command (its timer keeps it current).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oonibackend.config import Config


@dataclass(frozen=True)
class Dataset:
    key: str  # its key in `status`
    name: str  # its name for `bootstrap --only / --skip`
    label: str  # for people
    what: str
    command: str  # the `oonibackend` command that fills it
    tables: tuple[str, ...] = ()  # empty: files, not tables


DATASETS: tuple[Dataset, ...] = (
    Dataset("citizenlab", "test-lists", "test lists",
            "the CitizenLab URL test lists handed to probes at check-in",
            "update-citizenlab", ("citizenlab",)),
    Dataset("fingerprints", "fingerprints", "fingerprints",
            "OONI's DNS and HTTP blocking fingerprints, which confirm blocking in the fastpath",
            "update-fingerprints", ("fingerprints_dns", "fingerprints_http")),
    Dataset("asnmeta", "asnmeta", "AS organisations",
            "the AS-to-organisation history, the network names of the read API",
            "update-asnmeta", ("asnmeta",)),
    Dataset("geoip", "geoip", "GeoIP databases",
            "the country and ASN databases that geolocate probes (missing: ZZ / AS0)",
            "download-geoip"),
)
BY_KEY = {d.key: d for d in DATASETS}
BY_NAME = {d.name: d for d in DATASETS}


def geoip_present(cfg: Config) -> int:
    """1 if both GeoIP database files exist, else 0 (blocking: call it in a thread)."""
    return int(cfg.path(cfg.geoip.cc_db).is_file() and cfg.path(cfg.geoip.asn_db).is_file())


async def status(db: Any, cfg: Config) -> dict[str, int]:
    """Rows per dataset (`citizenlab`, `fingerprints` (DNS + HTTP), `asnmeta`), and `geoip`:
    1 if both database files exist, else 0. One cheap query; storage.DatabaseError (for
    instance before the schema exists) goes to the caller."""
    counts = ", ".join(f"(SELECT count() FROM {t}) AS {t}"
                       for d in DATASETS for t in d.tables)
    row, geoip = await asyncio.gather(db.query_one(f"SELECT {counts}"),
                                      asyncio.to_thread(geoip_present, cfg))
    row = row or {}
    out = {d.key: sum(int(row.get(t) or 0) for t in d.tables) for d in DATASETS if d.tables}
    out["geoip"] = geoip
    return out


def empty(status: dict[str, int]) -> list[str]:
    """The keys of the datasets `status` found empty, in DATASETS order."""
    return [d.key for d in DATASETS if d.key in status and status[d.key] <= 0]


def advice(empty_names: list[str]) -> str:
    """One sentence for logs and /health: what is missing and the commands that load it
    ("" when nothing is). Takes status keys (or bootstrap names)."""
    found = [BY_KEY.get(n) or BY_NAME[n] for n in empty_names]
    if not found:
        return ""
    labels = ", ".join(d.label for d in found)
    commands = " / ".join(d.command for d in found)
    return f"reference data missing: {labels}; run `oonibackend bootstrap` (or {commands})"
