"""The creation journal: the droplet a run is about to ask for, written before it asks.

A run that dies between the create call and recording the host leaves a machine nobody
tracks. So the run-unique name (and the rdn it will be published as) is fsynced to
<data_dir>/rotation/pending.json *before* the call; the next run finds the droplet of that
name and adopts it instead of creating another. Cleared once the host is recorded (or the
creation is known to have failed and been cleaned up).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from oonibackend.fileutil import fsync_dir, write_atomic


class JournalError(Exception):
    """The journal exists but cannot be read: an operator must look at it."""


@dataclass(frozen=True)
class Pending:
    name: str
    rdn: str
    dns_zone: str
    started_at: dt.datetime  # naive UTC

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "rdn": self.rdn, "dns_zone": self.dns_zone,
                           "started_at": self.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")})


def read(path: Path) -> Pending | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        d = json.loads(text)
        started = dt.datetime.strptime(d["started_at"], "%Y-%m-%dT%H:%M:%SZ")
        p = Pending(name=str(d["name"]), rdn=str(d["rdn"]), dns_zone=str(d["dns_zone"]),
                    started_at=started)
    except (ValueError, KeyError, TypeError) as e:
        raise JournalError(f"unreadable creation journal {path}: {e}") from e
    if not p.name or not p.rdn:
        raise JournalError(f"incomplete creation journal {path}")
    return p


def write(path: Path, pending: Pending) -> None:
    """Durably (file and directory fsynced) before the create call."""
    write_atomic(path, pending.to_json().encode(), dir_mode=0o755)


def clear(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
