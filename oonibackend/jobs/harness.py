"""What every job command shares: progress lines, the database, failures as exit codes.

A job (upload, backup/export/restore, the four reference-data importers, detect, rotate,
account-role, bootstrap, db) runs once, by hand or from a systemd timer, and ends. Its
progress goes to stdout a line at a time, flushed (the journal shows a run as it goes); a
failure is one line `<prog>: <reason>` on stderr and an exit status of
oonibackend/exitcodes.py, which the units and the tests rely on.

With the embedded driver a job must not open chdb while the owner runs (one process per
directory): if the owner lock is free the job opens chdb itself and holds the lock until it
ends; otherwise it goes through the running owner's HTTP interface. Other drivers connect
to the configured server.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oonibackend import storage
from oonibackend.exitcodes import EXIT_FAILED, EXIT_USAGE
from oonibackend.jobs import metrics as jobmetrics
from oonibackend.storage import Database, DatabaseUnavailable

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger(__name__)


def say(msg: str) -> None:
    """One progress line on stdout, flushed at once."""
    print(msg, flush=True)


@contextlib.asynccontextmanager
async def open_database(cfg: Config) -> AsyncIterator[Database]:
    """The database for an offline job; chdb in-process only while holding the owner lock."""
    fd = None
    if cfg.database.driver == "embedded":
        from oonibackend.storage import owner

        fd = owner.try_lock(cfg)
    db: Database = storage.connect(cfg, direct=fd is not None)
    try:
        yield db
    finally:
        try:
            await db.close()
        finally:
            if fd is not None:
                from oonibackend.storage import owner

                owner.release_lock(fd)


@dataclass(frozen=True)
class Job:
    """One job command, named in its messages by `prog` (e.g. `oonibackend detect`)."""

    prog: str

    say = staticmethod(say)

    def fail(self, reason: str, code: int = EXIT_FAILED) -> int:
        """Report `reason` on stderr; the exit status `code`, for the caller to return."""
        print(f"{self.prog}: {reason}", file=sys.stderr)
        return code

    def usage(self, reason: str) -> int:
        """Bad options or configuration: nothing was done."""
        return self.fail(reason, EXIT_USAGE)

    def error(self, e: BaseException) -> int:
        """A run that failed on `e`: the message, with the traceback in the debug log only."""
        log.debug("%s failed", self.prog, exc_info=e)
        what = "database unavailable" if isinstance(e, DatabaseUnavailable) else "error"
        return self.fail(f"{what}: {e}")

    @contextlib.asynccontextmanager
    async def database(self, cfg: Config, *, migrate: bool = True) -> AsyncIterator[Database]:
        """The database, migrated first (a fresh data directory has no tables yet) unless
        `migrate` is false (a dry run changes nothing)."""
        async with open_database(cfg) as db:
            if migrate:
                from oonibackend.storage.migrate import migrate as apply_migrations

                await apply_migrations(db)
            yield db

    def write_metrics(self, args: argparse.Namespace, cfg: Config, name: str, ok: bool,
                      seconds: float, values: Mapping[str, tuple[str, float]]) -> None:
        """The run's metrics file (oonibackend/jobs/metrics.py); one that cannot be written is
        a warning, never the job's failure."""
        path = jobmetrics.path_for(args, cfg, name)
        try:
            jobmetrics.write(path, name, ok, seconds, values)
        except OSError as e:
            log.warning("cannot write the metrics file", extra={"path": str(path),
                                                                "error": str(e)})
