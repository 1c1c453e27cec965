"""Shared fixtures: free ports, generated GeoIP files, and the real backend as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"  # provenance and licences: data/README.md
SAMPLES = DATA / "samples"
FIXTURES = DATA / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_mmdb(directory: Path) -> tuple[Path, Path]:
    """Small country and ASN databases covering a few test networks (IPv4 and IPv6)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    directory.mkdir(parents=True, exist_ok=True)
    nets = [
        (["192.33.4.0/24"], "US", 2149, "CAIDA / PSGnet"),
        (["5.5.5.0/24", "2a01:4f8::/32"], "IT", 12874, "Fastweb"),
        (["1.2.3.0/24"], "IE", 65550, "Example IE network"),
        (["10.0.0.0/8"], "DE", 3320, "Deutsche Telekom AG"),
    ]
    cc = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN",
                     int_type="u32")
    for cidrs, country, number, org in nets:
        rec = {"iso_code": country, "names": {"en": country}}
        cc.insert_network(IPSet(cidrs), {"country": rec, "registered_country": rec})
        asn.insert_network(IPSet(cidrs), {"autonomous_system_number": number,
                                          "autonomous_system_organization": org})
    cc_path, asn_path = directory / "cc.mmdb", directory / "asn.mmdb"
    cc.to_db_file(str(cc_path))
    asn.to_db_file(str(asn_path))
    return cc_path, asn_path


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Backend:
    """`oonibackend run` (or `serve`) as a real subprocess on free ports."""

    def __init__(self, data_dir: Path, sections: dict[str, dict[str, object]],
                 command: str = "run") -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.command = command
        base: dict[str, dict[str, object]] = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "logging": {"level": "INFO", "format": "json"},
        }
        for k, v in sections.items():
            base.setdefault(k, {}).update(v)
        self.sections = base
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config = write_config(data_dir / "test.toml", base)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"{command}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cfg(self):  # -> oonibackend.config.Config
        """The backend's configuration as its processes read it (e.g. for HTTPDatabase)."""
        from oonibackend import config

        return config.load(str(self.config), data_dir=str(self.data_dir))

    def start(self, timeout: float = 90.0) -> Backend:
        """Start and wait until the API answers /health (with whatever status: a `serve`
        without its database is up, and says so with a 503)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oonibackend", self.command, "--config", str(self.config),
             "--data-dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited early:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"backend did not start:\n{self.log.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def kill_group(self) -> None:
        """SIGKILL the whole process group (supervisor and children)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


@pytest.fixture(scope="session")
def geoip_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_mmdb(tmp_path_factory.mktemp("geoip"))


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Backend]:
    """One shared backend on embedded defaults, for tests that only read or add data."""
    cc, asn = geoip_files
    data = tmp_path_factory.mktemp("backend")
    fastpath_port = free_port()
    (data / "psiphon.json").write_text('{"a": "b"}')
    b = Backend(data, {
        "geoip": {"cc_db": str(cc), "asn_db": str(asn)},
        "probe": {"jwt_secret": "x" * 32, "psiphon_config_file": str(data / "psiphon.json"),
                  "tor_targets_file": str(FIXTURES / "tor_targets.json"),
                  "test_list_refresh": 1.0},
        # The real fastpath, on its own free port (the API delivers to it).
        "fastpath": {"urls": [f"http://127.0.0.1:{fastpath_port}/"], "port": fastpath_port,
                     "retry_max": 1.0, "workers": 1},
        "quotas": {"whitelist": []},
    })
    b.start()
    yield b
    b.stop()
