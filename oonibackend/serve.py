"""`oonibackend serve`: the API process alone (production; `run` starts it too)."""

from __future__ import annotations

import argparse
import logging
import socket

import uvloop

from oonibackend.config import Config
from oonibackend.exitcodes import EXIT_CANNOT_LISTEN

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", parents=parents, help="run the API server alone",
                       description="Serve every API route (probe services, submission, reads).")
    p.add_argument("--host", help="listen address (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default from config: 8000)")
    p.add_argument("--fastpath-port", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=serve)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the app starts so that a taken address is one clear
    error. No SO_REUSEPORT: a second API on the same port must fail, not share the probes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def serve(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend import httpserver
    from oonibackend.app import make_app

    host, port = cfg.server.host, cfg.server.port
    try:
        sock = listen(host, port)
    except OSError as e:
        log.error("API cannot listen on %s:%s: %s", host, port, e.strerror or e)
        return EXIT_CANNOT_LISTEN
    uvloop.install()
    app = make_app(cfg)
    log.info("API listening", extra={"host": host, "port": port})
    # web.run_app, with request header and body deadlines (oonibackend/httpserver.py).
    httpserver.run_app(app, sock, cfg.server, shutdown_timeout=10.0)
    return 0
