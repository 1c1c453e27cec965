"""Reading archived bodies from jsonl.gz objects (local object store): one gzip member by
byte range, or a line number streamed through a multi-member gunzip in small chunks."""

from __future__ import annotations

import gzip
import json
import os
import random

import pytest

from oonibackend.bodies import archive
from oonibackend.jobs.upload import files
from oonibackend.objectstore.local import LocalStore
from oonibackend.storage.sql import render

KEY = "raw/20240102/03/IT/webconnectivity/2024010203_IT_webconnectivity.n1.0.jsonl.gz"


def lines(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    return [json.dumps({"n": i, "pad": os.urandom(rnd.randrange(1, 400)).hex()}).encode()
            for i in range(n)]


def multi_member(data: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """Like the uploader: one gzip member per line; (offset, length) of each."""
    out, spans = b"", []
    for line in data:
        m = files.gzip_member(line + b"\n")
        spans.append((len(out), len(m)))
        out += m
    return out, spans


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path)


def put(store: LocalStore, data: bytes, key: str = KEY) -> None:
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, 1 << 20])
def test_gunzip_stream_reads_concatenated_members_in_any_chunks(chunk):
    data = lines(30)
    blob, _ = multi_member(data)
    blob += gzip.compress(b"".join(x + b"\n" for x in data))  # and one big member
    stream = archive.GunzipStream()
    out = b"".join(o for i in range(0, len(blob), chunk) for o in stream.feed(blob[i:i + chunk]))
    assert out == 2 * b"".join(x + b"\n" for x in data)


def test_gunzip_stream_bounds_each_output_piece():
    blob = gzip.compress(b"\n" * (5 * archive.MAX_OUT))
    pieces = list(archive.GunzipStream().feed(blob))
    assert max(map(len, pieces)) <= archive.MAX_OUT and sum(map(len, pieces)) == \
        5 * archive.MAX_OUT


def test_line_finder_across_pieces():
    text = b"zero\none\n\nthree\nfour"
    for size in (1, 2, 3, 100):
        for target, expected in ((0, b"zero"), (1, b"one"), (2, b""), (3, b"three")):
            f = archive.LineFinder(target)
            got = None
            for i in range(0, len(text), size):
                got = f.feed(text[i:i + size])
                if got is not None:
                    break
            assert got == expected, (size, target)
        last = archive.LineFinder(4)
        for i in range(0, len(text), size):
            assert last.feed(text[i:i + size]) is None
        assert last.at_eof() == b"four"
    beyond = archive.LineFinder(9)
    assert beyond.feed(text) is None and beyond.at_eof() is None


def test_line_finder_refuses_huge_lines():
    f = archive.LineFinder(0, max_line=10)
    with pytest.raises(archive.ArchiveError):
        f.feed(b"x" * 11)


async def test_by_byte_range_one_member(store):
    data = lines(20)
    blob, spans = multi_member(data)
    put(store, blob)
    for i in (0, 7, 19):
        off, n = spans[i]
        assert await archive.read_member(store, KEY, off, n) == data[i]
        row = {"s3path": KEY, "linenum": 0, "byte_offset": off, "byte_length": n}
        assert await archive.read_body(store, row) == data[i]


async def test_by_byte_range_short_or_bad(store):
    blob, spans = multi_member(lines(3))
    put(store, blob)
    with pytest.raises(archive.ArchiveError):
        await archive.read_member(store, KEY, len(blob) - 5, 10)   # past the end
    with pytest.raises(archive.ArchiveError):
        await archive.read_member(store, KEY, spans[1][0], spans[1][1] - 4)  # truncated


@pytest.mark.parametrize("chunk", [13, 256, 4096, archive.CHUNK])
async def test_by_line_number_multi_member(store, chunk):
    data = lines(60)
    put(store, multi_member(data)[0])
    for i in (0, 1, 31, 59):
        assert await archive.read_line(store, KEY, i, chunk) == data[i]
    assert await archive.read_line(store, KEY, 60, chunk) is None


@pytest.mark.parametrize("chunk", [13, 4096])
async def test_by_line_number_single_member(store, chunk):
    """Files written by other tools: one gzip stream for all lines (last newline missing)."""
    data = lines(40, seed=2)
    put(store, gzip.compress(b"\n".join(data)))
    assert await archive.read_line(store, KEY, 0, chunk) == data[0]
    assert await archive.read_line(store, KEY, 39, chunk) == data[39]
    assert await archive.read_line(store, KEY, 40, chunk) is None
    row = {"s3path": KEY, "linenum": 17, "byte_offset": 0, "byte_length": 0}
    assert await archive.read_body(store, row) == data[17]


async def test_missing_object_and_garbage(store):
    with pytest.raises(FileNotFoundError):
        await archive.read_line(store, KEY, 0)
    put(store, b"this is not gzip at all")
    with pytest.raises(Exception):  # noqa: B017 - zlib.error
        await archive.read_line(store, KEY, 0)


def test_jsonl_sql_prefers_the_row_of_the_uid():
    sql, params = archive.jsonl_sql("rid", "", "uid")
    rendered = render(sql, params)
    assert "measurement_uid IN ('uid', '')" in rendered
    assert "ORDER BY measurement_uid = 'uid' DESC" in rendered and rendered.endswith("LIMIT 1")
