"""`oonibackend serve`: the API process alone (production; `run` starts it too)."""

from __future__ import annotations

import argparse
import logging

import uvloop
from aiohttp import web

from oonibackend.config import Config

log = logging.getLogger("oonibackend.serve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the API server alone",
                       description="Serve every API route (probe services, submission, reads).")
    p.add_argument("--host", help="listen address (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default from config: 8000)")
    p.add_argument("--fastpath-port", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend.app import make_app

    uvloop.install()
    app = make_app(cfg)
    log.info("API listening", extra={"host": cfg.server.host, "port": cfg.server.port})
    web.run_app(app, host=cfg.server.host, port=cfg.server.port, access_log=None,
                print=None, shutdown_timeout=10.0, reuse_port=True)
    return 0
