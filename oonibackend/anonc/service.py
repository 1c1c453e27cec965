"""The API's anonymous-credential service: current keys (reloaded when the files change) and
the library's calls, run off the event loop with bounded concurrency.

Measured with ooniauth-py 0.3.3 on the 2-core machine (bench/anonc.py): one proof check
(handle_submit_request_with_hash) takes about 10 ms of CPU and releases the GIL (40 checks:
0.40 s on one thread, 0.21 s on two; a pure-Python loop on the event-loop thread keeps 77 %
of its speed while a check runs), signing a credential about 0.5 ms. So a thread pool, not a
process pool (which would add IPC of 8 KB proofs for nothing). It has one thread less than
the machine has cores (at least one), so the event loop keeps a core; at most
`[anonc] max_pending` checks wait for it, beyond that a submission with a proof is answered
503 with Retry-After (the probe falls back to a plain submission) instead of piling up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from oonibackend.anonc import keys
from oonibackend.anonc.verdict import FAILED, VERIFIED, Check, Verdict, library_error

if TYPE_CHECKING:
    from oonibackend.config import Config
    from oonibackend.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class Busy(Exception):
    """Too many proofs waiting for a verification thread."""


class AnoncService:
    def __init__(self, cfg: Config, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        threads = cfg.anonc.verify_threads or max(1, (os.cpu_count() or 2) - 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="anonc")
        self._pending = 0
        self._task: asyncio.Task[None] | None = None
        self.current: keys.Credentials | None = None
        # Why there are no usable keys (served by /health), "" once there are.
        self.error = ""

    async def start(self) -> None:
        """Load (or, embedded, generate) the keys. Unusable files do not stop the API (it
        must keep collecting measurements): it says why, serves no manifest (submissions are
        stored unverified) and keeps trying every reload_interval."""
        try:
            self.current = await asyncio.to_thread(keys.ensure, self.cfg)
            log.info("anonymous credentials: manifest version %s",
                     self.current.manifest.version)
        except keys.KeyFileError as e:
            self.error = str(e)
            log.error("anonymous credentials unavailable: %s", e)
        self.metrics.set("anonc_pending_verifications", lambda: float(self._pending),
                         help="Proofs being checked or waiting for a verification thread")
        if self.cfg.anonc.reload_interval > 0:
            self._task = asyncio.create_task(self._reload_loop(), name="anonc-reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def reload(self) -> bool:
        """Swap in the files' manifest and key if they changed (a rotation); the old ones
        stay in use while the new files are unreadable or do not match."""
        cur = self.current
        stamp = await asyncio.to_thread(keys.stamp, self.cfg)
        if cur is not None and stamp == cur.stamp:
            return False
        try:
            new = await asyncio.to_thread(keys.load, self.cfg)
        except keys.KeyFileError as e:
            if cur is None:
                self.error = str(e)
            log.warning("anonymous credentials not reloaded: %s", e)
            return False
        if cur is None or new.manifest.version != cur.manifest.version \
                or new.manifest.public_parameters != cur.manifest.public_parameters:
            log.info("anonymous credentials: manifest version %s", new.manifest.version)
        self.current, self.error = new, ""
        return True

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.anonc.reload_interval)
            try:
                await self.reload()
            except Exception:
                log.exception("anonymous-credential reload failed")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pending >= self.cfg.anonc.max_pending:
            self.metrics.inc("anonc_busy_total",
                             help="Credential requests refused: verification queue full")
            raise Busy
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._pending -= 1

    async def verify(self, creds: keys.Credentials, check: Check) -> Verdict:
        """The library's verdict on a proof (`creds`: the keys the precheck used)."""
        def run() -> Verdict:
            try:
                resp = creds.server.handle_submit_request_with_hash(
                    check.nym, check.zkp_request, check.probe_cc, check.probe_asn,
                    check.content, check.age, check.min_measurement_count)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 - a Rust panic is a BaseException
                return Verdict(FAILED, library_error(e))
            return Verdict(VERIFIED, submit_response=resp)

        verdict = await self._run(run)
        self.metrics.inc("anonc_verifications_total", help="Proofs checked, by verdict",
                         status=verdict.status, error=verdict.error or "")
        return verdict

    async def sign(self, creds: keys.Credentials, request: str) -> str:
        """The library's answer to a credential sign request (raises its errors)."""
        def run() -> str:
            try:
                return creds.server.handle_registration_request(request)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:
                raise
            except BaseException as e:  # noqa: BLE001 - a Rust panic
                raise RuntimeError("credential sign request refused") from e

        return await self._run(run)
