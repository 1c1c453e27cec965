"""The pure parts of backup/export/restore: chunk planning, keys, run selection, export
decisions, row counting of TSV/CSV streams, the bytes/s limit, and the zstd pipeline."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io

import pytest
import zstandard

from oonibackend.jobs.backup import plan
from oonibackend.jobs.backup.stream import (
    Compressor,
    CsvCounter,
    Decompressor,
    LineCounter,
    StreamError,
    collect,
    throttle_delay,
)

T0 = dt.datetime(2024, 1, 1)


def h(n: int) -> dt.datetime:
    return T0 + dt.timedelta(hours=n)


# ---- planning ----

def test_split_range_cuts_on_bucket_starts_and_covers_the_range():
    buckets = [(h(0), 40), (h(1), 30), (h(2), 50), (h(5), 10), (h(7), 60)]
    ranges = plan.split_range(T0, h(24), buckets, 80)
    assert ranges == [(T0, h(2), 70), (h(2), h(7), 60), (h(7), h(24), 60)]
    # contiguous, no gap or overlap, every row somewhere
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert sum(n for _, _, n in ranges) == 190


def test_split_range_oversized_bucket_stands_alone():
    buckets = [(h(0), 10), (h(1), 500), (h(2), 10)]
    assert plan.split_range(T0, h(3), buckets, 100) == [
        (T0, h(1), 10), (h(1), h(2), 500), (h(2), h(3), 10)]
    assert plan.oversized(buckets, 100) == [h(1)]


def test_split_range_without_rows_is_one_empty_range():
    assert plan.split_range(T0, h(1), [], 5) == [(T0, h(1), 0)]


def test_split_range_rejects_buckets_outside():
    with pytest.raises(plan.PlanError):
        plan.split_range(h(1), h(2), [(h(0), 1)], 5)


def test_refine_replaces_coarse_buckets_by_finer_ones():
    secs = [(h(1), 3), (h(1) + dt.timedelta(seconds=7), 4)]
    assert plan.refine([(h(0), 2), (h(1), 7), (h(2), 1)], {h(1): secs}) == [
        (h(0), 2), *secs, (h(2), 1)]


def test_month_chunks_named_in_order_and_bounded_by_the_month():
    chunks = plan.month_chunks(202312, [(dt.datetime(2023, 12, 5), 3),
                                        (dt.datetime(2023, 12, 9), 3)], 4)
    assert [c.name for c in chunks] == ["2023-12.000", "2023-12.001"]
    assert chunks[0].lo == "2023-12-01 00:00:00" and chunks[0].hi == "2023-12-09 00:00:00"
    assert chunks[1].hi == "2024-01-01 00:00:00"
    assert plan.Chunk.from_json(chunks[1].to_json()) == chunks[1]


def test_months():
    assert plan.parse_month("2024-02") == 202402
    assert plan.month_label(202402) == "2024-02"
    assert plan.month_end(202412) == dt.datetime(2025, 1, 1)
    assert plan.month_end(202402) == dt.datetime(2024, 3, 1)
    for bad in ("2024-13", "2024-1", "24-01", "2024-00", "x"):
        with pytest.raises(plan.PlanError):
            plan.parse_month(bad)


def test_run_ids():
    assert plan.default_run_id(dt.datetime(2024, 3, 9, 23, tzinfo=dt.UTC)) == "20240309"
    assert plan.valid_run_id("2024-03_b") == "2024-03_b"
    for bad in ("", "../x", "a/b", "-x", "x" * 65, "a b"):
        with pytest.raises(plan.PlanError):
            plan.valid_run_id(bad)


def test_stored_columns_keep_materialized_and_drop_alias():
    cols = [{"name": "a", "type": "String", "kind": ""},
            {"name": "u", "type": "DateTime64(3)", "kind": "MATERIALIZED"},
            {"name": "d", "type": "UInt8", "kind": "DEFAULT"},
            {"name": "x", "type": "String", "kind": "ALIAS"},
            {"name": "e", "type": "String", "kind": "EPHEMERAL"}]
    assert [c["name"] for c in plan.stored_columns(cols)] == ["a", "u", "d"]


# ---- keys and runs ----

def test_keys():
    assert plan.chunk_key("backup", "20240101", "fastpath", "2024-01.003") == \
        "backup/20240101/fastpath/2024-01.003.tsv.zst"
    assert plan.manifest_key("b", "r1", "t") == "b/r1/t/manifest.json"
    assert plan.run_manifest_key("b", "r1") == "b/r1/manifest.json"
    with pytest.raises(plan.PlanError):
        plan.chunk_key("b", "r", "../etc", "x")


def test_runs_with_and_expiry():
    keys = ["b/20240101/manifest.json", "b/20240101/t/manifest.json", "b/20240101/t/all.tsv.zst",
            "b/20240102/t/manifest.json",  # incomplete run: table done, no run manifest
            "b/20240103/manifest.json", "b/20240103/u/manifest.json",
            "other/20240104/manifest.json", "b/x/y/t/manifest.json"]
    assert plan.runs_with(keys, "b") == ["20240101", "20240103"]
    assert plan.runs_with(keys, "b", "t") == ["20240101", "20240102"]
    assert plan.expired_runs(["20240101", "20240103", "20240105"], 2, "20240105") == \
        ["20240101"]
    assert plan.expired_runs(["20240101", "20240103"], 0, "20240103") == []
    assert plan.expired_runs(["20240101", "20240103"], 1, "20240101") == []
    assert plan.run_of("b/20240101/t/all.tsv.zst", "b") == "20240101"
    assert plan.run_of("c/20240101/x", "b") is None


def test_table_manifest_totals():
    chunks = [plan.Chunk("2024-01.000", "2024-01-01 00:00:00", "2024-02-01 00:00:00", 5),
              plan.whole_chunk(2)]
    done = {"2024-01.000": {"rows": 5, "bytes": 10, "raw_bytes": 50, "sha256": "a"},
            "all": {"rows": 2, "bytes": 3, "raw_bytes": 9, "sha256": "b"}}
    m = plan.table_manifest("t", "r", {"engine": "MergeTree"}, [{"name": "a"}], chunks, done,
                            "backup", dt.datetime(2024, 2, 1, tzinfo=dt.UTC))
    assert m["rows"] == 7 and m["bytes"] == 13 and m["finished"] == "2024-02-01T00:00:00Z"
    assert [c["key"] for c in m["chunks"]] == ["backup/r/t/2024-01.000.tsv.zst",
                                               "backup/r/t/all.tsv.zst"]


# ---- exports ----

def test_export_files_mark_past_months_complete():
    now = dt.datetime(2024, 3, 15, tzinfo=dt.UTC)
    files = plan.export_files("exports", "fastpath", [202403, 202401, 202402], now)
    assert [(f.label, f.complete) for f in files] == [
        ("2024-01", True), ("2024-02", True), ("2024-03", False)]
    assert files[0].key == "exports/fastpath/2024-01.csv.zst"
    assert [f.label for f in plan.export_files("e", "t", [202401, 202402], now, 202402)] == \
        ["2024-02"]
    whole = plan.export_files("e", "citizenlab", None, now)
    assert [(f.key, f.month, f.complete) for f in whole] == [
        ("e/citizenlab/citizenlab.csv.zst", None, False)]


def test_export_up_to_date():
    past = plan.ExportFile("t", "2024-01", "e/t/2024-01.csv.zst", 202401, True)
    current = plan.ExportFile("t", "2024-03", "e/t/2024-03.csv.zst", 202403, False)
    entry = {"key": past.key, "source_rows": 10, "checksum": None}
    assert plan.export_up_to_date(entry, past, 10, None)
    assert not plan.export_up_to_date(entry, past, 11, None)
    assert not plan.export_up_to_date(None, past, 10, None)
    cur = {"key": current.key, "source_rows": 10, "checksum": "42"}
    assert plan.export_up_to_date(cur, current, 10, "42")
    assert not plan.export_up_to_date(cur, current, 10, "43")
    assert not plan.export_up_to_date(cur, current, 10, None)


# ---- streams ----

TSV = (b"a\tb\nString\tString\n"
       b"x\\ty\tmulti\\nline\n"
       b"\\\\\t\n"
       b"last\trow\n")
CSV = (b'"a","b"\n'
       b'"plain",1\n'
       b'"with ""quotes"" and\nnewline",2\n'
       b'"a,b","\n\n"\n'
       b'"",3\n')


def pieces(data: bytes, cut: int) -> list[bytes]:
    return [data[:cut], data[cut:]]


@pytest.mark.parametrize("cut", range(0, len(CSV) + 1))
def test_csv_counter_any_split(cut):
    c = CsvCounter(header_lines=1)
    for p in pieces(CSV, cut):
        c.feed(p)
    assert c.rows == len(list(csv.reader(io.StringIO(CSV.decode())))) - 1 == 4


@pytest.mark.parametrize("cut", range(0, len(TSV) + 1, 3))
def test_line_counter(cut):
    c = LineCounter(header_lines=2)
    for p in pieces(TSV, cut):
        c.feed(p)
    assert c.rows == 3
    assert LineCounter(header_lines=2).rows == 0


def test_throttle_delay():
    assert throttle_delay(1000, 0.5, 1000) == pytest.approx(0.5)
    assert throttle_delay(1000, 2.0, 1000) == 0.0
    assert throttle_delay(10**9, 0.0, 0) == 0.0


async def agen(items):
    for i in items:
        yield i


async def test_compress_then_decompress_round_trip():
    data = [TSV[:7], TSV[7:], b"", b"more\trows\n" * 5000]
    comp = Compressor(3, LineCounter(header_lines=2))
    stored = await collect(comp.run(agen(data)))
    assert comp.rows == 3 + 5000 and comp.raw_bytes == sum(map(len, data))
    assert comp.bytes == len(stored) and comp.sha.hexdigest() == hashlib.sha256(stored).hexdigest()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == b"".join(data)

    dec = Decompressor(LineCounter(header_lines=2), comp.sha.hexdigest())
    out = await collect(dec.run(agen([stored[i:i + 100] for i in range(0, len(stored), 100)])))
    assert out == b"".join(data) and dec.rows == comp.rows


async def test_compressor_respects_the_rate():
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    comp = Compressor(1, LineCounter(), rate=1000, clock=lambda: now[0], sleep=sleep)
    await collect(comp.run(agen([b"x" * 500, b"y" * 500])))
    assert slept == [pytest.approx(0.5), pytest.approx(0.5)]


async def test_decompressor_refuses_bad_objects():
    stored = zstandard.ZstdCompressor().compress(TSV)
    with pytest.raises(StreamError, match="sha256"):
        await collect(Decompressor(LineCounter(), "0" * 64).run(agen([stored])))
    with pytest.raises(StreamError, match="truncated"):
        await collect(Decompressor(LineCounter()).run(agen([stored[:-5]])))
    with pytest.raises(StreamError, match="corrupt"):
        await collect(Decompressor(LineCounter()).run(agen([b"not zstd at all"])))


async def test_native_driver_refuses_raw_streams_clearly():
    from oonibackend import config
    from oonibackend.storage import DatabaseError
    from oonibackend.storage.native import NativeDatabase

    db = NativeDatabase(config.load(None, **{"database.driver": "native",
                                             "database.url": "clickhouse://127.0.0.1:1"}))
    with pytest.raises(DatabaseError, match="http"):
        db.stream("SELECT 1")
    with pytest.raises(DatabaseError, match="not supported by the native driver"):
        await db.insert_raw("t", "TabSeparated", agen([b"1\n"]))


def test_stream_error_found_in_the_tail_of_a_body():
    from oonibackend.storage.http import stream_error

    assert stream_error(b"1\t2\nCode: 395. DB::Exception: boom (FUNCTION_THROW)\n") == \
        "Code: 395. DB::Exception: boom (FUNCTION_THROW)"
    assert stream_error(b"1\nCode: 395, e.displayText() = DB::Exception: boom\n")
    assert stream_error(b"1\r\n__exception__\r\nTAG\r\nCode: 1. DB::Exception: x\r\n")
    assert stream_error(b"a\t__exception__ inside a value\nCode: 5 is data\n") is None


def test_header_lines_of_formats():
    from oonibackend.storage.sql import format_name, header_lines, insert_prefix

    assert header_lines("TabSeparatedWithNamesAndTypes") == 2
    assert header_lines("CSVWithNames") == 1 and header_lines("Native") == 0
    assert insert_prefix("t", ["a", "b"], {"optimize_on_insert": 0}) == \
        "INSERT INTO t (a, b) SETTINGS optimize_on_insert=0"
    with pytest.raises(ValueError):
        format_name("CSV; DROP TABLE x")
