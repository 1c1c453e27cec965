"""Typed keys for what the aiohttp application carries (no module-level state)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from oonibackend.config import Config
from oonibackend.health import Monitor
from oonibackend.metrics import Metrics
from oonibackend.storage import Database

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
DB = web.AppKey("db", Database)
CORS = web.AppKey("cors", Any)
# Filled by their components' cleanup contexts; typed loosely to keep imports one-way.
GEOIP = web.AppKey("geoip", Any)
SPOOL = web.AppKey("spool", Any)
FORWARDER = web.AppKey("forwarder", Any)
QUOTAS = web.AppKey("quotas", Any)
TEST_LISTS = web.AppKey("test_lists", Any)
READ_CACHE = web.AppKey("read_cache", Any)
BODIES = web.AppKey("bodies", Any)
GEOIP_ANOMALIES = web.AppKey("geoip_anomalies", Any)  # faulty.writer.BatchWriter
VPN = web.AppKey("vpn", Any)  # vpn.service.VPNConfigService
ANONC = web.AppKey("anonc", Any)  # anonc.service.AnoncService (absent when disabled)
HEALTH = web.AppKey("health", Monitor)
