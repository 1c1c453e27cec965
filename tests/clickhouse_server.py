"""Start a throw-away Debian clickhouse-server (18.16) for tests of the native/HTTP drivers.

Everything (config, data, logs) lives in one temporary directory; ports are picked free.
`stop(kill=True)` sends SIGKILL and `start()` brings the server back on the same ports and
data, for restart tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{dir}/log/server.log</log>
        <errorlog>{dir}/log/server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>104857600</uncompressed_cache_size>
    <mark_cache_size>104857600</mark_cache_size>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <user_files_path>{dir}/user_files/</user_files_path>
    <format_schema_path>{dir}/format_schemas/</format_schema_path>
    <users_config>{dir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


def find_binary() -> list[str] | None:
    """Command starting the server, or None when ClickHouse is not installed."""
    for p in ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"):
        if os.access(p, os.X_OK):
            return [p]
    for name in ("clickhouse-server",):
        found = shutil.which(name)
        if found:
            return [found]
    for p in ("/usr/bin/clickhouse", shutil.which("clickhouse")):
        if p and os.access(p, os.X_OK):
            return [p, "server"]
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClickHouseServer:
    def __init__(self, directory: Path, command: list[str] | None = None) -> None:
        cmd = command or find_binary()
        if cmd is None:
            raise FileNotFoundError("clickhouse-server binary not found")
        self.command = cmd
        self.dir = Path(directory)
        self.http_port = free_port()
        self.tcp_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("log", "data", "tmp", "user_files", "format_schemas"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        fmt = {"dir": self.dir, "http_port": self.http_port, "tcp_port": self.tcp_port}
        (self.dir / "config.xml").write_text(CONFIG.format(**fmt))
        (self.dir / "users.xml").write_text(USERS)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def native_url(self) -> str:
        return f"clickhouse://default:@127.0.0.1:{self.tcp_port}/default"

    def start(self, timeout: float = 60.0) -> None:
        out = open(self.dir / "log" / "stdout.log", "ab")  # owned by the child
        self.proc = subprocess.Popen(
            [*self.command, f"--config-file={self.dir / 'config.xml'}"],
            cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited with {self.proc.returncode}; "
                                   f"see {self.dir / 'log'}")
            if self.ping():
                return
            time.sleep(0.1)
        self.stop(kill=True)
        raise TimeoutError(f"clickhouse-server did not answer within {timeout}s")

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + "/ping", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class OwnerProcess:
    """`python -m oonibackend.storage.owner` as a real subprocess, on the Unix socket of its
    data directory; `request` talks to it with the instance's key."""

    def __init__(self, data_dir: Path, password: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / "owner.log"
        self.config_file = self.data_dir / "owner.toml"

    def config(self):  # -> oonibackend.config.Config
        from oonibackend import config

        return config.load(None, data_dir=str(self.data_dir),
                           **{"database.password": self.password or None})

    @property
    def socket(self) -> str:
        return str(self.config().owner_socket())

    @property
    def key(self) -> str:
        return self.config().db_password()

    def request(self, method: str, path: str = "/", body: bytes | None = None,
                key: str | None = None, **params: str) -> tuple[int, bytes]:
        """(status, body); with the instance's key unless `key` is given ("" for none)."""
        from tests.unixhttp import request

        key = self.key if key is None else key
        headers = {"X-ClickHouse-Key": key} if key else {}
        return request(self.socket, method, path, body, params, headers)

    def spawn(self) -> subprocess.Popen[bytes]:
        import sys

        self.data_dir.mkdir(parents=True, exist_ok=True)
        pw = self.password.replace("\\", "\\\\").replace('"', '\\"')
        self.config_file.write_text(f'[database]\npassword = "{pw}"\n'
                                    '[logging]\nformat = "text"\n')
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oonibackend.storage.owner", "--config",
                 str(self.config_file), "--data-dir", str(self.data_dir)],
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        return self.proc

    def start(self, timeout: float = 60.0) -> OwnerProcess:
        proc = self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"owner exited with {proc.returncode}:\n{self.output()}")
            try:
                if self.request("GET", "/ping", key="")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise TimeoutError(f"owner did not answer within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode
