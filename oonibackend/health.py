"""What /health reports: the parts an instance needs to accept and store measurements, probed
in the background so that the route itself does no I/O and answers at once, even while the
database hangs.

Every `interval` seconds one round probes, concurrently and each within `timeout` seconds:
* the database: an authenticated `SELECT 1`. Embedded, the owner accepts only this instance's
  key, so a success also proves it is this instance's database; the schema must also be at
  the version this code migrates to;
* the fastpath: `GET <feeder>/health` with the instance's key on each configured feeder;
* the spool: its directory writable, with at least `spool.min_free_mb` free;
* anonymous credentials: a manifest and its key are loaded (no I/O: the service says);
* reference data (every `REFDATA_EVERY` seconds, it changes only by imports): test lists,
  fingerprints, ASN names, GeoIP (`refdata`).
A probe still running after `timeout` counts as failed (a hung database is reported within
about two seconds, not after the driver's read timeout).

The database check is also the probe of the API's circuit breaker (`storage.breaker`, via
`Database.probe`, limited to `database.probe_timeout`): when it gets no answer, reads are
refused with a 503 at once until it gets one again. One probe serves both.

Status, in the shape of OONI's current services: `fail` (HTTP 503) when measurements cannot
be accepted and stored (database unreachable or not ours, spool unwritable or full); else
`degraded` (HTTP 200) when they wait (fastpath unreachable), would be scored without
reference data or stored unverified (no credential keys); else `ok`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from oonibackend import refdata
from oonibackend.storage import Database, DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger(__name__)

# ClickHouse's error code for a wrong password (the drivers set DatabaseError.code).
AUTHENTICATION_FAILED = 516
INTERVAL = 1.0
TIMEOUT = 0.8
REFDATA_EVERY = 30.0

# Errors that mean the instance cannot accept and store measurements (HTTP 503).
FATAL = frozenset({"clickhouse_error", "database_not_this_instance", "database_schema_outdated",
                   "spool_not_writable", "spool_low_space", "spool_recovery_pending"})
# Reference dataset (refdata name) -> the error reported while it is empty.
_EMPTY = {"citizenlab": "empty_test_lists", "fingerprints": "empty_fingerprints",
          "asnmeta": "empty_asn_names", "geoip": "no_geoip"}


@dataclass
class Report:
    """The latest round: errors in a stable order, and what each check saw."""

    errors: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    at: float = 0.0

    @property
    def status(self) -> str:
        if any(e in FATAL for e in self.errors):
            return "fail"
        return "degraded" if self.errors else "ok"


async def _timed(coro: Awaitable[Any], timeout: float) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = await asyncio.wait_for(coro, timeout)
    return out, round((time.monotonic() - t0) * 1000, 1)


class Monitor:
    """Probes in the background; `report()` is what /health serves."""

    def __init__(self, cfg: Config, db: Database, schema_version: int,
                 interval: float = INTERVAL, timeout: float = TIMEOUT,
                 db_timeout: float | None = None, spool: Any = None,
                 anonc: Any = None) -> None:
        self.cfg = cfg
        self.db = db
        # The API's spool (oonibackend.spool.Spool): its start-up WAL replay may be pending.
        self.spool = spool
        # The anonymous-credential service (oonibackend.anonc.service), None when disabled.
        self.anonc = anonc
        self.schema_version = schema_version
        self.interval = interval
        self.timeout = timeout
        # The database check is the circuit breaker's probe: its own limit.
        self.db_timeout = cfg.database.probe_timeout if db_timeout is None else db_timeout
        self._report = Report()
        self._refdata: dict[str, int] | None = None
        self._refdata_at = 0.0
        self._session: aiohttp.ClientSession | None = None

    def report(self) -> Report:
        return self._report

    # -- the checks --------------------------------------------------------------------------

    async def _database(self) -> tuple[list[str], dict[str, Any]]:
        try:
            # probe(): sent even while the breaker refuses reads, and it limits itself to
            # db_timeout (an outer limit of the same length could cancel it unrecorded).
            rows, ms = await _timed(self.db.probe(
                "SELECT max(version) AS v FROM schema_migrations", self.db_timeout),
                self.db_timeout + 1.0)
        except TimeoutError:
            return ["clickhouse_error"], {"ok": False, "error": f"no answer within "
                                                                 f"{self.db_timeout:g} s"}
        except DatabaseError as e:
            if getattr(e, "code", None) == AUTHENTICATION_FAILED:
                return ["database_not_this_instance"], {
                    "ok": False, "error": "the database refused this instance's key"}
            return ["clickhouse_error"], {"ok": False, "error": str(e)[:200]}
        version = int(rows[0]["v"] or 0) if rows else 0
        check = {"ok": True, "latency_ms": ms, "schema_version": version}
        if version < self.schema_version:
            check.update(ok=False, error=f"schema at version {version}, expected "
                                         f"{self.schema_version}: run `oonibackend db migrate`")
            return ["database_schema_outdated"], check
        return [], check

    async def _fastpath(self) -> tuple[list[str], dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.cfg.internal_key()}"},
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        urls = self.cfg.fastpath_urls()
        last = ""
        for url in urls:
            try:
                async with self._session.get(url + "health") as r:
                    if 200 <= r.status < 300:
                        return [], {"ok": True, "url": url}
                    last = f"{url}: HTTP {r.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                last = f"{url}: {type(e).__name__} {e}".strip()
        return ["fastpath_connection_error"], {"ok": False, "urls": urls, "error": last[:200]}

    async def _spool_check(self) -> tuple[list[str], dict[str, Any]]:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._spool), self.timeout)
        except TimeoutError:
            return ["spool_not_writable"], {"ok": False, "error": "the spool's filesystem "
                                                                  "does not answer"}

    def _spool(self) -> tuple[list[str], dict[str, Any]]:
        d = self.cfg.path(self.cfg.spool.dir)
        need = self.cfg.spool.min_free_mb * 1024 * 1024
        try:
            free = shutil.disk_usage(d).free
        except OSError as e:
            return ["spool_not_writable"], {"ok": False, "error": f"{d}: {e.strerror or e}"}
        check: dict[str, Any] = {"ok": True, "free_bytes": free}
        spool = self.spool
        if spool is not None and spool.recovery_pending:
            # Started on a full (or failing) disk: submissions are refused until the WAL
            # replay, retried in the background, succeeds.
            check.update(ok=False, error=f"WAL recovery pending: {spool.recovery_error}")
            errors = ["spool_recovery_pending"]
            if free < need:
                errors.append("spool_low_space")
            return errors, check
        if not os.access(d, os.W_OK | os.X_OK):
            check.update(ok=False, error=f"{d} is not writable")
            return ["spool_not_writable"], check
        if free < need:
            check.update(ok=False, error=f"{free} bytes free, below spool.min_free_mb")
            return ["spool_low_space"], check
        return [], check

    async def _anonc(self) -> tuple[list[str], dict[str, Any]]:
        svc = self.anonc
        if svc is None:
            return [], {"ok": None, "enabled": False}
        if svc.current is None:
            # OONI's current service reports the same error name for an unusable manifest.
            return ["bad_anonc_manifest"], {"ok": False, "error": svc.error[:200]}
        return [], {"ok": True, "manifest_version": svc.current.manifest.version}

    async def _reference(self) -> tuple[list[str], dict[str, Any]]:
        now = time.monotonic()
        if self._refdata is None or now - self._refdata_at >= REFDATA_EVERY:
            try:
                self._refdata, _ = await _timed(refdata.status(self.db, self.cfg), self.timeout)
                self._refdata_at = now
            except (DatabaseError, TimeoutError):
                pass  # the database check reports it; keep the last known counts
        if self._refdata is None:
            return [], {"ok": None}
        empty = refdata.empty(self._refdata)
        check: dict[str, Any] = {"ok": not empty, **self._refdata}
        if empty:
            check["advice"] = refdata.advice(empty)
        return [_EMPTY.get(name, f"empty_{name}") for name in empty], check

    async def round(self) -> Report:
        results = await asyncio.gather(self._database(), self._fastpath(), self._spool_check(),
                                       self._anonc(), self._reference())
        report = Report(at=time.time())
        for name, (errors, check) in zip(
                ("database", "fastpath", "spool", "anonymous_credentials", "reference_data"),
                results, strict=True):
            report.errors.extend(errors)
            report.checks[name] = check
        if report.errors != self._report.errors:
            (log.warning if report.errors else log.info)(
                "health: %s", report.status, extra={"errors": report.errors})
        self._report = report
        return report

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.round()
            except Exception:  # a bug in a check must not stop the monitor
                log.exception("health round failed")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@contextlib.asynccontextmanager
async def monitoring(monitor: Monitor) -> AsyncIterator[Monitor]:
    """Run `monitor` in the background, its first round done (or timed out) before yielding."""
    from oonibackend.background import refreshing

    try:
        async with refreshing("health-monitor", monitor.round, monitor.run,
                              first_wait=max(monitor.timeout, monitor.db_timeout) + 0.5):
            yield monitor
    finally:
        await monitor.close()
