"""`oonibackend fastpath ...`: the fastpath daemon and its offline tools.

    oonibackend fastpath [serve]     the daemon (feeder, queue, workers, sink); `run` starts it
    oonibackend fastpath score [--fingerprints DIR] [--uid UID] FILE...
    oonibackend fastpath reprocess --start-day D --end-day D [--cc CC] [--testname T]
                                   [--source DIR_OR_S3]

The tools are imported only when used, so the daemon does not pay for them.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from oonibackend.config import Config


class _SubcommandKeepsParentOptions(argparse._SubParsersAction):
    """argparse lets a subcommand's defaults (None) overwrite options given before it
    (`fastpath --config X serve`); keep the values given to the parent instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        given = {k: v for k, v in vars(namespace).items() if v is not None}
        super().__call__(parser, namespace, values, option_string)
        for k, v in given.items():
            if getattr(namespace, k, None) is None:
                setattr(namespace, k, v)


def _day(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {value!r}") from e


def _daemon_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fastpath-port", type=int, metavar="PORT",
                   help="feeder listen port (default from config: 8472)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="scoring processes (default from config; 0: one per core)")
    p.set_defaults(func=daemon)


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fastpath", parents=parents, help="the fastpath daemon and tools (score, reprocess)",
        description="Without a subcommand: the fastpath daemon (same as `fastpath serve`). "
        "It accepts measurements from the API on POST /<uid>, queues them durably, scores "
        "them in worker processes and inserts the rows into ClickHouse in batches.")
    _daemon_options(p)
    tools = p.add_subparsers(dest="fastpath_command", metavar="SUBCOMMAND",
                             action=_SubcommandKeepsParentOptions)

    s = tools.add_parser("serve", parents=parents, help="run the fastpath daemon (default)",
                         description="Run the fastpath daemon in the foreground; SIGTERM "
                         "stops it cleanly.")
    _daemon_options(s)

    sc = tools.add_parser(
        "score", parents=parents, help="score measurement files and print the rows (no database)",
        description="Run the fastpath pipeline on files (measurement JSON, .post bodies, "
        "JSON lines, postcans, legacy cans) and print one JSON line per table row.")
    sc.add_argument("--fingerprints", metavar="DIR",
                    help="directory with fingerprints_dns/http (.csv or .json); default none")
    sc.add_argument("--uid", metavar="UID",
                    help="measurement uid for every measurement (enables the date check)")
    sc.add_argument("files", nargs="+", metavar="FILE", help="input files ('-': stdin)")
    sc.set_defaults(func=score)

    rp = tools.add_parser(
        "reprocess", parents=parents, help="score archived measurements again into the database",
        description="Re-score the measurements of a date range from the bucket (or a local "
        "directory laid out like it) and insert the rows; duplicates collapse in "
        "ClickHouse.")
    rp.add_argument("--start-day", type=_day, required=True, metavar="YYYY-MM-DD",
                    help="first day (inclusive)")
    rp.add_argument("--end-day", type=_day, required=True, metavar="YYYY-MM-DD",
                    help="last day (exclusive)")
    rp.add_argument("--cc", metavar="CC[,CC]", help="only these probe country codes")
    rp.add_argument("--testname", metavar="T[,T]",
                    help="only these test names (without underscores, e.g. webconnectivity)")
    rp.add_argument("--dry-run", action="store_true", help="score but insert nothing")
    rp.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="skip objects a previous run of the same range completed")
    rp.add_argument("--source", metavar="DIR_OR_S3",
                    help="local directory or s3://bucket (default: the configured store)")
    rp.set_defaults(func=reprocess)


def daemon(args: argparse.Namespace, cfg: Config) -> int:
    from workers import service

    if getattr(args, "workers", None) is not None:
        cfg.fastpath.workers = args.workers
    return service.main(cfg)


def score(args: argparse.Namespace, cfg: Config) -> Any:
    from workers.score_cli import run_score

    return run_score(args, cfg)


def reprocess(args: argparse.Namespace, cfg: Config) -> Any:
    from workers.reprocess import run_reprocess

    return run_reprocess(args, cfg)
