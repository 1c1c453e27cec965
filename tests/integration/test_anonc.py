"""Anonymous credentials end to end: a real probe (ooniauth-py's UserState) against
`oonibackend run` (API, fastpath, embedded ClickHouse): manifest, sign_credential, verified /
failed / unverified submissions stored with the right `is_verified`, served as
`verification_status`, key rotation, and no nym or proof anywhere under the data directory."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import ooniauth_py
import pytest

from oonibackend.storage.http import HTTPDatabase
from tests.conftest import SAMPLES, Backend, free_port
from tests.integration.conftest import spool_file

CC, ASN = "IT", "AS30722"
SAMPLE = SAMPLES / "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Backend]:
    cc, asn = geoip_files
    fastpath_port = free_port()
    b = Backend(tmp_path_factory.mktemp("anonc"), {
        "geoip": {"cc_db": str(cc), "asn_db": str(asn)},
        "fastpath": {"urls": [f"http://127.0.0.1:{fastpath_port}/"], "port": fastpath_port,
                     "retry_max": 1.0, "workers": 1, "batch_interval": 0.2},
        "quotas": {"enabled": False},
        "anonc": {"reload_interval": 0.2},
    })
    b.start()
    yield b
    b.stop()


class Probe:
    """What probe-cli does with ooniauth: a credential per manifest version, a proof per
    measurement, the credential rotated with each submit_response."""

    def __init__(self, s: aiohttp.ClientSession, url: str) -> None:
        self.s, self.url = s, url
        self.secrets: list[str] = []  # every nym and proof sent: they must be stored nowhere

    async def get(self, path: str) -> tuple[int, Any, Any]:
        async with self.s.get(self.url + path) as r:
            return r.status, await r.json(), r.headers

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.s.post(self.url + path, json=body) as r:
            assert r.content_type == "application/json"
            return r.status, await r.json()

    async def setup(self) -> None:
        status, doc, _ = await self.get("/api/v1/manifest")
        assert status == 200
        self.manifest, self.version = doc["manifest"], doc["meta"]["version"]
        self.user = ooniauth_py.UserState(self.manifest["public_parameters"])
        status, signed = await self.post("/api/v1/sign_credential", {
            "manifest_version": self.version,
            "credential_sign_request": self.user.make_registration_request()})
        assert status == 200, signed
        assert signed["emission_day"] == ooniauth_py.ServerState.today()
        self.user.handle_registration_response(signed["credential_sign_response"])

    def policy(self) -> tuple[tuple[int, int], int]:
        for rule in self.manifest["submission_policy"]:
            m = rule["match"]
            if m["probe_cc"] in ("*", CC) and m["probe_asn"] in ("*", ASN):
                p = rule["policy"]
                return tuple(p["age"]), p["min_measurement_count"]
        raise AssertionError("no policy")

    def proof(self, content: str) -> dict[str, str]:
        age, count = self.policy()
        req = self.user.make_submit_request_with_hash(CC, ASN, content, age, count)
        self.secrets += [req.nym, req.request]
        return {"nym": req.nym, "zkp_request": req.request, "manifest_version": self.version,
                "protocol_version": ooniauth_py.get_protocol_version()}

    async def submit(self, content: str, fields: dict[str, Any] | None = None) -> Any:
        status, resp = await self.post("/api/v1/submit_measurement",
                                       {"format": "json", "content": content, **(fields or {})})
        assert status == 200, resp
        return resp


def content(report_id: str, url: str) -> str:
    m = json.loads(SAMPLE.read_text())
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    m.update(report_id=report_id, input=url, probe_cc=CC, probe_asn=ASN,
             measurement_start_time=now, test_start_time=now)
    return json.dumps(m, indent=1)  # not compact: the bytes must be kept as sent


async def open_report(s: aiohttp.ClientSession, api: Backend) -> str:
    async with s.post(api.url + "/report", json={
            "probe_cc": CC, "probe_asn": ASN, "test_name": "web_connectivity"}) as r:
        return (await r.json())["report_id"]


async def fastpath_rows(api: Backend, report_id: str, n: int) -> dict[str, str]:
    db = HTTPDatabase(api.cfg())
    try:
        deadline = time.monotonic() + 60
        while True:
            rows = await db.query("SELECT measurement_uid, is_verified FROM fastpath FINAL "
                                  "WHERE report_id = %(r)s", {"r": report_id})
            if len(rows) >= n or time.monotonic() > deadline:
                return {r["measurement_uid"]: r["is_verified"] for r in rows}
            await asyncio.sleep(0.3)
    finally:
        await db.close()


def assert_stored_nowhere(api: Backend, secrets: list[str]) -> None:
    needles = {s.encode() for s in secrets} | {s.replace("/", "\\/").encode() for s in secrets}
    checked = 0
    for path in api.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue  # a socket or a file removed meanwhile
            checked += 1
            for needle in needles:
                assert needle not in data, f"credential material found in {path}"
    assert checked > 20


async def test_manifest_shape_and_cache(api):
    async with aiohttp.ClientSession() as s, s.get(api.url + "/api/v1/manifest") as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "max-age=60"
        doc = await r.json()
    assert set(doc) == {"manifest", "meta"}
    assert doc["manifest"]["nym_scope"] == "ooni.org/{probe_cc}/{probe_asn}"
    assert doc["manifest"]["submission_policy"][-1]["match"] == {"probe_cc": "*",
                                                                  "probe_asn": "*"}
    meta = doc["meta"]
    assert set(meta) == {"version", "last_modification_date", "manifest_url",
                         "library_version", "protocol_version"}
    assert meta["library_version"] == ooniauth_py.__version__
    assert meta["protocol_version"] == ooniauth_py.get_protocol_version()
    assert meta["manifest_url"] == api.url + "/api/v1/manifest"
    dt.datetime.strptime(meta["last_modification_date"], "%Y-%m-%dT%H:%M:%SZ")


async def test_probe_flow_verdicts_storage_and_rotation(api):
    async with aiohttp.ClientSession() as s:
        probe = Probe(s, api.url)
        await probe.setup()
        rid = await open_report(s, api)
        verdicts: dict[str, str] = {}

        # Verified, twice: the second proof uses the credential rotated by submit_response.
        for i in range(2):
            c = content(rid, f"https://example.org/{i}")
            resp = await probe.submit(c, probe.proof(c))
            assert resp["verification_status"] == "verified" and resp["error"] is None
            assert resp["submit_response"] and resp["report_id"] == rid
            assert resp["protocol_version"] == ooniauth_py.get_protocol_version()
            probe.user.handle_submit_response(resp["submit_response"])
            verdicts[resp["measurement_uid"]] = "t"
            if i == 0:  # the content string is spooled byte for byte, without nym / proof
                post = spool_file(api.data_dir, resp["measurement_uid"]).read_bytes()
                assert post.startswith(b'{"format":"json","content":' + c.encode() + b",")
                assert set(json.loads(post)) == {"format", "content", "manifest_version",
                                                 "protocol_version", "is_verified"}
                assert json.loads(post)["is_verified"] == "t"

        # A proof made for other content: failed, but stored.
        c = content(rid, "https://example.org/other")
        resp = await probe.submit(c, probe.proof(content(rid, "https://example.org/x")))
        assert (resp["verification_status"], resp["error"]) == ("failed", "protocol_error")
        assert resp["submit_response"] is None and resp["measurement_uid"]
        verdicts[resp["measurement_uid"]] = "f"

        # No proof (probe-cli's plain path: the fields are null): unverified, no error.
        resp = await probe.submit(content(rid, "https://example.org/plain"), {
            "nym": None, "zkp_request": None, "manifest_version": None,
            "protocol_version": None})
        assert (resp["verification_status"], resp["error"]) == ("unverified", None)
        verdicts[resp["measurement_uid"]] = "u"

        # Unknown manifest version, on sign and on submit.
        status, body = await probe.post("/api/v1/sign_credential", {
            "manifest_version": "0" * 32,
            "credential_sign_request": probe.user.make_registration_request()})
        assert status == 404 and body["detail"]["error"] == "manifest_not_found"
        assert body["error"] == body["detail"]["message"]
        c = content(rid, "https://example.org/old")
        resp = await probe.submit(c, dict(probe.proof(c), manifest_version="0" * 32))
        assert (resp["verification_status"], resp["error"]) == ("unverified",
                                                                "manifest_not_found")
        verdicts[resp["measurement_uid"]] = "u"

        # Library errors on sign: garbage is 400, a bad request body too.
        status, body = await probe.post("/api/v1/sign_credential", {
            "manifest_version": probe.version, "credential_sign_request": "!!notbase64"})
        assert status == 400 and body["detail"]["error"] == "deserialization_failed"
        status, body = await probe.post("/api/v1/sign_credential", {
            "manifest_version": probe.version})
        assert status == 400 and body["detail"]["error"] == "deserialization_failed"

        # Stored with the right is_verified, served as verification_status.
        rows = await fastpath_rows(api, rid, len(verdicts))
        assert rows == verdicts
        names = {"t": "verified", "f": "failed", "u": "unverified"}
        async with s.get(api.url + "/api/v1/measurements",
                         params={"report_id": rid, "limit": "50"}) as r:
            listing = (await r.json())["results"]
        assert {m["measurement_uid"]: m["verification_status"] for m in listing} == \
            {uid: names[code] for uid, code in verdicts.items()}
        for uid, code in verdicts.items():
            async with s.get(api.url + "/api/v1/measurement_meta",
                             params={"measurement_uid": uid}) as r:
                assert (await r.json())["verification_status"] == names[code]

        # Rotation: the new version is served without a restart, the old one refused.
        old_user, old_version = probe.user, probe.version
        out = subprocess.run(
            [sys.executable, "-m", "oonibackend", "anonc-rotate", "--config",
             str(api.config), "--data-dir", str(api.data_dir)],
            check=True, capture_output=True, text=True, timeout=60).stdout
        new_version = out.split()[2]
        assert new_version != old_version
        deadline = time.monotonic() + 10
        while (await probe.get("/api/v1/manifest"))[1]["meta"]["version"] != new_version:
            assert time.monotonic() < deadline, "rotation not picked up"
            await asyncio.sleep(0.1)
        status, body = await probe.post("/api/v1/sign_credential", {
            "manifest_version": old_version,
            "credential_sign_request": old_user.make_registration_request()})
        assert status == 404 and body["detail"]["error"] == "manifest_not_found"
        c = content(rid, "https://example.org/after-rotation")
        resp = await probe.submit(c, probe.proof(c))  # old credential, old version
        assert (resp["verification_status"], resp["error"]) == ("unverified",
                                                                "manifest_not_found")
        await probe.setup()  # the probe fetches the manifest again and gets a credential
        assert probe.version == new_version
        resp = await probe.submit(c, probe.proof(c))
        assert resp["verification_status"] == "verified"
        await fastpath_rows(api, rid, len(verdicts) + 2)

    # Neither nym nor proof anywhere under the data directory: spool, WAL, fastpath queue,
    # database files, logs.
    time.sleep(1.5)  # let the fastpath sink and the spool checkpoint write what they hold
    assert_stored_nowhere(api, probe.secrets)


async def test_proofs_for_metadata_the_library_cannot_take_are_not_checked(api):
    async with aiohttp.ClientSession() as s:
        probe = Probe(s, api.url)
        await probe.setup()
        rid = await open_report(s, api)
        m = json.loads(content(rid, "https://example.org/lower"))
        m["probe_cc"] = "it"
        c = json.dumps(m)
        resp = await probe.submit(c, probe.proof(content(rid, "https://example.org/lower")))
        assert (resp["verification_status"], resp["error"]) == ("unverified", "bad_metadata")
        resp = await probe.submit(c, dict(probe.proof(c), protocol_version="0.0.1"))
        assert resp["error"] == "protocol_version_too_old"
        resp = await probe.submit(c, dict(probe.proof(c), nym=None))
        assert resp["error"] == "incomplete_anonc_fields"


async def health_of(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url + "/health") as r:
        return await r.json()


async def test_health_shows_the_served_manifest_version(api):
    async with aiohttp.ClientSession() as s, s.get(api.url + "/api/v1/manifest") as r:
        version = (await r.json())["meta"]["version"]
    deadline = time.monotonic() + 10
    while (check := (await health_of(api.url))["checks"]["anonymous_credentials"]) \
            .get("manifest_version") != version:  # a rotation test may have just run
        assert time.monotonic() < deadline, check
        await asyncio.sleep(0.2)
    assert check["ok"] is True


async def test_health_degraded_without_keys_until_they_are_published(tmp_path):
    """A production host (`generate = false`) started before its key files exist keeps
    collecting, says so on /health, and recovers once the files appear."""
    b = Backend(tmp_path, {"quotas": {"enabled": False},
                           "anonc": {"generate": False, "reload_interval": 0.2}},
                command="serve").start()
    try:
        deadline = time.monotonic() + 10
        while "bad_anonc_manifest" not in (health := await health_of(b.url))["errors"]:
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.2)
        assert health["checks"]["anonymous_credentials"]["ok"] is False
        assert "cannot read" in health["checks"]["anonymous_credentials"]["error"]
        async with aiohttp.ClientSession() as s, s.get(b.url + "/api/v1/manifest") as r:
            assert r.status == 404
        subprocess.run([sys.executable, "-m", "oonibackend", "anonc-rotate", "--config",
                        str(b.config), "--data-dir", str(b.data_dir)],
                       check=True, capture_output=True, timeout=60)
        while "bad_anonc_manifest" in (health := await health_of(b.url))["errors"]:
            assert time.monotonic() < deadline + 10, health
            await asyncio.sleep(0.2)
        assert health["checks"]["anonymous_credentials"]["ok"] is True
    finally:
        b.stop()
