"""URL prioritization rules: the legacy examples, the fixed quirks, and the real US fixtures."""

from __future__ import annotations

import json
import random

import pytest

from oonibackend.prioritization.rules import (
    Candidate,
    Rule,
    RuleIndex,
    compute_priorities,
    generate_test_list,
    net_rules,
    rule_from_row,
    rule_matches,
    rules_for_cc,
    select,
    url_limit,
)
from tests.conftest import FIXTURES


def cand(cat: str, url: str, cc: str, domain: str | None = None) -> Candidate:
    from urllib.parse import urlsplit

    return Candidate(category_code=cat, domain=domain or urlsplit(url).hostname or "", url=url,
                     cc=cc)


MISC_GLOBAL = cand("MISC", "https://www.example.com/", "ZZ")
HUMR_IT = cand("HUMR", "https://www.example.net/", "it")
LEGACY_RULES = [
    Rule("MISC", "*", "*", "*", 20),
    Rule("MISC", "US", "*", "*", -200),
    Rule("*", "IT", "www.example.net", "*", 20),
    Rule("*", "IT", "www.example.net", "*", 400),
]


def test_legacy_reference_examples():
    scored = compute_priorities([MISC_GLOBAL, HUMR_IT], [38, 38], LEGACY_RULES)
    by_url = {s.candidate.url: s for s in scored}
    misc = by_url[MISC_GLOBAL.url]
    assert misc.priority == -180
    assert misc.weight == -4.7368421052631575
    humr = by_url[HUMR_IT.url]
    assert humr.priority == 420
    assert humr.weight == 11.052631578947368
    assert [s.candidate for s in scored] == [HUMR_IT, MISC_GLOBAL]  # weight descending


def test_rule_index_equals_linear_matcher():
    rng = random.Random(7)
    cats, domains = ["NEWS", "MISC", "HUMR"], ["a.org", "b.org", "c.org"]
    ccs = ["ZZ", "it", "us"]
    candidates = [cand(rng.choice(cats), f"https://{d}/{i}", rng.choice(ccs), d)
                  for i in range(200) for d in [rng.choice(domains)]]
    rules = [Rule(rng.choice(cats + ["*", ""]), rng.choice(["*", "", "IT", "it", "US"]),
                  rng.choice(domains + ["*", ""]),
                  rng.choice(["*", "", candidates[rng.randrange(200)].url]),
                  rng.randrange(-50, 100)) for _ in range(300)]
    index = RuleIndex(rules)
    for c in candidates:
        assert index.priority(c) == sum(r.priority for r in rules if rule_matches(r, c))


def test_country_rule_binds_only_its_country_list():
    rules = [Rule("NEWS", "IT", "*", "*", 100)]
    it_entry, us_entry = cand("NEWS", "https://a.it/", "it"), cand("NEWS", "https://a.us/", "us")
    assert rule_matches(rules[0], it_entry)
    assert not rule_matches(rules[0], us_entry)
    # Global entries ignore the rule's cc (rules are already the probe country's).
    assert rule_matches(rules[0], cand("NEWS", "https://g.org/", "ZZ"))


def test_rules_for_cc_is_case_insensitive():
    """Fix: a rule stored as `it` applies to Italian probes (legacy SQL compared exactly)."""
    rules = [Rule("NEWS", "it", "*", "*", 1), Rule("NEWS", "IT", "*", "*", 2),
             Rule("NEWS", "*", "*", "*", 3), Rule("NEWS", "", "*", "*", 4),
             Rule("NEWS", "US", "*", "*", 5)]
    assert [r.priority for r in rules_for_cc(rules, "IT")] == [1, 2, 3, 4]
    assert [r.priority for r in rules_for_cc(rules, "it")] == [1, 2, 3, 4]
    entry = cand("NEWS", "https://a.it/", "it")
    out = generate_test_list([entry], [0], rules, "IT", None, 10, debug=True)
    assert out[0]["priority"] == 10


def test_net_rules_collapse_by_sign():
    """Fix: a deleted rule (+1 then -1, not merged yet) no longer counts."""
    base = {"category_code": "NEWS", "cc": "*", "domain": "*", "url": "*"}
    rows = [
        {**base, "priority": 100, "sign": 1},
        {**base, "priority": 100, "sign": -1},   # deleted
        {**base, "priority": 150, "sign": 1},    # its replacement
        {**base, "category_code": "MISC", "priority": 20, "sign": 1},
        {**base, "category_code": "MISC", "priority": 20, "sign": 1},  # duplicate insert
        {**base, "category_code": "GAME", "priority": 20, "sign": 2},  # already summed
    ]
    rules = net_rules(rows)
    assert rules == [Rule("NEWS", "*", "*", "*", 150), Rule("MISC", "*", "*", "*", 20),
                     Rule("GAME", "*", "*", "*", 20)]
    entry = cand("NEWS", "https://n.org/", "ZZ")
    assert generate_test_list([entry], [0], rules, "US", None, 5, debug=True)[0]["priority"] == 150


def test_select_skips_and_limits():
    entries = [cand("NEWS", "https://n1.org/", "ZZ"), cand("MISC", "https://m.org/", "ZZ"),
               cand("NEWS", "https://n2.org/", "br"), cand("GAME", "https://g.org/", "ZZ")]
    rules = [Rule("NEWS", "*", "*", "*", 100), Rule("MISC", "*", "*", "*", 50),
             Rule("GAME", "*", "*", "*", -10)]
    scored = compute_priorities(entries, [10, 0, 5, 0], rules)
    # GAME has priority <= 0: never sent; country_code XX for global, BR for the br list.
    assert select(scored, None, 10) == [
        {"category_code": "MISC", "url": "https://m.org/", "country_code": "XX"},
        {"category_code": "NEWS", "url": "https://n2.org/", "country_code": "BR"},
        {"category_code": "NEWS", "url": "https://n1.org/", "country_code": "XX"},
    ]
    assert [i["url"] for i in select(scored, ["NEWS"], 10)] == ["https://n2.org/",
                                                                "https://n1.org/"]
    assert len(select(scored, None, 2)) == 2
    assert select(scored, ["GAME"], 10) == []


@pytest.mark.parametrize("limit", [0, -1, -100])
def test_non_positive_limit_returns_nothing(limit):
    """Fix: the legacy loop returned one item for limit <= 0."""
    entries = [cand("NEWS", "https://n1.org/", "ZZ")]
    assert generate_test_list(entries, [0], [Rule("NEWS", "*", "*", "*", 1)], "US", None,
                              limit) == []


def test_ties_keep_input_order():
    entries = [cand("NEWS", f"https://n{i}.org/", "ZZ") for i in range(20)]
    out = generate_test_list(entries, [0] * 20, [Rule("NEWS", "*", "*", "*", 1)], "US", None, 50)
    assert [o["url"] for o in out] == [e.url for e in entries]


def test_debug_fields():
    out = generate_test_list([HUMR_IT], [38], LEGACY_RULES, "IT", None, 5, debug=True)
    assert out == [{"category_code": "HUMR", "url": HUMR_IT.url, "country_code": "IT",
                    "msmt_cnt": 38, "priority": 420, "weight": 11.052631578947368}]


def _us_fixture():
    rows = json.loads((FIXTURES / "citizenlab_counters_us.json").read_text())
    rules = [rule_from_row(r) for r in json.loads((FIXTURES / "url_priorities_us.json")
                                                   .read_text())]
    candidates = [Candidate(r["category_code"], r["domain"], r["url"], r["cc"]) for r in rows]
    return candidates, [r["msmt_cnt"] for r in rows], rules


def test_us_fixture_list():
    candidates, counts, rules = _us_fixture()
    out = generate_test_list(candidates, counts, rules, "US", None, 9999, debug=True)
    # MISC has +20 and the US rule -200: never sent to US probes.
    assert not [o for o in out if o["category_code"] == "MISC"]
    assert all(o["priority"] > 0 for o in out)
    weights = [o["weight"] for o in out]
    assert weights == sorted(weights, reverse=True)
    assert {o["country_code"] for o in out} == {"XX", "US"}
    # Every non-MISC candidate gets a positive priority from the category rules.
    assert len(out) == sum(c.category_code != "MISC" for c in candidates)
    # Domain rules add 200 on top of the category rule.
    fb = [o for o in out if "www.facebook.com" in o["url"]]
    assert fb and all(o["priority"] >= 200 for o in fb)
    assert len(generate_test_list(candidates, counts, rules, "US", None, 20)) == 20
    news = generate_test_list(candidates, counts, rules, "US", ["NEWS"], 100)
    assert news and {o["category_code"] for o in news} == {"NEWS"}


@pytest.mark.parametrize("run_type,charging,limit", [
    ("manual", True, 9999), ("manual", False, 9999), ("timed", True, 100),
    ("timed", False, 20), ("", False, 20)])
def test_url_limit_of_a_run(run_type, charging, limit):
    """One rule for check-in and OONI Run's dynamic lists (docs/current_services.md §7)."""
    assert url_limit(run_type, charging) == limit
