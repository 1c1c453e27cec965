"""`oonibackend download-geoip` as a real subprocess: gzipped databases from a loopback HTTP
server (URL template), a directory and file:// URLs; broken files never replace the live
ones; a running API (`oonibackend serve`) answers from the new files without a restart."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from oonibackend.jobs.geoip.importer import previous_month
from tests.conftest import write_config
from tests.integration.conftest import serve_backend
from tests.integration.test_asnmeta_import import FileServer
from tests.unit.test_geoip_download import NETWORKS, make_db

OONIBACKEND = [sys.executable, "-m", "oonibackend"]
TEMPLATE = "/dbip-{kind}-lite-{month}.mmdb.gz"


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    s = FileServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], bytes]:
    """Gzipped databases by (kind, version)."""
    d = tmp_path_factory.mktemp("dbs")
    return {(kind, v): gzip.compress(make_db(d / f"{kind}{v}.mmdb", kind, v).read_bytes())
            for kind in ("country", "asn") for v in (1, 2)}


def publish(server: FileServer, dbs: dict, month: str, version: int) -> None:
    for kind in ("country", "asn"):
        server.files[f"/dbip-{kind}-lite-{month}.mmdb.gz"] = dbs[kind, version]


def make_data(path: Path, **geoip: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_config(path / "test.toml", {"logging": {"format": "text", "level": "WARNING"},
                                      "geoip": dict(geoip)})
    return path


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OONIBACKEND, "download-geoip", "--config", str(data / "test.toml"),
                           "--data-dir", str(data), *args],
                          capture_output=True, text=True, timeout=120)


def lookup(path: Path, ip: str) -> dict | None:
    import maxminddb

    with maxminddb.open_database(str(path)) as r:
        return r.get(ip)


def files(data: Path) -> dict[str, bytes]:
    """Every file under data/geoip (temporary ones included)."""
    return {p.name: p.read_bytes() for p in sorted((data / "geoip").iterdir())
            if p.is_file() and not p.name.endswith(".lock")}


def metrics(data: Path) -> dict[str, float]:
    out = {}
    for line in (data / "metrics" / "geoip.prom").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name.removeprefix("oonibackend_geoip_last_run_")] = float(value)
    return out


def test_http_template_and_fallback_to_previous_month(server, dbs, tmp_path):
    data = make_data(tmp_path / "data")
    publish(server, dbs, "2024-05", 1)
    r = cli(data, "--source", server.url + TEMPLATE, "--month", "2024-05")
    assert r.returncode == 0, r.stderr
    assert "verified country database of 2024-05: DBIP-Country-Lite" in r.stdout
    assert set(files(data)) == {"cc.mmdb", "asn.mmdb"}  # no temporary file left
    assert lookup(data / "geoip" / "cc.mmdb", "5.5.5.5")["country"]["iso_code"] == "IT"
    assert lookup(data / "geoip" / "asn.mmdb", "8.8.8.8")["autonomous_system_number"] == 15169
    m = metrics(data)
    assert m["success"] == 1 and m["country_bytes"] == (data / "geoip" / "cc.mmdb").stat().st_size
    assert m["asn_build_timestamp_seconds"] > 0

    # This month is not published: the previous month's files are installed.
    now = dt.datetime.now(dt.UTC)
    previous = previous_month(f"{now.year}-{now.month:02d}")
    publish(server, dbs, previous, 2)
    r = cli(data, "--source", server.url + TEMPLATE)
    assert r.returncode == 0, r.stderr
    assert "not published yet" in r.stdout and f"trying {previous}" in r.stdout
    assert lookup(data / "geoip" / "cc.mmdb", "5.5.5.5")["country"]["iso_code"] == "FR"
    assert lookup(data / "geoip" / "asn.mmdb", "5.5.5.5")["autonomous_system_number"] == 3215

    # An explicit month that does not exist: no fallback, nothing replaced.
    before = files(data)
    r = cli(data, "--source", server.url + TEMPLATE, "--month", "2001-01")
    assert r.returncode == 1 and "HTTP 404" in r.stderr and "nothing replaced" in r.stderr
    assert files(data) == before and metrics(data)["success"] == 0


def test_broken_databases_leave_live_files_untouched(server, dbs, tmp_path):
    data = make_data(tmp_path / "data")
    publish(server, dbs, "2024-06", 1)
    assert cli(data, "--source", server.url + TEMPLATE, "--month", "2024-06").returncode == 0
    before = files(data)
    good_cc, good_asn = dbs["country", 2], dbs["asn", 2]
    raw_asn = gzip.decompress(good_asn)
    cases = {
        "truncated mmdb": (good_cc, gzip.compress(raw_asn[: len(raw_asn) // 2]),
                           "not a valid MaxMind database"),
        "truncated gzip": (good_cc, good_asn[:-30], "truncated gzip"),
        "not gzip, not mmdb": (b"<html>Not found</html>" * 20, good_asn,
                               "not a valid MaxMind database"),
        "swapped kinds": (good_asn, good_cc, "does not hold country data"),
    }
    for i, (name, (cc, asn, message)) in enumerate(cases.items()):
        month = f"2030-{i + 1:02d}"
        server.files[f"/dbip-country-lite-{month}.mmdb.gz"] = cc
        server.files[f"/dbip-asn-lite-{month}.mmdb.gz"] = asn
        r = cli(data, "--source", server.url + TEMPLATE, "--month", month)
        assert r.returncode == 1, (name, r.stdout)
        assert message in r.stderr and "nothing replaced" in r.stderr, (name, r.stderr)
        assert files(data) == before, name  # same bytes, and no temporary file left

    # A database much smaller than the live one is refused unless forced.
    many = [([f"{a}.{b}.0.0/16"], "US", a * 256 + b, f"Org {a}.{b}")
            for a in range(20, 24) for b in range(256)]
    big = {k: gzip.compress(make_db(tmp_path / f"big-{k}.mmdb", k,
                                    networks=NETWORKS[1] + many).read_bytes())
           for k in ("country", "asn")}
    tiny = {k: dbs[k, 2] for k in ("country", "asn")}
    for k in ("country", "asn"):
        server.files[f"/dbip-{k}-lite-2030-10.mmdb.gz"] = big[k]
        server.files[f"/dbip-{k}-lite-2030-11.mmdb.gz"] = tiny[k]
    assert cli(data, "--source", server.url + TEMPLATE, "--month", "2030-10").returncode == 0
    before = files(data)
    r = cli(data, "--source", server.url + TEMPLATE, "--month", "2030-11")
    assert r.returncode == 1 and "use --force" in r.stderr and files(data) == before
    r = cli(data, "--source", server.url + TEMPLATE, "--month", "2030-11", "--force")
    assert r.returncode == 0, r.stderr
    assert files(data) != before


def test_directory_and_file_sources_and_dry_run(dbs, tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    for kind in ("country", "asn"):
        (src / f"dbip-{kind}-lite-2024-07.mmdb.gz").write_bytes(dbs[kind, 1])
        (src / f"{kind}-2024-08.mmdb").write_bytes(gzip.decompress(dbs[kind, 2]))
    data = make_data(tmp_path / "data", download_url=str(src))  # a directory, from config
    r = cli(data, "--month", "2024-07", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "the 2024-07 databases are valid; nothing replaced" in r.stdout
    assert files(data) == {}
    r = cli(data, "--month", "2024-07")
    assert r.returncode == 0, r.stderr
    assert lookup(data / "geoip" / "cc.mmdb", "5.5.5.5")["country"]["iso_code"] == "IT"
    # file:// template of plain (not gzipped) files
    r = cli(data, "--source", f"file://{src}/{{kind}}-{{month}}.mmdb", "--month", "2024-08")
    assert r.returncode == 0, r.stderr
    assert lookup(data / "geoip" / "cc.mmdb", "5.5.5.5")["country"]["iso_code"] == "FR"
    r = cli(data, "--source", str(src), "--month", "2024-13")
    assert r.returncode == 2 and "YYYY-MM" in r.stderr
    r = cli(data, "--source", f"{src}/db-{{month}}.mmdb", "--month", "2024-08")
    assert r.returncode == 2 and "{kind}" in r.stderr


def geolookup(url: str, ip: str) -> dict:
    req = urllib.request.Request(url + "/api/v1/geolookup",
                                 data=json.dumps({"addresses": [ip]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["geolocation"][ip]


def test_running_api_picks_up_new_files(server, dbs, tmp_path):
    data = tmp_path / "api"
    publish(server, dbs, "2024-09", 1)
    publish(server, dbs, "2024-10", 2)
    api = serve_backend(data, fastpath_port=1, geoip={"reload_interval": 0.2},
                        logging={"format": "text", "level": "INFO"})
    # The CLI shares the API's config (same geoip paths under the data dir).
    assert cli(data, "--source", server.url + TEMPLATE, "--month", "2024-09").returncode == 0
    api.start()
    try:
        assert geolookup(api.url, "5.5.5.5") == {"cc": "IT", "asn": 12874, "as_name": "Fastweb"}
        r = cli(data, "--source", server.url + TEMPLATE, "--month", "2024-10")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = geolookup(api.url, "5.5.5.5")
            if got["cc"] == "FR" and got["asn"] == 3215:
                break
            time.sleep(0.1)
        assert got == {"cc": "FR", "asn": 3215, "as_name": "Orange S.A."}
        assert geolookup(api.url, "8.8.8.8") == {"cc": "US", "asn": 15169,
                                                 "as_name": "Google LLC"}
    finally:
        api.stop()
    assert "GeoIP country database reloaded" in api.log.read_text()
