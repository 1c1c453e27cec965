"""The real probe's call sequence (docs/clients.md, Probe §1-§8) against `oonibackend run`,
with the probe's strict rules: status 200 only, never a `null` body, RFC 3339 `Z` times,
boolean feature flags, a non-empty URL list, `json` among the supported formats."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from typing import Any

import aiohttp

from oonibackend.storage.http import HTTPDatabase
from tests.conftest import SAMPLES, Backend

UA = "ooniprobe-cli/3.20.0 ooniprobe-engine/3.20.0"
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
UID = re.compile(r"^\d{14}\.\d{6}_IE_webconnectivity_[0-9a-f]{16}$")
# The probe's own list: an `ie` country list seeded by this test (1.2.3.x is IE/AS65550).
IE_ROWS = [
    {"domain": "www.rte.ie", "url": "https://www.rte.ie/news/", "cc": "ie",
     "category_code": "NEWS"},
    {"domain": "www.irishtimes.com", "url": "https://www.irishtimes.com/", "cc": "ie",
     "category_code": "NEWS"},
    {"domain": "www.gov.ie", "url": "https://www.gov.ie/", "cc": "ie", "category_code": "GOVT"},
]
IE_RULES = [{"sign": 1, "category_code": c, "cc": "*", "domain": "*", "url": "*",
             "priority": p} for c, p in (("NEWS", 100), ("GOVT", 40))]


async def strict(r: aiohttp.ClientResponse) -> Any:
    """What the Go probe accepts: 200, a JSON body that is not null."""
    body = await r.read()
    assert r.status == 200, (r.method, r.url, r.status, body[:300])
    assert body.strip() != b"null"
    return json.loads(body)


async def seed(backend: Backend) -> None:
    db = HTTPDatabase(backend.cfg())
    try:
        await db.insert("citizenlab", IE_ROWS)
        await db.insert("url_priorities", IE_RULES)
    finally:
        await db.close()


def measurement(report_id: str, url: str, start: str) -> dict[str, Any]:
    """A real web_connectivity measurement re-addressed to our report id and input."""
    m = json.loads((SAMPLES / "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json")
                   .read_text())
    m.update(report_id=report_id, input=url, probe_cc="IE", probe_asn="AS65550",
             measurement_start_time=start.replace("T", " ").rstrip("Z"),
             test_start_time=start.replace("T", " ").rstrip("Z"))
    return m


async def test_probe_sequence(backend: Backend):
    await seed(backend)
    probe_ip = {"X-Forwarded-For": "1.2.3.4"}
    headers = {"User-Agent": UA, **probe_ip}
    async with aiohttp.ClientSession(base_url=backend.url, headers=headers) as s:
        # 2. Backend discovery.
        async with s.get("/api/v1/test-helpers") as r:
            helpers = await strict(r)
        assert helpers["web-connectivity"][0]["type"] == "https"

        # 3. Check-in (retried until the snapshot refresh has seen the seeded list). A manual
        # run gets every URL (limit 9999), whatever other tests seeded in the shared backend.
        checkin_body = {"charging": True, "on_wifi": True, "platform": "linux",
                        "probe_asn": "AS65550", "probe_cc": "IE", "run_type": "manual",
                        "software_name": "ooniprobe-cli", "software_version": "3.20.0",
                        "web_connectivity": {"category_codes": []}}
        deadline = time.monotonic() + 20
        while True:
            async with s.post("/api/v1/check-in", json=checkin_body) as r:
                ci = await strict(r)
            urls = ci["tests"]["web_connectivity"]["urls"]
            if any(u["country_code"] == "IE" for u in urls) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        assert ci["v"] == 1 and ci["probe_cc"] == "IE" and ci["probe_asn"] == "AS65550"
        dt.datetime.strptime(ci["utc_time"], RFC3339)
        assert all(isinstance(v, bool) for v in ci["conf"]["features"].values())
        assert ci["conf"]["test_helpers"].keys() == helpers.keys()
        assert urls, "ErrNoURLsReturned"
        assert {u["url"] for u in urls if u["country_code"] == "IE"} == {
            r["url"] for r in IE_ROWS}
        assert all(set(u) == {"category_code", "country_code", "url"} for u in urls)

        # 6. Register + login; the token is reused until 30 s before `expire`.
        async with s.post("/api/v1/register", json={
                "platform": "linux", "probe_asn": "AS65550", "probe_cc": "IE",
                "software_name": "ooniprobe-cli", "software_version": "3.20.0",
                "supported_tests": ["web_connectivity"], "password": "a" * 64}) as r:
            client_id = (await strict(r))["client_id"]
        async with s.post("/api/v1/login",
                          json={"username": client_id, "password": "a" * 64}) as r:
            login = await strict(r)
        expire = dt.datetime.strptime(login["expire"], RFC3339).replace(tzinfo=dt.UTC)
        assert expire - dt.datetime.now(dt.UTC) > dt.timedelta(seconds=30)
        auth = {"Authorization": f"Bearer {login['token']}"}
        async with s.get("/api/v1/test-list/tor-targets", params={"country_code": "IE"},
                         headers=auth) as r:
            targets = await strict(r)
        assert targets and all("address" in t and "protocol" in t for t in targets.values())
        async with s.get("/api/v1/test-list/psiphon-config", headers=auth) as r:
            assert await strict(r) == {"a": "b"}

        # 5. Legacy collector path: open report, submit (probe-cli never closes).
        async with s.post("/report", json={
                "data_format_version": "0.2.0", "format": "json", "probe_asn": "AS65550",
                "probe_cc": "IE", "software_name": "ooniprobe-cli",
                "software_version": "3.20.0", "test_name": "web_connectivity",
                "test_start_time": "2026-01-01 00:00:00", "test_version": "0.4.3"}) as r:
            opened = await strict(r)
        assert "json" in opened["supported_formats"]
        rid = opened["report_id"]
        assert "_webconnectivity_IE_65550_" in rid
        now = dt.datetime.now(dt.UTC).strftime(RFC3339)
        for u in urls[:2]:
            async with s.post(f"/report/{rid}", json={
                    "format": "json", "content": measurement(rid, u["url"], now)}) as r:
                submitted = await strict(r)
            assert UID.match(submitted["measurement_uid"]), submitted
