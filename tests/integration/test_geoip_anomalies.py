"""Geolocation anomalies against the real server and database (docs/current_services.md §2):
an accepted measurement whose probe_cc / probe_asn differ from a GeoIP lookup of the submitting
address gets one `faulty_measurements` row, written in the background, via both submission
routes; a matching one gets none; the mismatch is counted in /metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest

from oonibackend import config
from oonibackend.storage.http import HTTPDatabase
from tests.conftest import Backend

# The test GeoIP databases (tests/conftest.py write_mmdb): 5.5.5.0/24 is IT / AS12874,
# 192.33.4.0/24 is US / AS2149; 127.0.0.1 is not in them (ZZ / 0). The API trusts
# X-Forwarded-For from 127.0.0.1 (server.trusted_proxies' default), as from its own proxy.
IT_ADDR, US_ADDR = "5.5.5.5", "192.33.4.12"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Backend]:
    cc, asn = geoip_files
    b = Backend(tmp_path_factory.mktemp("anomalies"), {
        "geoip": {"cc_db": str(cc), "asn_db": str(asn), "anomalies_flush_interval": 0.2},
        "fastpath": {"enabled": False}, "quotas": {"enabled": False}}).start()
    yield b
    b.stop()


async def post(b: Backend, path: str, body: dict, client: str | None) -> dict:
    headers = {"X-Forwarded-For": client} if client else {}
    async with aiohttp.ClientSession() as s, s.post(b.url + path, json=body,
                                                    headers=headers) as r:
        out = await r.json()
        assert r.status == 200, out
        return out


def content(cc: str, asn: str, **extra) -> dict:
    return {"probe_cc": cc, "probe_asn": asn, "test_name": "web_connectivity",
            "software_name": "ooniprobe-android", "software_version": "3.9.0",
            "annotations": {"platform": "android"}, "input": "https://example.org/",
            "measurement_start_time": "2026-12-06 12:00:00",
            "test_start_time": "2026-12-06 12:00:00", "test_keys": {}, **extra}


async def via_report(b: Backend, cc: str, asn: str, client: str | None) -> str:
    opened = await post(b, "/report", {"probe_cc": cc, "probe_asn": asn, "format": "json",
                                       "test_name": "web_connectivity"}, client)
    rid = opened["report_id"]
    res = await post(b, f"/report/{rid}", {"format": "json",
                                           "content": content(cc, asn, report_id=rid)}, client)
    return res["measurement_uid"]


async def via_submit(b: Backend, cc: str, asn: str, client: str | None,
                     as_string: bool = False) -> str:
    c = content(cc, asn)
    res = await post(b, "/api/v1/submit_measurement",
                     {"format": "json", "content": json.dumps(c) if as_string else c,
                      "nym": None, "zkp_request": None}, client)
    return res["measurement_uid"]


async def faulty_rows(b: Backend, uids: list[str], expect: int, wait: float = 10.0
                      ) -> dict[str, list[dict]]:
    """The rows of `uids`, once `expect` of them are there (or `wait` has passed)."""
    db = HTTPDatabase(config.load(str(b.config), data_dir=str(b.data_dir)))
    deadline = time.monotonic() + wait
    try:
        while True:
            rows = await db.query(
                "SELECT ts, type, probe_cc, probe_asn, details, toString(uid) AS uid "
                "FROM faulty_measurements WHERE JSONExtractString(details, 'measurement_uid') "
                "IN %(uids)s", {"uids": uids})
            if len(rows) >= expect or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await db.close()
    out: dict[str, list[dict]] = {u: [] for u in uids}
    for r in rows:
        out[json.loads(r["details"])["measurement_uid"]].append(r)
    return out


def metric_value(b: Backend, text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def metrics(b: Backend) -> str:
    async with aiohttp.ClientSession() as s, s.get(b.url + "/metrics") as r:
        return await r.text()


async def test_mismatches_are_recorded_via_both_routes(backend):
    before = await metrics(backend)
    uids = {
        # (route, declared cc, asn, client address) -> expected (looked-up cc, asn) or None
        "report_match": await via_report(backend, "IT", "AS12874", IT_ADDR),
        "report_both": await via_report(backend, "IT", "AS12874", US_ADDR),
        "submit_match": await via_submit(backend, "IT", "AS12874", IT_ADDR),
        "submit_match_str": await via_submit(backend, "IT", "AS12874", IT_ADDR, True),
        "submit_asn": await via_submit(backend, "IT", "AS3320", IT_ADDR),
        "submit_cc": await via_submit(backend, "DE", "AS12874", IT_ADDR, True),
        "submit_unplaced": await via_submit(backend, "IT", "AS12874", None),
        "submit_withheld": await via_submit(backend, "ZZ", "AS0", US_ADDR),
    }
    expected = {"report_both": ("US", 2149, "IT", 12874),
                "submit_asn": ("IT", 12874, "IT", 3320),
                "submit_cc": ("IT", 12874, "DE", 12874),
                "submit_unplaced": ("ZZ", 0, "IT", 12874)}
    rows = await faulty_rows(backend, list(uids.values()), len(expected))
    await asyncio.sleep(0.5)  # a late, unexpected row would show now
    rows = await faulty_rows(backend, list(uids.values()), len(expected))
    for case, uid in uids.items():
        if case not in expected:
            assert rows[uid] == [], case
            continue
        assert len(rows[uid]) == 1, (case, rows[uid])
        row = rows[uid][0]
        looked_cc, looked_asn, sub_cc, sub_asn = expected[case]
        assert (row["type"], row["probe_cc"], row["probe_asn"]) == ("geoip", looked_cc,
                                                                    looked_asn), case
        assert json.loads(row["details"]) == {
            "submission_cc": sub_cc, "submission_asn": sub_asn, "measurement_uid": uid,
            "software_name": "ooniprobe-android", "software_version": "3.9.0",
            "platform": "android"}, case
        assert len(row["uid"]) == 36
        assert abs(time.time() - row["ts"].replace(tzinfo=dt.UTC).timestamp()) < 120
    after = await metrics(backend)
    name = "oonibackend_geoip_mismatch_total"
    for kind, n in (("cc", 3), ("asn", 3)):
        label = f'{name}{{mismatch="{kind}"}}'
        assert metric_value(backend, after, label) - metric_value(backend, before, label) == n
    assert metric_value(backend, after, "oonibackend_faulty_measurements_written_total") >= 4
    assert "oonibackend_faulty_measurements_queued" in after


async def test_a_burst_of_mismatches_is_written_whole(backend):
    """Forty concurrent mismatches: every row arrives (in a batch or two), none dropped."""
    before = await metrics(backend)
    uids = await asyncio.gather(*(via_submit(backend, "IT", "AS12874", US_ADDR)
                                  for _ in range(40)))
    rows = await faulty_rows(backend, list(uids), 40)
    assert all(len(r) == 1 for r in rows.values())
    after = await metrics(backend)
    label = "oonibackend_faulty_measurements_written_total"
    assert metric_value(backend, after, label) - metric_value(backend, before, label) == 40
    assert 'oonibackend_faulty_measurements_dropped_total' not in after


async def test_database_down_never_touches_the_submission(tmp_path, geoip_files, make_serve):
    """`serve` without its database: mismatching submissions are answered as usual and the
    records are dropped and counted."""
    cc, asn = geoip_files
    b = make_serve(tmp_path / "nodb", 9, geoip={
        "cc_db": str(cc), "asn_db": str(asn), "anomalies_flush_interval": 0.1}).start()
    try:
        t0 = time.monotonic()
        for _ in range(3):
            assert (await via_submit(b, "IT", "AS12874", US_ADDR)).endswith(
                tuple("0123456789abcdef"))
        assert time.monotonic() - t0 < 5
        deadline = time.monotonic() + 15
        label = 'oonibackend_faulty_measurements_dropped_total{reason="database"}'
        while metric_value(b, await metrics(b), label) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        text = await metrics(b)
        assert metric_value(b, text, label) == 3
        assert metric_value(b, text, 'oonibackend_geoip_mismatch_total{mismatch="cc"}') == 3
    finally:
        b.stop()


async def test_nothing_is_compared_without_geoip(tmp_path, make_serve):
    """A fresh install has no GeoIP: every address would be ZZ / 0 and every measurement
    would look faulty, so nothing is compared."""
    b = make_serve(tmp_path / "nogeo", 9, geoip={"cc_db": str(tmp_path / "none.mmdb"),
                                                 "asn_db": str(tmp_path / "none2.mmdb")}).start()
    try:
        await via_submit(b, "IT", "AS12874", US_ADDR)
        await via_report(b, "IT", "AS12874", None)
        text = await metrics(b)
        assert "oonibackend_geoip_mismatch_total" not in text
    finally:
        b.stop()
