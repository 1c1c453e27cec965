"""Typed keys for what every part of the aiohttp application reads: the configuration, the
metrics registry and the database client, set up by `app.make_app`.

Each other key is declared beside the component that creates its value and owns its cleanup
context, as aiohttp recommends (e.g. `SPOOL` in routes/collector.py, `GEOIP` in geoip.py),
typed with the value's class.
"""

from __future__ import annotations

from aiohttp import web

from oonibackend.config import Config
from oonibackend.metrics import Metrics
from oonibackend.storage import Database

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
DB = web.AppKey("db", Database)
