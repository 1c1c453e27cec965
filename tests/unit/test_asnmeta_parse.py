"""The AS-to-organisation history parser: entry shapes, validation, streaming, refusals."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest

from oonibackend.jobs.asnmeta.parse import (
    MAX_FIELD_CHARS,
    UNKNOWN_DATE,
    AsnEntry,
    AsnmetaParser,
    FormatError,
    JSONObjectStream,
    parse_asn,
    parse_date,
    parse_document,
    parse_entry,
)
from oonibackend.jobs.asnmeta.source import Decoder, SourceError, display, local_path

DOC = {
    "15169": [["Google LLC", "US", "2020-01-02", "GOOGLE", "ARIN"],
              ["Google Inc.", "US", "GOOGLE", "20100101", "ARIN"]],
    "3269": [{"org_name": "Telecom Italia S.p.A.", "cc": "IT", "changed": "2019-05-05",
              "aut_name": "ASN-IBSNAZ", "source": "RIPE"}],
    "4294967295": [["Last AS", "", "", "LAST", None]],
}


def test_both_list_orders_and_objects():
    rows, stats = parse_document(json.dumps(DOC).encode())
    assert (stats.asns, stats.entries, stats.invalid) == (3, 4, 0)
    assert rows[0] == AsnEntry(15169, "Google LLC", "US", dt.date(2020, 1, 2), "GOOGLE", "ARIN")
    assert rows[1] == AsnEntry(15169, "Google Inc.", "US", dt.date(2010, 1, 1), "GOOGLE", "ARIN")
    assert rows[2].as_row() == {"asn": 3269, "org_name": "Telecom Italia S.p.A.", "cc": "IT",
                                "changed": dt.date(2019, 5, 5), "aut_name": "ASN-IBSNAZ",
                                "source": "RIPE"}
    assert rows[3] == AsnEntry(2**32 - 1, "Last AS", "", UNKNOWN_DATE, "LAST", "")


@pytest.mark.parametrize("key", ["0", "4294967296", "-1", "AS15169", "1.5", "", " 12",
                                 "12345678901"])
def test_bad_asn_keys(key):
    with pytest.raises(ValueError):
        parse_asn(key)


@pytest.mark.parametrize("value, expected", [
    ("2024-02-29", dt.date(2024, 2, 29)), ("19991231", dt.date(1999, 12, 31)),
    ("1970-01-01", dt.date(1970, 1, 1)), ("2149-06-06", dt.date(2149, 6, 6)),
])
def test_dates(value, expected):
    assert parse_date(value) == expected


@pytest.mark.parametrize("value", ["2023-02-29", "2023-13-01", "1969-12-31", "2150-01-01",
                                   "23-01-01", "2023/01/01", 20230101, "2023-01-01T00:00"])
def test_bad_dates(value):
    with pytest.raises(ValueError):
        parse_date(value)


@pytest.mark.parametrize("entry, reason", [
    (["Org", "us", "2020-01-01", "AUT", "RIPE"], "cc"),
    (["Org", "USA", "2020-01-01", "AUT", "RIPE"], "cc"),
    (["Org", 12, "2020-01-01", "AUT", "RIPE"], "cc"),
    (["Org", "US", "2020-01-01", "AUT"], "5 fields"),
    (["Org", "US", "2020-01-01", "AUT", "RIPE", "x"], "5 fields"),
    (["Org", "US", "yesterday", "AUT", "RIPE"], "changed"),
    (["Org", "US", "2020-02-30", "AUT", "RIPE"], "changed"),
    (["x" * (MAX_FIELD_CHARS + 1), "US", "2020-01-01", "AUT", "RIPE"], "longer"),
    (["Org\x00", "US", "2020-01-01", "AUT", "RIPE"], "control"),
    ([None, "US", "2020-01-01", "AUT", "RIPE"], "org_name must be a string"),
    (["", "US", "2020-01-01", "", "RIPE"], "neither"),
    ({"org_name": "Org", "country": "US"}, "unknown keys"),
    ("Org,US", "list or an object"),
])
def test_invalid_entries(entry, reason):
    with pytest.raises(ValueError, match=reason):
        parse_entry(1, entry)


def test_few_invalid_entries_are_skipped_many_refuse():
    doc = {str(i): [[f"Org {i}", "DE", "2021-03-04", f"AUT-{i}", "RIPE"]] for i in range(1, 201)}
    doc["201"] = [["Bad", "de", "2021-03-04", "BAD", "RIPE"]]
    doc["AS7"] = [["Bad key", "DE", "2021-03-04", "BAD", "RIPE"]]
    rows, stats = parse_document(json.dumps(doc).encode())
    assert (len(rows), stats.entries, stats.invalid) == (200, 200, 2)
    assert any("201 entry 0: cc" in e for e in stats.errors)
    doc.update({str(i): [["Bad", "US", "never", "BAD", "RIPE"]] for i in range(300, 310)})
    with pytest.raises(FormatError, match=r"12 of 212 entries are invalid .*never"):
        parse_document(json.dumps(doc).encode())
    rows, stats = parse_document(json.dumps(doc).encode(), max_invalid=0.1)
    assert stats.invalid == 12


def test_duplicates():
    entry = ["Org", "FR", "2020-01-01", "AUT", "RIPE"]
    text = '{"5": [%s, %s], "5": [%s]}' % ((json.dumps(entry),) * 3)
    p = AsnmetaParser()
    rows = p.feed(text.encode()) + p.finish()
    assert len(rows) == 1
    assert (p.stats.duplicates, p.stats.invalid) == (1, 1)  # the repeated key is refused
    assert "duplicate key" in p.stats.errors[0]


@pytest.mark.parametrize("text, match", [
    ("", "empty document"),
    ("   \n", "empty document"),
    ("[1, 2]", "must be a JSON object"),
    ('{"1": [["Org", "US", "2020-01-01", "A", "R"]]', "truncated JSON"),
    ('{"1": [["Org", "US", "2020-01-01", "A", "R"]', "truncated or invalid JSON"),
    ('{"1": [["Org", "US", "2020-01', "truncated or invalid JSON"),
    ('{"1": [["Org", "US", "2020-01-01", "A", "R"]],}', "expected a member name"),
    ('{"1" [["Org"]]}', "expected ':'"),
    ('{"1": []] ', "expected ',' or '}'"),
    ('{"1": [nope]}', "truncated or invalid JSON"),
    ('{} {}', "data after the end"),
    ('{1: []}', "expected a member name"),
])
def test_malformed_documents(text, match):
    with pytest.raises(FormatError, match=match):
        parse_document(text.encode())


def test_non_utf8_is_refused():
    with pytest.raises(FormatError, match="not UTF-8"):
        parse_document(b'{"1": [["Caf\xe9", "FR", "2020-01-01", "A", "R"]]}')
    p = AsnmetaParser()  # a document cut inside a multi-byte character
    p.feed(b'{"1": [["Caf' + "é".encode()[:1])
    with pytest.raises(FormatError, match="not UTF-8"):
        p.finish()


def test_stream_any_split_gives_the_same_members():
    text = json.dumps({"1": [1, -2.5e3, "a\\\"b", None, True, {"x": []}], "20": 123,
                       "300": "é", "4000": []}, ensure_ascii=False)
    expected = list(json.loads(text).items())
    for cut in range(len(text) + 1):
        s = JSONObjectStream()
        got = s.feed(text[:cut]) + s.feed(text[cut:]) + s.close()
        assert got == expected, cut
    s = JSONObjectStream()  # one character at a time
    got = [m for c in text for m in s.feed(c)] + s.close()
    assert got == expected


def test_stream_bounds_one_member():
    s = JSONObjectStream(max_value_chars=100)
    s.feed('{"1": [')
    with pytest.raises(FormatError, match="larger than 100 characters"):
        s.feed('"' + "x" * 200)


def test_parser_chunks_match_whole_document():
    data = json.dumps({str(i): [[f"Org {i}", "BR", "2022-02-02", f"A{i}", "LACNIC"]]
                       for i in range(1, 2000)}).encode()
    whole, _ = parse_document(data)
    p = AsnmetaParser()
    rows = []
    for i in range(0, len(data), 777):
        rows += p.feed(data[i:i + 777])
    rows += p.finish()
    assert rows == whole and len(rows) == 1999


# ---------------------------------------------------------------- source helpers


def _decode(data: bytes, cap: int = 1 << 20, step: int = 5) -> bytes:
    d = Decoder(cap, "src")
    out = b""
    for i in range(0, len(data), step):
        out += b"".join(d.feed(data[i:i + step]))
    return out + b"".join(d.finish())


def test_decoder_plain_gzip_and_multimember():
    plain = b'{"1": []}' * 50
    assert _decode(plain) == plain
    assert _decode(gzip.compress(plain)) == plain
    assert _decode(gzip.compress(plain[:100]) + gzip.compress(plain[100:])) == plain
    assert _decode(b"{") == b"{"  # shorter than the gzip magic


def test_decoder_refuses_truncated_gzip_garbage_and_bombs():
    z = gzip.compress(b"x" * 100_000)
    with pytest.raises(SourceError, match="truncated gzip"):
        _decode(z[:-12])
    with pytest.raises(SourceError, match="garbage after the gzip"):
        _decode(z + b"trailing")
    with pytest.raises(SourceError, match="invalid gzip data"):
        _decode(z[:10] + b"\xff" * 50)
    with pytest.raises(SourceError, match="larger than 50000 bytes"):
        _decode(z, cap=50_000, step=len(z))


def test_local_path_and_display(tmp_path):
    assert local_path(f"file://{tmp_path}/a%20b.json") == tmp_path / "a b.json"
    assert local_path("relative/a.json").as_posix() == "relative/a.json"
    with pytest.raises(SourceError, match="local path"):
        local_path("file://host/x")
    with pytest.raises(SourceError, match="not a file path"):
        local_path("ftp://example.org/x")
    assert display("https://u:secret@example.org:8443/a.json?token=x") == \
        "https://example.org:8443/a.json"
