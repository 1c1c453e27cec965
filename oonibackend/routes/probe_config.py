"""Token-protected probe configuration files: Tor targets and the Psiphon config.

Both are operator-provided JSON files served byte for byte. Tor targets in particular must
pass through unchanged: a non-empty `source` tells the probe that a bridge is private and its
address must be scrubbed, and a schema-based re-serialisation would drop it.

Files are read off the event loop and cached by (mtime, size); a missing file serves `{}`,
an invalid one keeps the last good content (or `{}`) and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG
from oonibackend.routes.probe_auth import require_probe_token
from oonibackend.routes.probe_common import TAGS

log = logging.getLogger(__name__)

EMPTY = b"{}"


class JSONFileCache:
    """Raw bytes of small JSON files, re-read only when they change."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], bytes]] = {}

    def _load(self, path: Path) -> bytes:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._cache.pop(path, None)
            return EMPTY
        except OSError as e:
            log.error("cannot stat config file", extra={"path": str(path), "error": str(e)})
            return self._last(path)
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            data = path.read_bytes()
            parsed = jsonutil.loads(data)
        except (OSError, jsonutil.JSONDecodeError) as e:
            log.error("unreadable config file, serving the last good content",
                      extra={"path": str(path), "error": str(e)})
            return self._last(path)
        if parsed is None:
            log.error("config file holds null, serving {}", extra={"path": str(path)})
            data = EMPTY
        self._cache[path] = (stamp, data)
        return data

    def _last(self, path: Path) -> bytes:
        hit = self._cache.get(path)
        return hit[1] if hit is not None else EMPTY

    async def get(self, path: Path) -> bytes:
        return await asyncio.to_thread(self._load, path)


FILES = web.AppKey("probe_config_files", JSONFileCache)


async def files_ctx(app: web.Application) -> AsyncIterator[None]:
    app[FILES] = JSONFileCache()
    yield


def _raw_json(data: bytes) -> web.Response:
    return web.Response(body=data, content_type="application/json",
                        headers={"Cache-Control": "max-age=0, no-cache"})


_AUTH = {"in": "header", "name": "Authorization", "type": "string", "required": True,
         "description": "Bearer <probe token from /api/v1/login>"}


@docs(tags=TAGS, summary="Probe Services: Tor targets",
      description="Requires a probe token from /api/v1/login. Returns the configured targets "
                  "unchanged (including `source`).",
      parameters=[_AUTH, {"in": "query", "name": "country_code", "type": "string",
                          "description": "probe country (accepted, not used)"}],
      responses={"200": {"description": "Tor targets keyed by id"},
                 "400": {"description": "Invalid token format"},
                 "401": {"description": "Missing or invalid token"}})
async def get_tor_targets(request: web.Request) -> web.Response:
    require_probe_token(request)
    cfg = request.app[CONFIG]
    return _raw_json(await request.app[FILES].get(cfg.path(cfg.probe.tor_targets_file)))


@docs(tags=TAGS, summary="Probe Services: Psiphon data",
      description="Requires a probe token from /api/v1/login. Returns the Psiphon config.",
      parameters=[_AUTH],
      responses={"200": {"description": "Psiphon configuration"},
                 "400": {"description": "Invalid token format"},
                 "401": {"description": "Missing or invalid token"}})
async def get_psiphon_config(request: web.Request) -> web.Response:
    require_probe_token(request)
    cfg = request.app[CONFIG]
    return _raw_json(await request.app[FILES].get(cfg.path(cfg.probe.psiphon_config_file)))


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(files_ctx)
    app.router.add_get("/api/v1/test-list/tor-targets", get_tor_targets)
    app.router.add_get("/api/v1/test-list/psiphon-config", get_psiphon_config)
