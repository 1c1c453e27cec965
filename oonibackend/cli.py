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
from oonibackend.exitcodes import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE

log = logging.getLogger(__name__)

# Every command module, in --help order: each has add_parser(subparsers, parents), which adds
# its commands with `parents=parents` (the common options) and sets `func` (sync or async,
# (args, cfg) -> exit status). All are imported at start: a module that fails to import stops
# the CLI with its error instead of its commands quietly missing (tests/unit/test_cli.py).
# Names, not imports: the fastpath's (`workers`) is a package of its own.
COMMANDS = (
    "oonibackend.supervisor", "oonibackend.serve", "oonibackend.cli_db",
    "oonibackend.jobs.citizenlab.cli", "oonibackend.jobs.fingerprints.cli", "workers.cli",
    "oonibackend.jobs.upload.cli", "oonibackend.jobs.asnmeta.cli", "oonibackend.jobs.geoip.cli",
    "oonibackend.jobs.backup.cli", "oonibackend.jobs.rotation.cli",
    "oonibackend.jobs.detector.cli", "oonibackend.accounts.cli", "oonibackend.jobs.bootstrap",
    "oonibackend.anonc.cli",
)


def datetime_arg(value: str):
    """argparse type for a time option: `YYYY-MM-DD` or ISO 8601 (`Z` or an offset), as a
    naive UTC datetime; the same parser as the API's `since`/`until`."""
    from oonibackend import validate

    try:
        return validate.date_time(value, "time")
    except validate.InvalidValue:
        raise argparse.ArgumentTypeError(f"not a date or ISO time: {value!r}") from None


def common_options() -> argparse.ArgumentParser:
    """The options of every command and subcommand, for `parents=`."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: built-in defaults)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default: ./var)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oonibackend",
        description="OONI-compatible measurement backend: probe services, fastpath, read API.",
    )
    parser.add_argument("--version", action="version", version=f"oonibackend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parents = [common_options()]
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub, parents)
    return parser


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
        sys.exit(EXIT_CONFIG)
    logs.setup(cfg.logging.level, cfg.logging.format)
    func = getattr(args, "func", None)
    if func is None:
        print("oonibackend: missing subcommand (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        rc = func(args, cfg)
        if asyncio.iscoroutine(rc):
            import uvloop

            rc = uvloop.run(rc)
    except KeyboardInterrupt:
        rc = EXIT_INTERRUPTED
    except Exception as e:  # a clear message, the traceback only in the debug log
        log.debug("command failed", exc_info=True)
        print(f"oonibackend: error: {e}", file=sys.stderr)
        rc = EXIT_FAILED
    sys.exit(rc or 0)
