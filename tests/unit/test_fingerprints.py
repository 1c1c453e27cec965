"""Fingerprint preparation and matching (docs/fastpath.md §3), against a literal reference
implementation."""

from __future__ import annotations

import base64
import binascii
import json
import pickle
import random

import pytest

from oonibackend.jobs.fingerprints.parse import MATCH_COLUMNS
from tests.conftest import SAMPLES
from workers.fingerprints import (
    Fingerprints,
    LiteralSearch,
    is_confirmed,
    locality,
    prepare_expected_countries,
)

DNS_JSON = SAMPLES / "fingerprints_dns.json"
HTTP_JSON = SAMPLES / "fingerprints_http.json"
MINI = ("name", "scope", "location_found", "confidence_no_fp", "expected_countries")


@pytest.fixture(scope="module")
def fps() -> Fingerprints:
    return Fingerprints.from_json_files(DNS_JSON, HTTP_JSON)


@pytest.fixture(scope="module")
def prepared() -> dict[str, list[dict]]:
    """The samples prepared by the straightforward rules of §3.1."""
    out = {}
    for kind, path in (("dns", DNS_JSON), ("http", HTTP_JSON)):
        recs = json.loads(path.read_text())
        for r in recs:
            r["expected_countries"] = reference_expected_countries(r["expected_countries"])
        out[kind] = recs
    return out


# ---- the reference, written out literally (linear scans) ----------------------------------


def reference_expected_countries(s: str) -> list[str]:
    return sorted({c.upper() for c in s.strip().split(",")} - {"", "ZZ"})


def _g(d, k, default):
    v = d.get(k)
    return default if v is None else v


def _mini(fp: dict) -> dict:
    return {k: v for k, v in fp.items() if k in MINI}


def reference_match_response(resp: dict, http: list[dict]) -> list[dict]:
    matches = []
    body = resp.get("body")
    if isinstance(body, dict):
        if "data" in body and body.get("format") == "base64":
            body = base64.b64decode(body["data"])
        else:
            body = None
    if body is not None:
        for fp in http:
            if fp["location_found"] != "body":
                continue
            needle = fp["pattern"].encode() if isinstance(body, bytes) else fp["pattern"]
            if body.find(needle) != -1:
                matches.append(_mini(fp))
    headers = _g(resp, "headers", {})
    if not headers:
        return matches
    headers = {k.lower(): v for k, v in headers.items()}
    for fp in http:
        loc = fp["location_found"]
        if not loc.startswith("header."):
            continue
        name = loc[len("header."):]
        if name not in headers:
            continue
        value = headers[name]
        if fp["pattern_type"] == "full":
            if value == fp["pattern"]:
                matches.append(_mini(fp))
        elif fp["pattern_type"] == "prefix":
            if isinstance(value, dict) and value.get("format") == "base64":
                value = base64.b64decode(value.get("data", "")).decode("latin1")
            if value.startswith(fp["pattern"]):
                matches.append(_mini(fp))
    return matches


def reference_match(msm: dict, prepared: dict[str, list[dict]]) -> list[dict]:
    msm["probe_cc"]  # noqa: B018
    tk = msm.get("test_keys")
    if tk is None:
        return []
    matches = []
    for q in _g(tk, "queries", []):
        for a in _g(q, "answers", []):
            if "ipv4" in a:
                addr = a["ipv4"]
            elif "hostname" in a:
                addr = a["hostname"]
            elif "ipv6" in a:
                addr = a["ipv6"]
            else:
                addr = ""
            for fp in prepared["dns"]:
                if addr == fp["pattern"]:
                    matches.append(dict(fp))
    for req in _g(tk, "requests", []):
        resp = req.get("response")
        if resp is None:
            continue
        matches.extend(reference_match_response(resp, prepared["http"]))
    return matches


# ---- preparation ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw,expected", [
    ("", []), (",RU", ["RU"]), ("AU,DE,DK,FR ", ["AU", "DE", "DK", "FR"]),
    ("zz,it,IT", ["IT"]), (None, []), (["FR"], ["FR"]),
])
def test_prepare_expected_countries(raw, expected):
    assert prepare_expected_countries(raw) == expected


def test_is_confirmed_and_locality():
    assert is_confirmed("IT", {"expected_countries": ["IT"], "scope": "bogus"})
    assert not is_confirmed("IT", {"expected_countries": ["FR"], "scope": "bogus"})
    assert not is_confirmed("ZZ", {"expected_countries": ["ZZ"], "scope": "bogus"})
    assert is_confirmed("IT", {"expected_countries": [], "scope": "nat"})
    assert is_confirmed("IT", {"expected_countries": [], "scope": "isp"})
    assert [locality(s) for s in ("inst", "isp", "nat", "prod", "vbw", "fp", "injb", "x")] == [
        "local", "isp", "country", "general", "general", "general", "general", "general"]


def test_samples_prepared(fps, prepared):
    assert (len(fps.dns), len(fps.http)) == (150, 1699)
    assert fps.prepared() == prepared
    # JSON records keep their (alphabetical) key order, also in the minified form.
    assert list(fps.http[0].minified) == ["confidence_no_fp", "expected_countries",
                                          "location_found", "name", "scope"]


def test_rows_as_db_tuples_and_dicts():
    row8 = ("ooni.by_4", "isp", "cl.dns_isp_by_mts", "dns", "full", "134.17.0.7", 5, "BY")
    row11 = row8 + ("src", "http://x", "notes")
    for row in (row8, row11):
        f = Fingerprints.from_rows([row], [])
        assert f.prepared() == {"dns": [dict(zip(MATCH_COLUMNS, row8[:7] + (["BY"],),
                                                 strict=True))], "http": []}
        # DB key order (the SELECT's): name, scope, location_found, confidence_no_fp, expected.
        assert list(f.dns[0].minified) == list(MINI)
    d = dict(zip(MATCH_COLUMNS, row8, strict=True)) | {"notes": "n", "source": "s"}
    f = Fingerprints.from_rows([d], [])
    assert list(f.dns[0].record) == list(MATCH_COLUMNS)
    with pytest.raises(ValueError):
        Fingerprints.from_rows([{"name": "x", "scope": "isp"}], [])
    with pytest.raises(ValueError):
        Fingerprints.from_rows([row8[:5]], [])
    with pytest.raises(ValueError):
        Fingerprints.from_rows([dict(d, pattern=5)], [])


def test_empty_and_pickle(fps):
    e = Fingerprints.empty()
    assert len(e) == 0 and e.match({"probe_cc": "IT", "test_keys": {"requests": [
        {"response": {"body": "GdF Stop Page", "headers": {"Location": "x"}}}]}}) == []
    clone = pickle.loads(pickle.dumps(fps))
    assert clone.prepared() == fps.prepared()
    msm = json.loads((SAMPLES / "web_connectivity_ir_fp.json").read_text())
    assert clone.match(msm) == fps.match(msm)


# ---- §6.4 and §6.1 cases --------------------------------------------------------------------


def test_match_no_match(fps):
    assert fps.match({"probe_cc": "IE", "test_keys": {"requests": []}}) == []


def test_match_body_country(fps):
    msm = {"probe_cc": "MY", "test_keys": {"requests": [
        {"response": {"body": "foo ... Makluman/Notification ... foo"}}]}}
    assert fps.match(msm) == [{"confidence_no_fp": 5, "expected_countries": ["MY"],
                               "location_found": "body", "name": "ooni.my_0", "scope": "nat"}]


def test_match_dns_full_record(fps):
    msm = {"probe_cc": "TR", "test_keys": {"queries": [{"answers": [
        {"hostname": "beeg.com", "answer_type": "CNAME", "ttl": 0},
        {"ipv4": "195.175.254.2", "answer_type": "A", "ttl": 0}]}]}}
    assert fps.match(msm) == [{"confidence_no_fp": 5, "expected_countries": ["TR"],
                               "location_found": "dns", "name": "ooni.tr_6",
                               "other_names": "cl.dns_nat_tr_poison",
                               "pattern": "195.175.254.2", "pattern_type": "full",
                               "scope": "nat"}]


def test_match_base64_dict_body(fps):
    data = "q82BgAABAAEAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQABwAwAAQABAAA/+AAEXbjYIg=="
    msm = {"probe_cc": "MY", "test_keys": {"requests": [
        {"response": {"body": {"data": data, "format": "base64"}}}]}}
    assert fps.match(msm) == []


def test_samples(fps):
    ir = json.loads((SAMPLES / "web_connectivity_ir_fp.json").read_text())
    assert fps.match(ir) == [{"confidence_no_fp": 10, "expected_countries": ["IR"],
                              "location_found": "dns", "name": "ooni.ir_10dot10_ipv4_1",
                              "other_names": "", "pattern": "10.10.34.36",
                              "pattern_type": "full", "scope": "nat"}]
    idn = json.loads((SAMPLES / "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json")
                     .read_text())
    assert fps.match(idn) == [{"confidence_no_fp": 5, "expected_countries": ["ID"],
                               "location_found": "header.location",
                               "name": "ooni.id_lamanlabuh_kominfo", "scope": "nat"}]
    b64 = json.loads((SAMPLES / "web_connectivity_b64_hdr.json").read_text())
    assert fps.match(b64) == []


# ---- rules, one by one, on a small synthetic table ----------------------------------------


def _rec(name, loc, ptype, pattern, scope="fp", cc=""):
    return {"name": name, "scope": scope, "other_names": "", "location_found": loc,
            "pattern_type": ptype, "pattern": pattern, "confidence_no_fp": 5,
            "expected_countries": cc}


SYNTH_DNS = [_rec("d1", "dns", "full", "10.0.0.1", "nat", "IR"),
             _rec("d2", "dns", "prefix", "blocked.example", "isp"),  # type ignored
             _rec("d3", "dns", "full", "10.0.0.1", "prod")]
SYNTH_HTTP = [
    _rec("b_re", "body", "regexp", "a.*b"),  # literal, not a regex (§8.1)
    _rec("h_full", "header.server", "full", "BlockServer"),
    _rec("b_full", "body", "full", "<html></html>"),  # substring, not equality
    _rec("h_pre", "header.location", "prefix", "http://block."),
    _rec("h_cont", "header.location", "contains", "block"),  # ignored
    _rec("h_re", "header.location", "regexp", ".*"),  # ignored
    _rec("b_cont", "body", "contains", "Access Denied"),
    _rec("b_dup", "body", "contains", "Access Denied", "nat", "IT"),
    _rec("h_pre2", "header.location", "prefix", "http://"),
    _rec("b_word", "body", "contains", "Denied"),
    _rec("x_other", "dns", "full", "10.0.0.1"),  # HTTP table, not body/header: never used
]


@pytest.fixture(scope="module")
def synth() -> Fingerprints:
    return Fingerprints.from_rows(SYNTH_DNS, SYNTH_HTTP)


def _names(matches):
    return [m["name"] for m in matches]


def test_dns_rules(synth):
    msm = {"probe_cc": "IR", "test_keys": {"queries": [
        {"answers": [{"ipv4": "10.0.0.1"}, {"hostname": "blocked.example"}]},
        {"answers": [{"ipv4": None, "hostname": "blocked.example"}]},  # ipv4 key wins
        {"answers": [{"ipv6": "10.0.0.1"}, {}, {"answer_type": "A"}]},
        {"answers": None}, {},
    ]}}
    assert _names(synth.match(msm)) == ["d1", "d3", "d2", "d1", "d3"]


def test_body_rules_and_order(synth):
    resp = {"body": "xx<html></html>yy a.*b Access Denied!",
            "headers": {"Server": "BlockServer", "LOCATION": "http://block.example/"}}
    msm = {"probe_cc": "IT", "test_keys": {"requests": [
        {"response": resp}, {"response": None}, {}, {"response": {"body": "Denied"}}]}}
    # per response: body matches in table order, then header matches in table order
    assert _names(synth.match(msm)) == ["b_re", "b_full", "b_cont", "b_dup", "b_word",
                                        "h_full", "h_pre", "h_pre2", "b_word"]
    assert _names(synth.match({"probe_cc": "IT", "test_keys": {"requests": [
        {"response": {"body": "a.b", "headers": {"server": "BlockServer2"}}}]}})) == []


def test_header_rules(synth):
    def m(headers):
        return _names(synth.match({"probe_cc": "IT", "test_keys": {"requests": [
            {"response": {"headers": headers}}]}}))

    assert m({"Location": "http://blockx"}) == ["h_pre2"]
    assert m({"Location": "https://block.x"}) == []
    b64 = base64.b64encode(b"http://block.\xe9").decode()
    assert m({"Location": {"data": b64, "format": "base64"}}) == ["h_pre", "h_pre2"]
    assert m({"Server": {"data": base64.b64encode(b"BlockServer").decode(),
                         "format": "base64"}}) == []  # full: no base64 handling
    assert m({"server": "x", "Server": "BlockServer"}) == ["h_full"]  # later duplicate wins
    assert m({}) == [] and m(None) == [] and m([]) == []
    assert m({"Server": ["BlockServer"]}) == []  # unhashable value: not equal
    with pytest.raises(AttributeError):
        m([["Location", "x"]])  # a non-empty list of headers raises (reference)
    with pytest.raises(TypeError):
        m({"Location": None})  # prefix fingerprints call .startswith
    with pytest.raises(binascii.Error):
        m({"Location": {"data": "abc", "format": "base64"}})


def test_body_types(synth):
    def m(body):
        return _names(synth.match({"probe_cc": "IT", "test_keys": {"requests": [
            {"response": {"body": body}}]}}))

    enc = base64.b64encode("Access Denied <html></html> é".encode()).decode()
    assert m({"data": enc, "format": "base64"}) == ["b_full", "b_cont", "b_dup", "b_word"]
    assert m({"data": enc}) == [] and m({"format": "base64"}) == [] and m(None) == []
    assert m("") == []
    with pytest.raises(binascii.Error):
        m({"data": "abc", "format": "base64"})
    with pytest.raises(TypeError):
        m(5)
    with pytest.raises(TypeError):
        m(["Denied"])
    assert Fingerprints.empty().match({"probe_cc": "IT", "test_keys": {"requests": [
        {"response": {"body": 5}}]}}) == []  # no body fingerprint: nothing evaluated


def test_required_probe_cc_and_test_keys(synth):
    with pytest.raises(KeyError):
        synth.match({"test_keys": {}})
    assert synth.match({"probe_cc": "IT", "test_keys": None}) == []
    assert synth.match({"probe_cc": "IT"}) == []
    with pytest.raises(AttributeError):
        synth.match({"probe_cc": "IT", "test_keys": {"requests": ["x"]}})


def test_match_http_response(synth, fps):
    assert _names(synth.match_http_response({"body": "Denied", "headers": {}})) == ["b_word"]
    out = synth.match_http_response({"body": "Denied"})
    out[0]["expected_countries"].append("XX")  # fresh copies: the index is not mutated
    assert synth.match_http_response({"body": "Denied"})[0]["expected_countries"] == []


# ---- equivalence with the linear reference --------------------------------------------------


def _sample_msms() -> list[dict]:
    out = []
    for path in sorted(SAMPLES.glob("*.json")):
        obj = json.loads(path.read_text())
        if isinstance(obj, dict):
            out.append(obj)
    return out


def test_equivalence_on_samples(fps, prepared):
    for msm in _sample_msms():
        if msm.get("test_name") in ("web_connectivity", "http_requests"):
            assert fps.match(msm) == reference_match(msm, prepared), msm.get("report_id")


def _synthetic_bodies(patterns: list[str], n: int, seed: int) -> list[str]:
    """Text around whole, cut and glued patterns: exercises every word-boundary case."""
    rnd = random.Random(seed)
    filler = ["<div class=\"x\">", "the ", "\n", " ", "é", "访问", "</p>", "1", "_", "-",
              "Denied", "html", "<title>", "x", "Index of /", "http://"]
    bodies = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(0, 30)):
            r = rnd.random()
            p = rnd.choice(patterns)
            if r < 0.25:
                parts.append(p)
            elif r < 0.45 and len(p) > 2:  # a cut pattern: must not match
                i = rnd.randint(1, len(p) - 1)
                parts.append(p[:i] if rnd.random() < 0.5 else p[i:])
            elif r < 0.55:  # glued to word characters on both sides
                parts.append("zz" + p + "9")
            else:
                parts.append(rnd.choice(filler))
        bodies.append("".join(parts))
    return bodies


def test_equivalence_synthetic_bodies(fps, prepared):
    body_patterns = [r["pattern"] for r in prepared["http"] if r["location_found"] == "body"]
    bodies = _synthetic_bodies(body_patterns, 600, seed=7)
    bodies.append(" ".join(body_patterns))  # every pattern at once
    bodies.append("x" * 50_000 + body_patterns[3] + "y" * 50_000)  # large body path
    bodies.append(("<p>" + " ".join(body_patterns[::7]) + "</p>") * 3)
    for body in bodies:
        for b in (body, {"data": base64.b64encode(body.encode()).decode(), "format": "base64"}):
            msm = {"probe_cc": "IT", "test_keys": {"requests": [{"response": {"body": b}}]}}
            assert fps.match(msm) == reference_match(msm, prepared)


def test_equivalence_synthetic_headers(fps, prepared):
    rnd = random.Random(11)
    header_fps = [r for r in prepared["http"] if r["location_found"].startswith("header.")]
    for _ in range(800):
        fp = rnd.choice(header_fps)
        name = fp["location_found"][len("header."):]
        value = fp["pattern"]
        r = rnd.random()
        if r < 0.3:
            value = value + rnd.choice(["", "/x", "?a=1"])
        elif r < 0.5:
            value = value[:-1]
        elif r < 0.6:
            value = {"data": base64.b64encode(value.encode("latin1", "replace")).decode(),
                     "format": "base64"}
        headers = {rnd.choice([name, name.upper(), name.title()]): value, "X-Other": "y"}
        msm = {"probe_cc": "IT", "test_keys": {"requests": [{"response": {"headers": headers}}]}}
        assert fps.match(msm) == reference_match(msm, prepared)


def test_literal_search_property():
    """Small alphabets make patterns overlap, nest and touch word boundaries constantly."""
    rnd = random.Random(5)
    alphabet = "ab _.é<>"
    for _ in range(300):
        pats = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 5)))
                for _ in range(rnd.randint(1, 12))]
        search = LiteralSearch(pats)
        for _ in range(10):
            text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 5000)))
            expected = [i for i, p in enumerate(pats) if text.find(p) != -1]
            assert search.find(text) == expected, (pats, text)
            data = text.encode()
            assert search.find(data) == [i for i, p in enumerate(pats)
                                         if data.find(p.encode()) != -1]
