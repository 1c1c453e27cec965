"""Fixtures for submission tests: the API alone (`oonibackend serve`, no database needed by the
collector routes) pointed at a fake fastpath, plus small HTTP helpers."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Backend, free_port
from tests.mailbox import Inbox, running_inbox
from tests.s3server import S3Server

ServeFactory = Callable[..., Backend]


def serve_backend(data_dir: Path, fastpath_port: int, command: str = "serve",
                  **sections: dict[str, object]) -> Backend:
    """A backend (`serve` unless told otherwise) whose fastpath is 127.0.0.1:<fastpath_port>,
    listening or not."""
    base: dict[str, dict[str, object]] = {
        "fastpath": {"urls": [f"http://127.0.0.1:{fastpath_port}/"], "retry_min": 0.1,
                     "retry_max": 0.5, "timeout": 5.0,
                     "enabled": False},  # `run` must not start a real fastpath
        "server": {"max_body_size": 1024 * 1024},
        "quotas": {"enabled": False},
        "logging": {"level": "INFO", "format": "json"},
    }
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return Backend(data_dir, base, command=command)


@pytest.fixture(scope="session")
def make_serve() -> Callable[..., Backend]:
    """`serve_backend`, for module-scoped fixtures."""
    return serve_backend


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[ServeFactory]:
    """Make (not start) `serve` backends; all are stopped at the end of the test."""
    made: list[Backend] = []

    def make(fastpath_port: int, data_dir: Path | None = None, command: str = "serve",
             **sections) -> Backend:
        b = serve_backend(data_dir or tmp_path / "data", fastpath_port, command, **sections)
        made.append(b)
        return b

    yield make
    for b in made:
        if b.proc is not None and b.proc.poll() is None:
            b.kill_group()


def _metric(backend: Backend, name: str) -> float:
    with urllib.request.urlopen(backend.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def metric() -> Callable[[Backend, str], float]:
    """metric(backend, full_name): a value from the backend's /metrics (0 when absent)."""
    return _metric


@pytest.fixture
def fastpath_port() -> int:
    return free_port()


def spool_file(data_dir: Path, uid: str, wait: float = 5.0) -> Path:
    """The .post of an answered uid. It appears just after the answer (the files thread
    creates it once the WAL commit is acknowledged), so wait for it up to `wait` seconds."""
    ts, cc, testname, _ = uid.split("_")
    path = data_dir / "spool" / "incoming" / f"{ts[:10]}_{cc}_{testname}" / f"{uid}.post"
    deadline = time.monotonic() + wait
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


@pytest.fixture(scope="session")
def read_backend(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Backend]:
    """`oonibackend run` on embedded defaults (no fastpath) with the real fixture rows loaded
    (tests/readdata.py): shared by the read-side tests, which must not write to it."""
    from tests.readdata import load_fixture_rows

    cc, asn = geoip_files
    data = tmp_path_factory.mktemp("read_backend")
    b = Backend(data, {
        "geoip": {"cc_db": str(cc), "asn_db": str(asn)},
        "fastpath": {"enabled": False},
        "quotas": {"enabled": False},
        "server": {"base_url": "https://api.example.org/"},
    })
    # Rows go in before the API starts (chdb opened directly, under the owner lock), so no
    # background statistics pass can ever see a half-loaded table.
    subprocess.run([sys.executable, "-m", "oonibackend", "db", "migrate", "--config",
                    str(b.config), "--data-dir", str(b.data_dir)],
                   check=True, capture_output=True, timeout=300)
    load_fixture_rows(b.config, b.data_dir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on loopback (tests/s3server.py), one per test module."""
    pytest.importorskip("moto.server")
    from tests.s3server import S3Server

    s = S3Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    """A loopback SMTP server for the login e-mails."""
    with running_inbox() as box:
        yield box
