"""Geolocation anomalies: the comparison rule, the row and the bounded batch writer."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from oonibackend.faulty.geoip import Mismatch, compare, row_of, software_of
from oonibackend.faulty.writer import BatchWriter
from oonibackend.metrics import Metrics


def test_compare_cc_asn_and_failed_lookup():
    assert compare("IT", 12874, "IT", 12874) == (False, False)
    assert compare("IT", 12874, "DE", 12874) == (True, False)
    assert compare("IT", 12874, "IT", 3320) == (False, True)
    assert compare("IT", 12874, "DE", 3320) == (True, True)
    assert compare("it", 12874, "IT", 12874) == (False, False)
    # an address GeoIP cannot place is ZZ / 0
    assert compare(None, None, "IT", 12874) == (True, True)


def test_withheld_fields_are_not_compared():
    assert compare("IT", 12874, "ZZ", 0) == (False, False)
    assert compare("IT", 12874, "ZZ", 3320) == (False, True)
    assert compare("IT", 12874, "DE", 0) == (True, False)


def _mismatch(body: bytes) -> Mismatch:
    return Mismatch("US", 2149, "IT", 12874, "uid1", body, dt.datetime(2026, 1, 2, 3, 4, 5))


def test_row_has_oonis_details():
    content = {"software_name": "ooniprobe-android", "software_version": "3.9.0",
               "annotations": {"platform": "android"}, "probe_cc": "IT"}
    for body in (json.dumps({"format": "json", "content": content}),
                 json.dumps({"format": "json", "content": json.dumps(content)})):
        row = row_of(_mismatch(body.encode()))
        assert {k: v for k, v in row.items() if k != "details"} == {
            "ts": dt.datetime(2026, 1, 2, 3, 4, 5), "type": "geoip", "probe_cc": "US",
            "probe_asn": 2149}
        assert json.loads(row["details"]) == {
            "submission_cc": "IT", "submission_asn": 12874, "measurement_uid": "uid1",
            "software_name": "ooniprobe-android", "software_version": "3.9.0",
            "platform": "android"}


def test_unreadable_bodies_give_empty_fields():
    for body in (b"not json", b"[]", b'{"content": "---\\nyaml: 1"}', b'{"content": 3}',
                 b'{"content": {"software_name": 5, "annotations": "x"}}'):
        assert software_of(body) == ("", "", "")
    long = json.dumps({"content": {"software_name": "x" * 1000}}).encode()
    assert software_of(long)[0] == "x" * 128


def _writer(sink, metrics, **kw) -> BatchWriter[int]:
    opts = {"interval": 0.05, "max_items": 3, "max_bytes": 1000} | kw
    return BatchWriter("t", sink, lambda items: [{"n": i} for i in items], metrics,
                       size=lambda i: i, **opts)


async def test_writer_batches_and_flushes_on_close():
    batches: list[list[dict]] = []

    async def sink(rows):
        batches.append(rows)

    m = Metrics()
    w = _writer(sink, m, interval=60)
    w.start()
    assert w.offer(1) and w.offer(2)
    await w.close()
    assert batches == [[{"n": 1}, {"n": 2}]]
    assert m.value("t_written_total") == 2


async def test_writer_drops_when_full_or_database_down():
    calls = 0

    async def down(rows):
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("database down")

    m = Metrics()
    w = _writer(down, m)
    assert [w.offer(i) for i in (1, 2, 3, 4)] == [True, True, True, False]
    assert m.value("t_dropped_total", reason="queue_full") >= 1
    assert await w.flush() == 0
    assert calls == 1 and m.value("t_dropped_total", reason="database") == 3
    # nothing is retried: the queue is empty again
    assert await w.flush() == 0 and calls == 1
    # the byte bound
    assert w.offer(600) and not w.offer(600)


async def test_writer_offer_never_waits_for_a_slow_insert():
    release = asyncio.Event()

    async def slow(rows):
        await release.wait()

    w = _writer(slow, Metrics(), timeout=5)
    w.start()
    w.offer(1)
    await asyncio.sleep(0.1)  # the first batch is now waiting in the sink
    assert w.offer(2)  # still accepted at once
    release.set()
    await w.close()


def test_geoip_loaded_only_with_both_databases(tmp_path):
    from oonibackend.geoip import GeoIP
    from tests.conftest import write_mmdb

    cc, asn = write_mmdb(tmp_path)
    assert GeoIP(cc, asn).loaded
    assert not GeoIP(cc, tmp_path / "missing.mmdb").loaded
    assert not GeoIP(tmp_path / "missing.mmdb", tmp_path / "missing2.mmdb").loaded
