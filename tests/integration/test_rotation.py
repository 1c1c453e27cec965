"""`oonibackend rotate` as a real subprocess against the embedded ClickHouse, a loopback
stand-in for DigitalOcean's API v2 and a loopback test helper behind TLS (self-signed,
verified through check_ca_file and the host's own name): first run, replacement, draining and
destruction over time (--now), provider errors, failed readiness, a run killed right after
its create call, dry runs, and the API serving the live hosts from test_helper_instances."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Backend, free_port

OONIBACKEND = [sys.executable, "-m", "oonibackend"]
TOKEN = "do-test-token"
ZONE = "th.test.example"
T0 = dt.datetime(2030, 1, 1, 12, 0, 0)


# ---- the DigitalOcean stand-in ------------------------------------------------------------

class FakeDO:
    """Droplets (new -> active with 127.0.0.1 / ::1 after `polls` GETs) and domain records."""

    def __init__(self) -> None:
        self.droplets: dict[int, dict] = {}
        self.gets: dict[int, int] = {}
        self.records: dict[str, list[dict]] = {ZONE: [
            {"id": 1, "type": "NS", "name": "@", "data": "ns1.example.", "ttl": 1800},
            {"id": 2, "type": "A", "name": "0", "data": "192.0.2.1", "ttl": 60}]}  # not ours
        self.log: list[tuple[str, str]] = []
        self.ids = itertools.count(1000)
        self.now = T0
        self.polls = 2
        self.fail_create = False
        self.hang_after_create = False
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def mutations(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.log if m != "GET"]

    def names(self) -> set[str]:
        return {d["name"] for d in self.droplets.values()}

    def dns(self) -> dict[tuple[str, str], str]:
        return {(r["name"], r["type"]): r["data"] for r in self.records[ZONE]
                if r["type"] in ("A", "AAAA") and r["id"] != 2}

    async def start(self) -> FakeDO:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/v2/droplets", self.create)
        app.router.add_get("/v2/droplets", self.list)
        app.router.add_get("/v2/droplets/{id}", self.get)
        app.router.add_delete("/v2/droplets/{id}", self.delete)
        app.router.add_get("/v2/domains/{zone}/records", self.list_records)
        app.router.add_post("/v2/domains/{zone}/records", self.create_record)
        app.router.add_delete("/v2/domains/{zone}/records/{id}", self.delete_record)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        self.log.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"id": "unauthorized", "message": "bad token"}, status=401)
        return await handler(request)

    def _droplet(self, i: int) -> dict:
        return self.droplets[i]

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["region"] == "fra1" and body["size"] == "s-1vcpu-1gb"
        assert body["tags"] == ["oonith", "rotation-test"] and body["ipv6"] is True
        assert body["user_data"].startswith("#cloud-config") and body["ssh_keys"] == [42, "aa:bb"]
        if self.fail_create:
            return web.json_response({"id": "server_error", "message": "boom"}, status=500)
        i = next(self.ids)
        self.droplets[i] = {"id": i, "name": body["name"], "status": "new",
                            "created_at": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "region": {"slug": body["region"]}, "tags": body["tags"],
                            "networks": {"v4": [], "v6": []}}
        self.gets[i] = 0
        if self.hang_after_create:
            await self.release.wait()
        return web.json_response({"droplet": self.droplets[i]}, status=202)

    async def list(self, request: web.Request) -> web.Response:
        page, per_page = int(request.query["page"]), int(request.query["per_page"])
        items = list(self.droplets.values())
        return web.json_response({"droplets": items[(page - 1) * per_page:page * per_page],
                                  "links": {}, "meta": {"total": len(items)}})

    async def get(self, request: web.Request) -> web.Response:
        i = int(request.match_info["id"])
        if i not in self.droplets:
            return web.json_response({"id": "not_found", "message": "nope"}, status=404)
        self.gets[i] += 1
        d = self.droplets[i]
        if self.gets[i] >= self.polls and d["status"] == "new":
            d["status"] = "active"
            d["networks"] = {"v4": [{"ip_address": "10.1.1.1", "type": "private"},
                                    {"ip_address": "127.0.0.1", "type": "public"}],
                             "v6": [{"ip_address": "::1", "type": "public"}]}
        return web.json_response({"droplet": d})

    async def delete(self, request: web.Request) -> web.Response:
        if self.droplets.pop(int(request.match_info["id"]), None) is None:
            return web.json_response({"id": "not_found", "message": "nope"}, status=404)
        return web.Response(status=204)

    async def list_records(self, request: web.Request) -> web.Response:
        recs = self.records[request.match_info["zone"]]
        return web.json_response({"domain_records": recs, "links": {},
                                  "meta": {"total": len(recs)}})

    async def create_record(self, request: web.Request) -> web.Response:
        body = await request.json()
        rec = {"id": next(self.ids), **body}
        self.records[request.match_info["zone"]].append(rec)
        return web.json_response({"domain_record": rec}, status=201)

    async def delete_record(self, request: web.Request) -> web.Response:
        recs = self.records[request.match_info["zone"]]
        i = int(request.match_info["id"])
        self.records[request.match_info["zone"]] = [r for r in recs if r["id"] != i]
        return web.Response(status=204)


# ---- the test helper stand-in (TLS, self-signed *.th.test.example) ------------------------

def make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{ZONE}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{ZONE}")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "th.pem", directory / "th.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class FakeTH:
    """Answers the web_connectivity control request; records the TLS server names seen."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = lambda _obj, name, _ctx: self.sni.append(name)
        self.sni: list[str] = []
        self.hosts: list[str] = []
        self.healthy = True
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> FakeTH:
        app = web.Application()
        app.router.add_post("/", self.control)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ctx).start()
        return self

    async def control(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        body = await request.json()
        assert body == {"http_request": "https://www.example.com", "http_request_headers": {},
                        "tcp_connect": ["1.1.1.1:443"]}
        if not self.healthy:
            return web.json_response({"error": "not yet"}, status=200)
        return web.json_response({"http_request": {"status_code": 200},
                                  "tcp_connect": {"1.1.1.1:443": {"status": True}},
                                  "dns": {"addrs": ["93.184.215.14"]}})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


# ---- fixtures and helpers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated data directory, copied by each test (saves the migrations per test)."""
    d = tmp_path_factory.mktemp("rotation-template")
    subprocess.run([*OONIBACKEND, "db", "migrate", "--data-dir", str(d)], check=True,
                   capture_output=True, timeout=120)
    return d


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
async def do() -> AsyncIterator[FakeDO]:
    s = await FakeDO().start()
    yield s
    await s.stop()


@pytest.fixture
async def th(cert) -> AsyncIterator[FakeTH]:
    s = await FakeTH(*cert).start()
    yield s
    await s.stop()


@pytest.fixture
def data(template: Path, tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "data"
    shutil.copytree(template, d, symlinks=True)  # chdb links its store relatively
    yield d


def backend_for(data: Path, do: FakeDO, th: FakeTH, cert: tuple[Path, Path],
                **rotation: object) -> Backend:
    """A (not started) `oonibackend run` whose config file the rotate runs share."""
    (data / "token").write_text(TOKEN + "\n")
    (data / "cloud-init.yaml").write_text("#cloud-config\nruncmd: [oohelperd]\n")
    settings = {
        "api_url": do.url, "token_file": "token", "count": 2, "max_age_days": 7,
        "drain_hours": 24, "region": "fra1", "ssh_keys": ["42", "aa:bb"],
        "tags": ["oonith", "rotation-test"], "user_data_file": "cloud-init.yaml",
        "dns_zone": ZONE, "check_scheme": "https", "check_port": th.port,
        "check_ca_file": str(cert[0]), "check_timeout": 2.0, "ready_timeout": 5.0,
        "poll_interval": 0.05, "refresh_interval": 0.3,
    }
    settings.update(rotation)
    return Backend(data, {"rotation": settings, "fastpath": {"enabled": False},
                          "quotas": {"enabled": False},
                          "logging": {"level": "INFO", "format": "text"}})


async def rotate(b: Backend, *args: str, now: dt.datetime | None = None
                 ) -> tuple[int, str, str]:
    extra = ["--now", now.strftime("%Y-%m-%dT%H:%M:%SZ")] if now else []
    p = await asyncio.create_subprocess_exec(
        *OONIBACKEND, "rotate", "--config", str(b.config), "--data-dir", str(b.data_dir),
        *extra, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 120)
    return p.returncode or 0, out.decode(), err.decode()


async def table(b: Backend, raw: bool = False) -> list[dict]:
    """test_helper_instances read independently of the job (FINAL), or every raw row."""
    sql = ("SELECT rdn, name, toString(ipaddr) AS ip, toString(ipv6addr) AS ip6, draining_at, "
           "sign, provider, region, dns_zone FROM test_helper_instances"
           + ("" if raw else " FINAL WHERE sign = 1") + " ORDER BY rdn, sign")
    p = await asyncio.create_subprocess_exec(
        *OONIBACKEND, "db", "exec", "-", "--config", str(b.config), "--data-dir",
        str(b.data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(sql.encode()), 120)
    assert p.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


def metrics(data: Path) -> dict[str, float]:
    out = {}
    for line in (data / "metrics" / "rotate.prom").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name.removeprefix("oonibackend_rotate_last_run_")] = float(value)
    return out


# ---- tests -------------------------------------------------------------------------------

async def test_first_run_creates_count_hosts_records_and_rows(data, do, th, cert):
    b = backend_for(data, do, th, cert)
    rc, out, err = await rotate(b, now=T0)
    assert rc == 0, out + err
    # "0" already has a record in the zone that is not ours: never reused.
    assert do.names() == {"oonith-1-20300101120000", "oonith-2-20300101120000"}
    assert do.dns() == {("1", "A"): "127.0.0.1", ("1", "AAAA"): "::1",
                        ("2", "A"): "127.0.0.1", ("2", "AAAA"): "::1"}
    assert {"name": "0", "data": "192.0.2.1"}.items() <= do.records[ZONE][1].items()
    rows = await table(b)
    assert [(r["rdn"], r["name"], r["ip"], r["ip6"], r["draining_at"], r["provider"],
             r["region"], r["dns_zone"]) for r in rows] == [
        ("1", "oonith-1-20300101120000", "127.0.0.1", "::1", None, "digitalocean", "fra1", ZONE),
        ("2", "oonith-2-20300101120000", "127.0.0.1", "::1", None, "digitalocean", "fra1", ZONE)]
    # TLS to the IP with the host's own name, verified against the configured CA.
    assert set(th.sni) == {f"1.{ZONE}", f"2.{ZONE}"}
    assert set(th.hosts) == {f"1.{ZONE}:{th.port}", f"2.{ZONE}:{th.port}"}
    assert "active at 127.0.0.1" in out and "answers the control request" in out
    assert "done: 2 live, 2 created" in out
    m = metrics(data)
    assert m["success"] == 1 and m["created"] == 2 and m["live"] == 2 and m["destroyed"] == 0
    assert not (data / "rotation" / "pending.json").exists()
    # A second run at the same time: nothing to do, nothing changed.
    before = list(do.mutations())
    rc, out, _ = await rotate(b, now=T0 + dt.timedelta(hours=1))
    assert rc == 0 and "nothing to do" in out and do.mutations() == before


async def test_aged_hosts_are_replaced_one_per_run_drained_then_destroyed(data, do, th, cert):
    b = backend_for(data, do, th, cert)
    assert (await rotate(b, now=T0))[0] == 0
    first = {r["rdn"]: r["name"] for r in await table(b)}
    # A week and an hour later both hosts are too old: one replacement per run, the oldest
    # (ties: by name) drained once the new host answers.
    do.now = t1 = T0 + dt.timedelta(days=7, hours=1)
    rc, out, err = await rotate(b, now=t1)
    assert rc == 0, out + err
    assert "replaces oonith-1-" in out and "draining oonith-1-" in out
    rows = {r["rdn"]: r for r in await table(b)}
    assert sorted(rows) == ["1", "2", "3"]
    assert rows["1"]["draining_at"] == "2030-01-08T13:00:00Z"
    assert rows["2"]["draining_at"] is None and rows["3"]["draining_at"] is None
    assert set(do.dns()) == {("2", "A"), ("2", "AAAA"), ("3", "A"), ("3", "AAAA")}
    assert first["1"] in do.names()  # drained, not destroyed yet
    assert metrics(data)["live"] == 2
    # Two hours later: the other old host in turn; host 1 keeps draining.
    do.now = t2 = t1 + dt.timedelta(hours=2)
    rc, out, err = await rotate(b, now=t2)
    assert rc == 0, out + err
    assert "replaces oonith-2-" in out and "destroying" not in out
    assert first["1"] in do.names()
    # After drain_hours host 1 is destroyed; host 2 (drained 23 hours) is kept.
    t3 = t1 + dt.timedelta(hours=25)
    rc, out, err = await rotate(b, now=t3)
    assert rc == 0, out + err
    assert f"destroying {first['1']}" in out and "creating" not in out
    assert first["1"] not in do.names() and first["2"] in do.names()
    rows = {r["rdn"]: r for r in await table(b)}
    assert sorted(rows) == ["2", "3", "4"]
    assert rows["2"]["draining_at"] == "2030-01-08T15:00:00Z"
    assert rows["3"]["draining_at"] is None and rows["4"]["draining_at"] is None
    assert set(do.dns()) == {("3", "A"), ("3", "AAAA"), ("4", "A"), ("4", "AAAA")}
    m = metrics(data)
    assert m["destroyed"] == 1 and m["created"] == 0 and m["drained"] == 0 and m["live"] == 2
    assert m["success"] == 1


async def test_provider_error_on_create_leaves_the_table_untouched(data, do, th, cert):
    b = backend_for(data, do, th, cert, count=1)
    assert (await rotate(b, now=T0))[0] == 0
    before = await table(b, raw=True)
    do.fail_create = True
    do.now = T0 + dt.timedelta(days=8)
    rc, out, err = await rotate(b, now=do.now)
    assert rc == 1
    assert "HTTP 500: boom" in err and "POST /droplets" in err
    assert await table(b, raw=True) == before  # no row written, none drained
    assert len(do.droplets) == 1 and len(do.dns()) == 2
    assert not (data / "rotation" / "pending.json").exists()
    assert metrics(data)["success"] == 0


async def test_failed_readiness_destroys_the_new_droplet(data, do, th, cert):
    b = backend_for(data, do, th, cert, count=1, ready_timeout=1.0, poll_interval=0.1)
    th.healthy = False
    rc, out, err = await rotate(b, now=T0)
    assert rc == 1
    assert "not ready: the answer lacks http_request, tcp_connect, dns" in out
    assert "destroying it" in out and "not ready after 1 s" in err
    assert do.droplets == {} and do.dns() == {}
    assert ("DELETE", "/v2/droplets/1000") in do.log
    assert await table(b, raw=True) == []
    assert not (data / "rotation" / "pending.json").exists()
    # Healthy again: the next run creates a host normally.
    th.healthy = True
    rc, out, err = await rotate(b, now=T0)
    assert rc == 0, out + err
    assert [r["rdn"] for r in await table(b)] == ["1"]


async def test_run_killed_after_create_is_adopted_not_duplicated(data, do, th, cert):
    b = backend_for(data, do, th, cert, count=1)
    do.hang_after_create = True
    p = await asyncio.create_subprocess_exec(
        *OONIBACKEND, "rotate", "--config", str(b.config), "--data-dir", str(data),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        if do.droplets:
            break
        await asyncio.sleep(0.05)
    assert len(do.droplets) == 1
    os.killpg(p.pid, signal.SIGKILL)
    await p.wait()
    pending = json.loads((data / "rotation" / "pending.json").read_text())
    (name,) = do.names()
    assert pending["name"] == name
    do.hang_after_create = False
    do.release.set()
    rc, out, err = await rotate(b)
    assert rc == 0, out + err
    assert f"adopting droplet {name}" in out
    assert [m for m in do.log if m == ("POST", "/v2/droplets")] == [("POST", "/v2/droplets")]
    assert do.names() == {name}
    assert [r["name"] for r in await table(b)] == [name]
    assert not (data / "rotation" / "pending.json").exists()


async def test_dry_run_calls_no_mutating_endpoint(data, do, th, cert):
    b = backend_for(data, do, th, cert)
    rc, out, err = await rotate(b, "--dry-run", now=T0)
    assert rc == 0, out + err
    assert "plan: create oonith-1-20300101120000 as 1.th.test.example: 0 live of 2" in out
    assert do.mutations() == [] and do.droplets == {}
    assert not (data / "metrics" / "rotate.prom").exists()
    assert (await rotate(b, now=T0))[0] == 0
    rows, mutations = await table(b, raw=True), list(do.mutations())
    t = T0 + dt.timedelta(days=8)
    rc, out, err = await rotate(b, "--dry-run", now=t)
    assert rc == 0, out + err
    assert "plan: create oonith-3-20300109120000" in out and "plan: drain oonith-1-" in out
    assert "dry run: nothing changed" in out
    assert do.mutations() == mutations and await table(b, raw=True) == rows
    assert not (data / "rotation" / "pending.json").exists()


async def test_api_serves_the_live_hosts(data, do, th, cert):
    b = backend_for(data, do, th, cert)
    b.start()
    try:
        async with aiohttp.ClientSession(base_url=b.url) as s:
            async def helpers() -> tuple[set[str], list[dict]]:
                async with s.get("/api/v1/test-helpers") as r:
                    wc = (await r.json())["web-connectivity"]
                return {w["address"] for w in wc if w["type"] == "https"}, wc

            legacy = {"https://6.th.ooni.org", "https://5.th.ooni.org"}
            assert (await helpers())[0] == legacy  # empty table: the static helpers
            # Rotate while the API runs: the job goes through the running database owner.
            rc, out, err = await rotate(b, now=T0)
            assert rc == 0, out + err

            async def wait_for(expected: set[str]) -> list[dict]:
                for _ in range(100):
                    got, wc = await helpers()
                    if got == expected:
                        return wc
                    await asyncio.sleep(0.1)
                raise AssertionError(f"served {got}, expected {expected}")

            wc = await wait_for({f"https://1.{ZONE}", f"https://2.{ZONE}"})
            assert len(wc) == 3 and wc[2]["type"] == "cloudfront"
            do.now = T0 + dt.timedelta(days=8)
            rc, out, err = await rotate(b, now=do.now)
            assert rc == 0, out + err
            await wait_for({f"https://2.{ZONE}", f"https://3.{ZONE}"})  # 1 is draining
            async with s.post("/api/v1/check-in", json={}) as r:
                conf = (await r.json())["conf"]
            assert {w["address"] for w in conf["test_helpers"]["web-connectivity"][:2]} == {
                f"https://2.{ZONE}", f"https://3.{ZONE}"}
    finally:
        b.stop()


async def test_bad_configuration_exits_2(data, do, th, cert):
    b = backend_for(data, do, th, cert, token_file="missing-token")
    rc, _, err = await rotate(b)
    assert rc == 2 and "cannot read the token file" in err
    b = backend_for(data, do, th, cert, token_file="", token="")
    rc, _, err = await rotate(b)
    assert rc == 2 and "no API token" in err
    assert do.log == []
