"""Bodies still in a spool: `<spool>/incoming/<hour dir>/<uid>.post` (see spool/layout.py).

A `.post` file holds what the probe sent; the body served is the line the uploader publishes
(spool/post.py), so a measurement reads the same before and after the upload.

Unlike legacy (docs/api.md §4 bug 9: a hard-coded /var/lib/ooniapi path), the directory is
the configured `[spool] dir`. Blocking file I/O: call `read_local` from a thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from oonibackend import ids
from oonibackend.spool import layout
from oonibackend.spool.post import measurement_of, published_line

log = logging.getLogger(__name__)


def unwrap_post(data: bytes, uid: str) -> bytes | None:
    """The body of a `.post` file's bytes; None unless it holds a JSON measurement."""
    content = measurement_of(data)
    if content is None:
        return None
    return published_line(content, uid)


def post_file(spool_dir: Path, hour_dir: str, uid: str) -> Path:
    """Path of a spooled measurement; ValueError unless both names are well-formed."""
    return Path(layout.post_path(spool_dir / layout.INCOMING, hour_dir, uid))


def read_post(spool_dir: Path, hour_dir: str, uid: str, max_size: int) -> bytes | None:
    """The raw `.post` bytes (None when absent or larger than `max_size`). Blocking."""
    path = post_file(spool_dir, hour_dir, uid)
    try:
        with open(path, "rb") as f:
            data = f.read(max_size + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > max_size:
        log.warning("spool file too large to serve", extra={"uid": uid})
        return None
    return data


def read_local(spool_dir: Path, uid: str, max_size: int) -> bytes | None:
    """The body of a measurement in this host's spool, or None. Blocking."""
    if not ids.is_valid_uid(uid):
        return None
    data = read_post(spool_dir, ids.hour_dir_of(uid), uid, max_size)
    return None if data is None else unwrap_post(data, uid)
