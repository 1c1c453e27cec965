"""download-geoip's pure parts (months, templates, verification) and GeoIP's reload."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from oonibackend.geoip import GeoIP
from oonibackend.jobs.geoip.importer import (
    DownloadError,
    candidate_months,
    check_template,
    parse_month,
    previous_month,
    source_url,
    type_matches,
    verify,
)

# Two versions of the same networks: what changes between "months".
NETWORKS = {
    1: [(["8.8.8.0/24"], "US", 15169, "Google LLC"),
        (["1.1.1.0/24", "2606:4700::/32"], "AU", 13335, "Cloudflare, Inc."),
        (["5.5.5.0/24"], "IT", 12874, "Fastweb")],
    2: [(["8.8.8.0/24"], "US", 15169, "Google LLC"),
        (["1.1.1.0/24", "2606:4700::/32"], "AU", 13335, "Cloudflare, Inc."),
        (["5.5.5.0/24"], "FR", 3215, "Orange S.A.")],
}
TYPES = {"country": "DBIP-Country-Lite", "asn": "DBIP-ASN-Lite"}


def make_db(path: Path, kind: str, version: int = 1, database_type: str | None = None,
            networks: list | None = None) -> Path:
    """A small db-ip-like database of `kind` (country / asn)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True,
                   database_type=database_type or TYPES[kind], int_type="u32")
    for cidrs, cc, asn, org in NETWORKS[version] if networks is None else networks:
        if kind == "country":
            rec = {"iso_code": cc, "names": {"en": cc}}
            w.insert_network(IPSet(cidrs), {"country": rec})
        else:
            w.insert_network(IPSet(cidrs), {"autonomous_system_number": asn,
                                            "autonomous_system_organization": org})
    path.parent.mkdir(parents=True, exist_ok=True)
    w.to_db_file(str(path))
    return path


def test_months():
    assert parse_month("2024-02") == "2024-02"
    for bad in ("2024-13", "2024-2", "24-02", "2024-00", "2024-02-01", "../x"):
        with pytest.raises(ValueError):
            parse_month(bad)
    assert previous_month("2024-01") == "2023-12"
    assert previous_month("2024-10") == "2024-09"
    assert candidate_months(None, dt.date(2025, 1, 3)) == ["2025-01", "2024-12"]
    assert candidate_months("2023-07", dt.date(2025, 1, 3)) == ["2023-07"]


def test_templates():
    t = "https://download.db-ip.com/free/dbip-{kind}-lite-{month}.mmdb.gz"
    assert source_url(t, "asn", "2024-05") == \
        "https://download.db-ip.com/free/dbip-asn-lite-2024-05.mmdb.gz"
    assert source_url("/srv/geoip/", "country", "2024-05") == \
        "/srv/geoip/dbip-country-lite-2024-05.mmdb.gz"
    assert source_url("file:///srv/{kind}.mmdb", "asn", "2024-05") == "file:///srv/asn.mmdb"
    check_template(t)
    check_template("/srv/geoip")
    with pytest.raises(ValueError, match="{kind}"):
        check_template("https://example.org/db-{month}.mmdb.gz")


def test_type_matches():
    assert type_matches("country", "DBIP-Country-Lite")
    assert type_matches("country", "GeoLite2-City")
    assert type_matches("asn", "GeoLite2-ASN")
    assert not type_matches("asn", "DBIP-Country-Lite")
    assert not type_matches("country", "DBIP-ASN-Lite")


def test_verify(tmp_path):
    info = verify(make_db(tmp_path / "c.mmdb", "country"), "country")
    assert (info.database_type, info.kind) == ("DBIP-Country-Lite", "country")
    assert info.size == (tmp_path / "c.mmdb").stat().st_size and info.build_epoch > 0
    assert verify(make_db(tmp_path / "a.mmdb", "asn"), "asn").database_type == "DBIP-ASN-Lite"
    with pytest.raises(DownloadError, match="does not hold asn data"):
        verify(tmp_path / "c.mmdb", "asn")
    # Right type, but 1.1.1.1 is not covered.
    make_db(tmp_path / "p.mmdb", "country", networks=NETWORKS[1][:1])
    with pytest.raises(DownloadError, match="no country for 1.1.1.1"):
        verify(tmp_path / "p.mmdb", "country")
    data = (tmp_path / "a.mmdb").read_bytes()
    (tmp_path / "cut.mmdb").write_bytes(data[: len(data) // 2])
    with pytest.raises(DownloadError, match="not a valid MaxMind database"):
        verify(tmp_path / "cut.mmdb", "asn")
    (tmp_path / "junk.mmdb").write_bytes(b"<html>not found</html>")
    with pytest.raises(DownloadError, match="not a valid MaxMind database"):
        verify(tmp_path / "junk.mmdb", "asn")


async def test_reload_swaps_changed_files_and_keeps_broken_ones(tmp_path):
    cc, asn = tmp_path / "cc.mmdb", tmp_path / "asn.mmdb"
    make_db(cc, "country", 1)
    make_db(asn, "asn", 1)
    geo = GeoIP(cc, asn)
    assert geo.lookup("5.5.5.5") == ("IT", 12874, "Fastweb")
    assert await geo.reload() == []  # nothing changed
    # Replaced like download-geoip does: a new file renamed over the old one.
    os.replace(make_db(tmp_path / "new.mmdb", "asn", 2), asn)
    assert await geo.reload() == ["ASN"]
    assert geo.lookup("5.5.5.5") == ("IT", 3215, "Orange S.A.")
    # A broken replacement is ignored: the previous database keeps answering.
    (tmp_path / "bad.mmdb").write_bytes(b"garbage")
    os.replace(tmp_path / "bad.mmdb", cc)
    assert await geo.reload() == []
    assert geo.lookup("5.5.5.5") == ("IT", 3215, "Orange S.A.")
    cc.unlink()  # so is a removed file
    assert await geo.reload() == []
    assert geo.lookup("5.5.5.5")[0] == "IT"
    os.replace(make_db(tmp_path / "new.mmdb", "country", 2), cc)
    assert await geo.reload() == ["country"]
    assert geo.lookup("5.5.5.5") == ("FR", 3215, "Orange S.A.")
    geo.close()


async def test_reload_of_files_missing_at_start(tmp_path):
    cc, asn = tmp_path / "cc.mmdb", tmp_path / "asn.mmdb"
    geo = GeoIP(cc, asn)
    assert geo.lookup("8.8.8.8") == (None, None, None)
    make_db(cc, "country")
    make_db(asn, "asn")
    assert sorted(await geo.reload()) == ["ASN", "country"]
    assert geo.lookup("8.8.8.8") == ("US", 15169, "Google LLC")
    geo.close()
