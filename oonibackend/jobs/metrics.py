"""Metrics of the timer jobs (upload, backup, detect, ...) as Prometheus text files.

A job runs, ends and is gone before anything could scrape it, so each run writes its figures to
`<data_dir>/metrics/<job>.prom` (atomically) for node_exporter's textfile collector. The text is
made by prometheus-client, from a registry of its own per run (never the library's global one).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from oonibackend.fileutil import write_atomic

if TYPE_CHECKING:
    from oonibackend.config import Config


def default_path(cfg: Config, job: str) -> Path:
    return cfg.path("metrics") / f"{job}.prom"


def add_option(parser: argparse.ArgumentParser, job: str) -> None:
    """The `--metrics-file` option every timer job has."""
    parser.add_argument("--metrics-file", metavar="FILE",
                        help="Prometheus text file written at the end "
                             f"(default <data_dir>/metrics/{job}.prom)")


def path_for(args: argparse.Namespace, cfg: Config, job: str) -> Path:
    """Where this run writes its metrics: `--metrics-file`, else the default."""
    return Path(args.metrics_file) if args.metrics_file else default_path(cfg, job)


def _registry(job: str, ok: bool, seconds: float, values: Mapping[str, tuple[str, float]],
              now: float | None = None) -> CollectorRegistry:
    base: dict[str, tuple[str, float]] = {
        "timestamp_seconds": (f"End of the latest {job} run", now or time.time()),
        "success": (f"1 when the latest {job} run succeeded", 1 if ok else 0),
        "seconds": (f"Duration of the latest {job} run", round(seconds, 3)),
    }
    base.update(values)
    registry = CollectorRegistry()
    for suffix, (help_, v) in base.items():
        Gauge(f"oonibackend_{job}_last_run_{suffix}", help_, registry=registry).set(v)
    return registry


def render(job: str, ok: bool, seconds: float, values: Mapping[str, tuple[str, float]],
           now: float | None = None) -> str:
    """`values` maps a metric suffix to (help text, value); every name is
    `oonibackend_<job>_last_run_<suffix>`, gauges all."""
    return generate_latest(_registry(job, ok, seconds, values, now)).decode()


def write(path: Path, job: str, ok: bool, seconds: float,
          values: Mapping[str, tuple[str, float]]) -> None:
    """Write the job's metrics file atomically (the collector never reads half a file).

    Not `prometheus_client.write_to_textfile`: it renames its temporary file without an fsync,
    so a crash could leave an empty file under the final name; this is its temp + rename, with
    the file's and the directory's fsync."""
    write_atomic(path, generate_latest(_registry(job, ok, seconds, values)), dir_mode=0o755)
