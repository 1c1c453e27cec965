"""The ISO 3166-1 alpha-2 → short English name table behind /api/_/countries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from oonibackend import countries

ISO_CODES = Path("/usr/share/iso-codes/json/iso_3166-1.json")  # Debian's iso-codes package


def test_lookup():
    assert countries.name("IT") == "Italy"
    assert countries.name("it") == "Italy"
    assert countries.name("CA") == "Canada"
    assert countries.name("BA") == "Bosnia"  # the legacy table's short name
    assert countries.name("IR") == "Iran"
    assert countries.name("XK") == "Kosovo"


def test_unknown_and_zz_are_not_countries():
    for code in ("ZZ", "XX", "", "ITA"):
        assert countries.name(code) is None


def test_every_entry_is_a_code_and_a_name():
    assert len(countries.NAMES) == 250  # 249 assigned codes + XK
    for code, name in countries.NAMES.items():
        assert re.fullmatch(r"[A-Z]{2}", code)
        assert name and name == name.strip()
        # Short names, not the inverted long forms ("Korea, Republic of").
        assert not re.search(r", .*\bof( the)?$", name), name


@pytest.mark.skipif(not ISO_CODES.exists(), reason="iso-codes not installed")
def test_covers_every_assigned_code_of_iso_codes():
    assigned = {e["alpha_2"] for e in json.loads(ISO_CODES.read_text())["3166-1"]}
    assert assigned <= set(countries.NAMES)
    assert set(countries.NAMES) - assigned == {"XK"}
