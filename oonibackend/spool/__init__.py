"""Durable measurement spool: write-ahead log with group commit, then per-measurement files.

    spool = Spool(cfg, metrics); await spool.start()         # replays a leftover WAL
    await spool.write(hour_dir, uid, body)                   # returns once durable
    forwarder = Forwarder(cfg, spool, metrics); await forwarder.start()
    forwarder.enqueue(hour_dir, uid, body)                   # background fastpath delivery

Modules: `records` (append-only record files, also under the fastpath's intake queue), `wal`
(log segments), `layout` (directories and files), `post` (a `.post` body and its published
line), `writer` (Spool), `forwarder` (Forwarder).
"""

from oonibackend.spool.forwarder import Forwarder
from oonibackend.spool.writer import Spool, SpoolError, SpoolUnavailable

__all__ = ["Forwarder", "Spool", "SpoolError", "SpoolUnavailable"]
