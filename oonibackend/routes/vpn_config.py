"""GET /api/v2/ooniprobe/vpn-config/{provider}: OpenVPN credentials and endpoints for probes
(docs/current_services.md §3). The caching and refresh rules live in oonibackend.vpn.service.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.appkeys import CONFIG, DB, METRICS
from oonibackend.errors import APIError
from oonibackend.vpn.riseup import RiseupVPN
from oonibackend.vpn.service import Unavailable, VPNConfigService, answer

NOT_FOUND = "provider not found"  # OONI's `detail`, also our `error`
# Set by vpn_ctx below.
VPN = web.AppKey("vpn", VPNConfigService)


@docs(summary="Probe Services: VPN configuration",
      description="OpenVPN `config` (ca, cert, key) and up to four `endpoints` picked at "
      "random for a provider (only `riseupvpn`); `country_code` is ignored. 404 for an "
      "unknown provider, 503 when nothing is cached and the provider cannot be reached.")
async def vpn_config(request: web.Request) -> web.Response:
    service = request.app[VPN]
    name = request.match_info["provider"]
    # Checked before anything else: an unknown name never reaches the database or a provider.
    if not service.known(name):
        raise APIError(NOT_FOUND, 404, detail=NOT_FOUND)
    try:
        entry = await service.get(name)
    except Unavailable as e:
        err = APIError("VPN provider unreachable and no configuration cached yet, retry later",
                       503, detail="could not fetch credentials")
        err.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
        raise err from None
    return jsonutil.response(answer(entry, service.rng), cache=0)


async def vpn_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG].vpn
    riseup = RiseupVPN(cfg.riseupvpn_api_url, cfg.fetch_timeout)
    service = VPNConfigService(app[DB], {riseup.name: riseup}, app[METRICS],
                               refresh=cfg.vpn_credential_refresh_hours * 3600,
                               retry=cfg.retry_interval)
    app[VPN] = service
    try:
        yield
    finally:
        await service.close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(vpn_ctx)
    app.router.add_get("/api/v2/ooniprobe/vpn-config/{provider}", vpn_config)
