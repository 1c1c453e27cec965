"""Strict parsing of test-lists files (before anything touches the database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oonibackend.jobs.citizenlab.lists import (
    CATEGORY_CODES,
    HEADER,
    Entry,
    ListError,
    list_cc,
    read_lists,
    validate_url,
)

H = ",".join(HEADER) + "\n"


def write(repo: Path, name: str, body: str) -> Path:
    p = repo / "lists" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body, encoding="utf-8")
    return p


def test_category_codes():
    assert len(CATEGORY_CODES) == 31 and "CULTR" in CATEGORY_CODES


def test_reads_country_and_global_lists(tmp_path):
    write(tmp_path, "global.csv", H + "https://www.Example.org/a,NEWS,News,2017-04-12,,\n"
          "http://example.net:8080/,GRP,Social,2017-04-12,citizenlab,\"a, note\"\n")
    write(tmp_path, "it.csv", H + "https://www.repubblica.it/,NEWS,News Media,2014-04-15,,\n"
          "https://www.repubblica.it/,NEWS,News Media,2014-04-15,,\n")
    write(tmp_path, "00-LEGEND-category_codes.csv", "whatever,else\n")
    write(tmp_path, "cis.csv", H)
    result = read_lists(tmp_path)
    assert result.files == 2 and result.duplicates == 1
    assert result.entries == [
        Entry("www.example.org", "https://www.Example.org/a", "ZZ", "NEWS"),
        Entry("example.net", "http://example.net:8080/", "ZZ", "GRP"),
        Entry("www.repubblica.it", "https://www.repubblica.it/", "it", "NEWS"),
    ]


@pytest.mark.parametrize("name, body, where, message", [
    ("it.csv", "url,category_code\n", "it.csv:1", "header"),
    ("it.csv", H + "https://a.it/,NEWS,N,2014-01-01,,\nhttps://b.it/,news,N,2014-01-01,,\n",
     "it.csv:3", "unknown category code 'news'"),
    ("it.csv", H + "https://a.it/,XYZ,N,2014-01-01,,\n", "it.csv:2", "unknown category"),
    ("it.csv", H + "ftp://a.it/,NEWS,N,2014-01-01,,\n", "it.csv:2", "http or https"),
    ("it.csv", H + "https:///path,NEWS,N,2014-01-01,,\n", "it.csv:2", "without a host"),
    ("it.csv", H + "https://a.it/ x,NEWS,N,2014-01-01,,\n", "it.csv:2", "invalid url"),
    ("it.csv", H + "https://a.it:99999/,NEWS,N,2014-01-01,,\n", "it.csv:2", "invalid url"),
    ("it.csv", H + "https://a.it/,NEWS,N\n", "it.csv:2", "expected 6 fields"),
    ("ITA.csv", H, "ITA.csv", "two-letter"),
    ("It.csv", H, "It.csv", "two-letter"),
])
def test_errors_name_file_and_line(tmp_path, name, body, where, message):
    write(tmp_path, "global.csv", H)
    write(tmp_path, name, body)
    with pytest.raises(ListError) as e:
        read_lists(tmp_path)
    assert where in str(e.value) and message in str(e.value)


def test_not_utf8(tmp_path):
    write(tmp_path, "global.csv", H)
    (tmp_path / "lists" / "de.csv").write_bytes(H.encode() + b"https://a.de/\xff,NEWS,,,,\n")
    with pytest.raises(ListError, match="de.csv: not UTF-8"):
        read_lists(tmp_path)


def test_missing_lists_or_global(tmp_path):
    with pytest.raises(ListError, match="no lists/ directory"):
        read_lists(tmp_path)
    write(tmp_path, "it.csv", H)
    with pytest.raises(ListError, match="global.csv is missing"):
        read_lists(tmp_path)


def test_list_cc():
    assert list_cc(Path("global.csv")) == "ZZ"
    assert list_cc(Path("br.csv")) == "br"
    assert list_cc(Path("00-LEGEND-country_codes.csv")) is None


@pytest.mark.parametrize("url, host", [("https://EXAMPLE.org/x?y=1", "example.org"),
                                       ("http://[2001:db8::1]/", "2001:db8::1"),
                                       ("http://a.b:81", "a.b")])
def test_validate_url(url, host):
    assert validate_url(url) == host
