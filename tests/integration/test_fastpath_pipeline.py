"""End to end through real processes: measurements submitted to the API are scored by the
fastpath and appear in the `fastpath` table; hostile bodies posted to the feeder are
quarantined without hurting the workers or the measurements behind them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest

from oonibackend import storage
from tests.conftest import SAMPLES
from tests.integration.test_fastpath_stack import (
    SAMPLE_FILES,
    Stack,
    new_uid,
    open_report,
    sample,
    submit,
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, geoip_files) -> Iterator[Stack]:
    # Fingerprints reloaded every second: the test below fills the tables.
    with Stack(tmp_path_factory.mktemp("fppipeline"), geoip_files,
               fingerprint_refresh=1.0).start() as s:
        yield s


async def test_samples_submitted_to_the_api_are_scored(stack):
    sent: dict[str, dict] = {}
    async with aiohttp.ClientSession() as s:
        for name in SAMPLE_FILES:
            msm = sample(name)
            rid = await open_report(s, stack.api, msm)
            sent[await submit(s, stack.api, rid, msm)] = msm
    rows = await stack.wait_rows(list(sent))
    for uid, msm in sent.items():
        row = rows[uid]
        assert (row["test_name"], row["probe_cc"]) == (msm["test_name"], msm["probe_cc"])
        scores = json.loads(row["scores"])
        # Samples are years old: flagged by the receipt-date check, still scored.
        assert scores["msg"] == "Measurement start time too old" and row["msm_failure"] == "t"
        if msm["test_name"] != "riseupvpn":  # scored {} by the reference
            assert "blocking_general" in scores, (uid, scores)
        assert row["anomaly"] in ("t", "f")
    # obs_openvpn is inserted right after fastpath (one insert per table): wait for it too.
    openvpn = [u for u, m in sent.items() if m["test_name"] == "openvpn"]
    deadline = time.monotonic() + 30
    while True:
        obs = await stack.query("SELECT measurement_uid FROM obs_openvpn WHERE "
                                "has(%(u)s, measurement_uid)", {"u": openvpn})
        if obs or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert [r["measurement_uid"] for r in obs] == openvpn
    assert stack.metric("fastpath_scored_total") >= len(sent)
    assert stack.metric("fastpath_rows_inserted_total") >= len(sent)
    assert stack.metric("fastpath_lag_seconds_count") >= len(sent)


async def test_fingerprints_are_loaded_and_used(stack):
    """Rows put into fingerprints_dns/http reach the workers at the next refresh."""
    columns = ["name", "scope", "other_names", "location_found", "pattern_type", "pattern",
               "confidence_no_fp", "expected_countries"]
    db = storage.connect(stack.cfg())
    try:
        for kind in ("dns", "http"):
            rows = json.loads((SAMPLES / f"fingerprints_{kind}.json").read_text())
            await db.insert(f"fingerprints_{kind}", rows, columns=columns)
    finally:
        await db.close()
    deadline = time.monotonic() + 30
    while stack.metric("fastpath_fingerprints") < 150 + 1699:
        assert time.monotonic() < deadline, "fingerprints not loaded"
        await asyncio.sleep(0.2)
    msm = sample("web_connectivity_ir_fp.json")
    async with aiohttp.ClientSession() as s:
        rid = await open_report(s, stack.api, msm)
        uid = await submit(s, stack.api, rid, msm)
    row = (await stack.wait_rows([uid]))[uid]
    scores = json.loads(row["scores"])
    assert (row["anomaly"], row["confirmed"], row["blocking_type"]) == ("t", "t", "dns")
    assert scores["confirmed"] is True and scores["blocking_country"] == 1.0
    assert [f["name"] for f in scores["fingerprints"]] == ["ooni.ir_10dot10_ipv4_1"]


async def test_throughput_and_lag(stack):
    """Many measurements at once, straight to the feeder: all inserted; prints the rate."""
    msm = sample("report1.json")
    body = json.dumps({"format": "json", "content": msm}).encode()
    uids = [new_uid(i) for i in range(600)]
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s:
        sem = asyncio.Semaphore(32)

        async def post(uid: str) -> None:
            async with sem, s.post(f"{stack.feeder}/{uid}", data=body,
                                   headers=stack.headers) as r:
                assert r.status == 200, await r.text()

        await asyncio.gather(*(post(u) for u in uids))
    accepted = time.monotonic() - t0
    await stack.wait_rows(uids, timeout=180)
    total = time.monotonic() - t0
    print(f"\n{len(uids)} measurements: accepted in {accepted:.2f}s "
          f"({len(uids) / accepted:.0f}/s), in the table after {total:.2f}s "
          f"({len(uids) / total:.0f}/s end to end)")


HOSTILE = {
    "truncated": b'{"format": "json", "content": {"test_name": "web_conn',
    "not_json": b"\xff\xfe\x00garbage",
    "empty": b"",
    "null": b"null",
    "list": b"[1, 2, 3]",
    "content_null": b'{"format": "json", "content": null}',
    "content_string_garbage": b'{"format": "json", "content": "{not json"}',
    "unknown_format": b'{"format": "xml", "content": {}}',
    "deep_nesting": b'{"format": "json", "content": ' + b"[" * 100000 + b"]" * 100000 + b"}",
}

WRONG_TYPES = {
    "wrong_types": {"test_name": 5, "probe_cc": ["IT"], "probe_asn": {}, "report_id": 7,
                    "measurement_start_time": 1.5, "test_keys": "x", "input": {"a": 1}},
    "null_fields": {k: None for k in ("test_name", "probe_cc", "probe_asn", "report_id",
                                      "measurement_start_time", "test_start_time",
                                      "test_keys", "input", "annotations")},
    "huge_array": {**sample("report1.json"),
                   "test_keys": {"requests": [[[[0] * 10] * 100] * 100] * 10,
                                 "queries": [None] * 100000}},
    "deep_input": {**sample("report1.json"), "input": json.loads("[" * 500 + "]" * 500)},
}


async def test_hostile_bodies_are_quarantined_and_workers_survive(stack):
    bodies = dict(HOSTILE)
    for name, content in WRONG_TYPES.items():
        bodies[name] = json.dumps({"format": "json", "content": content}).encode()
    uids = {name: new_uid(i, testname="webconnectivity") for i, name in enumerate(bodies)}
    deaths = stack.metric("fastpath_worker_deaths_total")
    discarded = stack.metric("fastpath_discarded_total")
    async with aiohttp.ClientSession() as s:
        for name, body in bodies.items():
            async with s.post(f"{stack.feeder}/{uids[name]}", data=body,
                              headers=stack.headers) as r:
                assert r.status == 200, (name, await r.text())
        # Good measurements behind the hostile ones are still scored.
        msm = sample("report1.json")
        rid = await open_report(s, stack.api, msm)
        good = [await submit(s, stack.api, rid, msm) for _ in range(3)]
    await stack.wait_rows(good)
    qdir = stack.data_dir / "fastpath" / "quarantine"
    deadline = time.monotonic() + 60
    while stack.metric("fastpath_queue_depth") > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert stack.metric("fastpath_queue_depth") == 0  # every one committed, none stuck
    rows = {r["measurement_uid"] for r in await stack.fastpath_rows(list(uids.values()))}
    unaccounted = []
    for name, uid in uids.items():
        post, reason = qdir / f"{uid}.post", qdir / f"{uid}.reason"
        if post.exists():
            assert post.read_bytes() == bodies[name], name  # kept exactly as received
            assert reason.read_text().strip(), name
        elif uid not in rows:
            unaccounted.append(name)
    for name in ("truncated", "not_json", "empty", "null", "list", "content_null",
                 "content_string_garbage", "deep_nesting"):
        assert (qdir / f"{uids[name]}.post").exists(), name
    # The rest were scored, quarantined, or discarded like the reference discards
    # measurements without report_id: none is lost silently.
    assert len(unaccounted) <= stack.metric("fastpath_discarded_total") - discarded, unaccounted
    assert stack.metric("fastpath_worker_deaths_total") == deaths
    assert stack.metric("fastpath_workers_alive") == 2
    assert stack.metric("fastpath_quarantined_total") >= 8
