"""Command line: `oonibackend <command>`; every command has --help.

    oonibackend run       whole backend on embedded defaults, in the foreground
    oonibackend serve     the API process alone (production)
    oonibackend db ...    migrate / exec against the configured database
    oonibackend update-citizenlab --source DIR_OR_GIT_URL
    oonibackend update-fingerprints --source DIR_OR_URL
    oonibackend fastpath [serve|score|reprocess]
    oonibackend upload [--dry-run] [--hour YYYYMMDDHH]
    oonibackend update-asnmeta / download-geoip / backup / export / restore / rotate / detect
    oonibackend account-role EMAIL [--role user|admin]
    oonibackend anonc-rotate [--policy-only]          new anonymous-credential keys
    oonibackend bootstrap [--only NAMES] [--force]   load every reference dataset
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys

from oonibackend import __version__, config, logs

# Command modules: each has add_parser(subparsers) setting `func` (sync or async, (args, cfg)).
_COMMANDS = ("oonibackend.supervisor", "oonibackend.serve", "oonibackend.cli_db",
             "oonibackend.citizenlab.cli", "workers.fingerprints_update", "workers.cli",
             "oonibackend.upload.cli", "oonibackend.asnmeta.cli", "oonibackend.geoip_download",
             "oonibackend.backup.cli", "oonibackend.rotation.cli", "oonibackend.detector.cli",
             "oonibackend.accounts.cli", "oonibackend.bootstrap", "oonibackend.anonc.cli")


def datetime_arg(value: str):
    """argparse type for a time option: `YYYY-MM-DD` or ISO 8601 (`Z` or an offset), as a
    naive UTC datetime; the same parser as the API's `since`/`until`."""
    from oonibackend.errors import APIError
    from oonibackend.routes.params import parse_datetime

    try:
        return parse_datetime(value, "time")
    except APIError:
        raise argparse.ArgumentTypeError(f"not a date or ISO time: {value!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: built-in defaults)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default: ./var)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oonibackend",
        description="OONI-compatible measurement backend: probe services, fastpath, read API.",
    )
    parser.add_argument("--version", action="version", version=f"oonibackend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # command not built yet
            raise
        before = set(sub.choices)
        mod.add_parser(sub)
        for cmd in set(sub.choices) - before:
            _common(sub.choices[cmd])
            for nested in _subparsers(sub.choices[cmd]):
                _common(nested)
    return parser


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.extend(action.choices.values())
    return out


def load_config(args: argparse.Namespace) -> config.Config:
    overrides = {
        "data_dir": getattr(args, "data_dir", None),
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "fastpath.port": getattr(args, "fastpath_port", None),
    }
    return config.load(getattr(args, "config", None), **overrides)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
    except config.ConfigError as e:
        print(f"oonibackend: {e}", file=sys.stderr)
        sys.exit(2)
    logs.setup(cfg.logging.level, cfg.logging.format)
    func = getattr(args, "func", None)
    if func is None:
        print("oonibackend: missing subcommand (see --help)", file=sys.stderr)
        sys.exit(2)
    try:
        rc = func(args, cfg)
        if asyncio.iscoroutine(rc):
            import uvloop

            rc = uvloop.run(rc)
    except KeyboardInterrupt:
        rc = 130
    except Exception as e:  # a clear message, the traceback only in the debug log
        logging.getLogger("oonibackend").debug("command failed", exc_info=True)
        print(f"oonibackend: error: {e}", file=sys.stderr)
        rc = 1
    sys.exit(rc or 0)
