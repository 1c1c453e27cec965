"""Wiring of the geolocation-anomaly check (docs/current_services.md §2).

`check_submission` is called by the collector once a measurement is durably spooled: a GeoIP
lookup of the client address (microseconds, in memory) and, on a mismatch, a counter and an
item offered to the background writer. It never raises and never awaits, so the submission's
answer is neither delayed nor changed. The `faulty_measurements` row is built and inserted by
the writer, in batches.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from oonibackend import clientip
from oonibackend.appkeys import CONFIG, DB, METRICS
from oonibackend.faulty.geoip import Mismatch, compare, row_of
from oonibackend.faulty.writer import BatchWriter
from oonibackend.geoip import GEOIP

log = logging.getLogger(__name__)

TABLE = "faulty_measurements"
COLUMNS = ("ts", "type", "probe_cc", "probe_asn", "details")
# Bodies of pending mismatches are kept until their batch is written: bound their memory.
MAX_PENDING_BYTES = 64 * 1024 * 1024
# Set by geoip_anomalies_ctx below; absent when [geoip] anomalies is off.
GEOIP_ANOMALIES = web.AppKey("geoip_anomalies", BatchWriter[Mismatch])


def _rows(items: Sequence[Mismatch]) -> list[dict[str, Any]]:
    return [row_of(m) for m in items]


def check_submission(request: web.Request, cc: str, asn: int, uid: str, body: bytes) -> None:
    """Record a geolocation mismatch of an accepted submission; never raises."""
    try:
        _check(request, cc, asn, uid, body)
    except Exception:  # a diagnostic must never fail the submission it looks at
        log.warning("geolocation anomaly check failed", exc_info=True)


def _check(request: web.Request, cc: str, asn: int, uid: str, body: bytes) -> None:
    writer = request.app.get(GEOIP_ANOMALIES)
    geo = request.app.get(GEOIP)
    if writer is None or geo is None or not geo.loaded:
        # Without GeoIP every address is ZZ / 0: each measurement would look faulty.
        return
    addr = clientip.request_address(request)
    if addr == clientip.UNKNOWN_PEER:  # not an IP peer (a Unix socket): nothing to compare
        return
    try:
        looked_cc, looked_asn, _ = geo.lookup(str(addr))
    except ValueError:
        return
    cc_differs, asn_differs = compare(looked_cc, looked_asn, cc, asn)
    if not (cc_differs or asn_differs):
        return
    metrics = request.app[METRICS]
    for kind, differs in (("cc", cc_differs), ("asn", asn_differs)):
        if differs:
            metrics.inc("geoip_mismatch_total", mismatch=kind,
                        help="Accepted measurements whose probe_cc / probe_asn differ from "
                             "a GeoIP lookup of the submitting address")
    writer.offer(Mismatch(looked_cc=(looked_cc or "ZZ").upper(), looked_asn=looked_asn or 0,
                          submission_cc=cc.upper(), submission_asn=asn, measurement_uid=uid,
                          body=body, ts=dt.datetime.now(dt.UTC)))


async def geoip_anomalies_ctx(app: web.Application) -> AsyncIterator[None]:
    """The background writer of `faulty_measurements`, flushed at shutdown (before the
    database client closes: cleanup contexts unwind in reverse order)."""
    cfg = app[CONFIG].geoip
    db = app.get(DB)
    if not cfg.anomalies or db is None:  # no database (the collector alone): nothing to record
        yield
        return

    async def sink(rows: list[dict[str, Any]]) -> None:
        await db.insert(TABLE, rows, COLUMNS)

    writer: BatchWriter[Mismatch] = BatchWriter(
        "faulty_measurements", sink, _rows, app[METRICS],
        interval=cfg.anomalies_flush_interval, max_items=cfg.anomalies_queue,
        max_bytes=MAX_PENDING_BYTES, size=lambda m: len(m.body))
    writer.start()
    app[GEOIP_ANOMALIES] = writer
    try:
        yield
    finally:
        await writer.close()
