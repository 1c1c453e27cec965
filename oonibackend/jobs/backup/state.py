"""Resume state of the backup job: `<backup.dir>/state.json`, rewritten atomically after
every finished chunk.

It records the run id, each table's planned chunks and columns (so a resumed run produces
the same objects as the interrupted one) and the finished chunks with their row counts and
sha256 (so they are not read again). A run whose tables all have their manifest written is
complete; an incomplete run is resumed by the next invocation, whatever the day.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from oonibackend.fileutil import write_atomic
from oonibackend.jobs.backup.plan import Chunk

VERSION = 1


class StateError(Exception):
    """The state file exists but cannot be used."""


class TableState:
    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    @property
    def planned(self) -> bool:
        return "chunks" in self.d

    @property
    def chunks(self) -> list[Chunk]:
        return [Chunk.from_json(c) for c in self.d.get("chunks", [])]

    @property
    def columns(self) -> list[dict[str, str]]:
        return list(self.d.get("columns", []))

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.d.get("info", {}))

    @property
    def done(self) -> dict[str, dict[str, Any]]:
        return self.d.setdefault("done", {})

    @property
    def finished(self) -> bool:
        return bool(self.d.get("manifest"))

    def set_plan(self, chunks: list[Chunk], columns: list[dict[str, str]],
                 info: dict[str, Any]) -> None:
        self.d.update(chunks=[c.to_json() for c in chunks], columns=columns, info=info,
                      done={}, manifest=False)

    def finish(self) -> None:
        self.d["manifest"] = True


class BackupState:
    def __init__(self, path: Path, d: dict[str, Any]) -> None:
        self.path = path
        self.d = d

    @classmethod
    def new(cls, path: Path, run: str, now: dt.datetime) -> BackupState:
        return cls(path, {"version": VERSION, "run": run, "complete": False,
                          "started": now.astimezone(dt.UTC).isoformat(), "tables": {}})

    @classmethod
    def load(cls, path: Path) -> BackupState | None:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StateError(f"unreadable backup state {path}: {e} (remove it to start a "
                             "new run)") from e
        if not isinstance(d, dict) or d.get("version") != VERSION or "run" not in d:
            raise StateError(f"backup state {path} has an unknown layout (remove it to start "
                             "a new run)")
        return cls(path, d)

    @property
    def run(self) -> str:
        return str(self.d["run"])

    @property
    def complete(self) -> bool:
        return bool(self.d.get("complete"))

    @complete.setter
    def complete(self, value: bool) -> None:
        self.d["complete"] = value

    def table(self, name: str) -> TableState:
        return TableState(self.d["tables"].setdefault(name, {}))

    def save(self) -> None:
        """Write atomically and durably: a crash leaves the previous or the new state."""
        write_atomic(self.path, json.dumps(self.d, indent=1, sort_keys=True).encode(),
                     dir_mode=0o755)
