"""Validation of blocking-fingerprint files (CSV and the fixtures' JSON) and their sources."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from oonibackend.jobs.fingerprints.parse import HEADER, FingerprintError, parse_csv, read_dir
from oonibackend.jobs.fingerprints.source import download_dir, is_git_url, open_source
from tests.conftest import SAMPLES

DNS = [["ooni.by_4", "isp", "cl.dns_isp_by_mts", "dns", "full", "134.17.0.7", "5", "BY",
        "ooni", "", ""],
       ["ooni.cn_0", "nat", "", "dns", "full", "8.7.198.45", "5", ",CN ", "", "", "a, note"]]
HTTP = [["cl.nat_sa", "nat", "", "body", "contains", "لمزيد من المعلومات", "9", "SA", "", "",
         ""],
        ["ooni.ae_0", "nat", "ooni.sa_1", "header.server", "prefix", "Protected by WireFilter",
         "5", "AE,SA", "", "https://example.org/", ""],
        ["ooni.x_re", "injb", "", "body", "regexp", r"<title>Blocked \d+</title>", "0", "", "",
         "", ""]]


def csv_text(rows: list[list[str]], header: list[str] = HEADER) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_dir(d: Path, dns: list[list[str]] = DNS, http: list[list[str]] = HTTP) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "fingerprints_dns.csv").write_text(csv_text(dns))
    (d / "fingerprints_http.csv").write_text(csv_text(http))
    return d


def test_valid_csv(tmp_path: Path):
    fps = read_dir(write_dir(tmp_path))
    assert [r["name"] for r in fps.dns] == ["ooni.by_4", "ooni.cn_0"]
    assert fps.dns[1] == {"name": "ooni.cn_0", "scope": "nat", "other_names": "",
                          "location_found": "dns", "pattern_type": "full",
                          "pattern": "8.7.198.45", "confidence_no_fp": 5,
                          "expected_countries": ",CN ", "source": "", "exp_url": "",
                          "notes": "a, note"}
    assert len(fps.http) == 3 and fps.http[0]["pattern"] == "لمزيد من المعلومات"
    assert list(fps.match_rows("http")[1]) == HEADER[:8]


def bad(tmp_path: Path, kind: str, row: list[str]) -> str:
    rows = (DNS if kind == "dns" else HTTP) + [row]
    p = tmp_path / f"fingerprints_{kind}.csv"
    p.write_text(csv_text(rows))
    with pytest.raises(FingerprintError) as e:
        parse_csv(p, kind)
    return str(e.value)


def row(**kw: str) -> list[str]:
    base = dict(zip(HEADER, ["n.new", "nat", "", "dns", "full", "1.2.3.4", "5", "IT", "", "",
                             ""], strict=True))
    base.update(kw)
    return [base[c] for c in HEADER]


@pytest.mark.parametrize("kind,kw,message", [
    ("dns", {"scope": "injb"}, ":4: unknown scope 'injb'"),
    ("dns", {"scope": "NAT"}, ":4: unknown scope 'NAT'"),
    ("dns", {"pattern_type": "glob"}, ":4: unknown pattern_type 'glob'"),
    ("dns", {"confidence_no_fp": "256"}, ":4: confidence_no_fp must be an integer 0..255"),
    ("dns", {"confidence_no_fp": "-1"}, ":4: confidence_no_fp must be an integer 0..255"),
    ("dns", {"confidence_no_fp": "high"}, ":4: confidence_no_fp must be an integer 0..255"),
    ("dns", {"location_found": "body"}, ":4: location_found must be 'dns'"),
    ("dns", {"name": ""}, ":4: invalid name ''"),
    ("dns", {"name": "ooni.by_4"}, ":4: duplicate name 'ooni.by_4' (first at "),
    ("dns", {"pattern": ""}, ":4: empty pattern"),
    ("dns", {"expected_countries": "IT,ITA"}, ":4: invalid country code 'ITA'"),
    ("http", {"location_found": "header.Server", "scope": "prov"},
     ":5: location_found must be 'body' or 'header.<lowercase name>'"),
    ("http", {"location_found": "body", "pattern_type": "regexp", "pattern": "(unclosed"},
     ":5: pattern is not a valid regexp"),
])
def test_invalid_rows(tmp_path: Path, kind, kw, message):
    if kind == "http":
        kw = {"location_found": "body", **kw}
    msg = bad(tmp_path, kind, row(**kw))
    assert f"fingerprints_{kind}.csv{message}" in msg


def test_structure_errors(tmp_path: Path):
    p = tmp_path / "fingerprints_dns.csv"
    p.write_text(csv_text(DNS, header=HEADER[:-1]))
    with pytest.raises(FingerprintError, match=r"fingerprints_dns\.csv:1: header must be"):
        parse_csv(p, "dns")
    p.write_text(csv_text(DNS) + "a,b,c\n")
    with pytest.raises(FingerprintError, match=r"\.csv:4: expected 11 fields, got 3"):
        parse_csv(p, "dns")
    p.write_text(csv_text(DNS) + '"unterminated,nat\n')
    with pytest.raises(FingerprintError, match=r"\.csv:\d+: "):
        parse_csv(p, "dns")
    p.write_bytes(csv_text(DNS).encode() + b"\xff\n")
    with pytest.raises(FingerprintError, match="not UTF-8"):
        parse_csv(p, "dns")
    # a quoted newline inside a field is one record; the error line is where it ends
    p.write_text(csv_text(DNS) + 'x,nat,"two\nlines",dns,full,1.1.1.1,5,,,,\n'
                 + "y,bogus,,dns,full,1.1.1.2,5,,,,\n")
    with pytest.raises(FingerprintError, match=r"\.csv:6: unknown scope 'bogus'"):
        parse_csv(p, "dns")


def test_sample_json_fixtures(tmp_path: Path):
    for k in ("dns", "http"):
        shutil.copy(SAMPLES / f"fingerprints_{k}.json", tmp_path)
    fps = read_dir(tmp_path)
    assert (len(fps.dns), len(fps.http)) == (150, 1699)
    assert fps.dns[0]["source"] == "" and isinstance(fps.dns[0]["confidence_no_fp"], int)
    # CSV files win over the fixtures when both are present
    write_dir(tmp_path)
    assert len(read_dir(tmp_path).http) == 3


def test_json_errors(tmp_path: Path):
    (tmp_path / "fingerprints_dns.json").write_text(
        '[{"name": "a", "scope": "nat", "location_found": "dns", "pattern_type": "full", '
        '"pattern": "1.1.1.1", "confidence_no_fp": true, "expected_countries": ""}]')
    (tmp_path / "fingerprints_http.json").write_text("[]")
    with pytest.raises(FingerprintError, match=r"fingerprints_dns\.json:record 1: confidence"):
        read_dir(tmp_path)
    (tmp_path / "fingerprints_dns.json").write_text('[{"name": "a", "colour": "red"}]')
    with pytest.raises(FingerprintError, match=r"record 1: unknown keys \['colour'\]"):
        read_dir(tmp_path)


def test_missing_files(tmp_path: Path):
    with pytest.raises(FingerprintError, match="no fingerprints_dns.csv"):
        read_dir(tmp_path)
    (tmp_path / "fingerprints_dns.csv").write_text(csv_text(DNS))
    with pytest.raises(FingerprintError, match=r"fingerprints_http\.csv: missing"):
        read_dir(tmp_path)


def test_is_git_url():
    assert is_git_url("https://github.com/ooni/blocking-fingerprints.git")
    assert is_git_url("git@github.com:ooni/blocking-fingerprints")
    assert is_git_url("file:///srv/fp.git")
    assert not is_git_url("https://raw.example.org/ooni/blocking-fingerprints/main/")


async def test_download_dir(tmp_path: Path):
    served = write_dir(tmp_path / "served")
    app = web.Application()
    app.router.add_static("/fp/", served)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with open_source(f"http://127.0.0.1:{port}/fp") as d:
            assert len(read_dir(d).http) == 3
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(FingerprintError, match=r"nope/fingerprints_dns\.csv: HTTP 404"):
            await download_dir(f"http://127.0.0.1:{port}/nope/", dest)
    finally:
        await runner.cleanup()


async def test_open_source_errors(tmp_path: Path):
    with pytest.raises(FingerprintError, match="not a directory"):
        async with open_source(str(tmp_path / "missing")):
            pass
    with pytest.raises(FingerprintError, match="git clone"):
        async with open_source(f"file://{tmp_path}/none.git", timeout=30):
            pass
