"""URL prioritization, as pure functions: candidates + rules + counts -> ordered URL list.

This is the legacy `prio.py` algorithm (docs/api.md §2.1 steps 3-4), with three fixes:

1. Rules are *net* rules: `url_priorities` is a CollapsingMergeTree, and the legacy code read
   it without collapsing, so a deleted rule whose -1 row had not been merged yet still counted
   (twice, even). `net_rules` keeps a rule only when the sum of its signs is positive, once.
2. Rule country codes are compared case-insensitively everywhere. The legacy SQL fetched rules
   with `cc = <probe cc>` (exact), so a rule stored as `it` never reached an Italian probe
   although the matcher itself upper-cased both sides.
3. A non-positive limit yields nothing. The legacy loop checked the limit after appending, so
   `limit <= 0` returned exactly one item.

Everything else is kept as it was, probes and test-list editors rely on it: priority = sum of
the matching rules, weight = priority / max(msmt_cnt, 0.1), a *stable* sort by weight
descending (ties keep the table order, no shuffling), entries with priority <= 0 never sent,
country_code `XX` for the global list and the upper-cased list cc otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GLOBAL_CC = "ZZ"  # cc of the global list in the citizenlab table
GLOBAL_COUNTRY_CODE = "XX"  # what probes are told for global-list entries
WILDCARDS = frozenset({"", "*"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """One citizenlab row (`cc` as stored: lowercase country list or `ZZ`)."""

    category_code: str
    domain: str
    url: str
    cc: str

    @property
    def is_global(self) -> bool:
        return self.cc == GLOBAL_CC

    @property
    def country_code(self) -> str:
        return GLOBAL_COUNTRY_CODE if self.is_global else self.cc.upper()


@dataclass(frozen=True, slots=True)
class Rule:
    """One url_priorities rule; '' and '*' are wildcards in every text field."""

    category_code: str
    cc: str
    domain: str
    url: str
    priority: int


@dataclass(frozen=True, slots=True)
class Scored:
    candidate: Candidate
    msmt_cnt: int
    priority: int
    weight: float


def rule_from_row(row: Mapping[str, Any]) -> Rule:
    return Rule(category_code=str(row.get("category_code") or ""), cc=str(row.get("cc") or ""),
                domain=str(row.get("domain") or ""), url=str(row.get("url") or ""),
                priority=int(row.get("priority") or 0))


def net_rules(rows: Iterable[Mapping[str, Any]]) -> list[Rule]:
    """The active rules of url_priorities rows carrying a `sign` (fix 1).

    Rows may be raw (+1 / -1 each) or already summed per rule; a rule is active once when its
    signs sum to more than zero. First-seen order is kept.
    """
    net: dict[Rule, int] = {}
    for row in rows:
        rule = rule_from_row(row)
        net[rule] = net.get(rule, 0) + int(row.get("sign", 1))
    return [r for r, s in net.items() if s > 0]


def rules_for_cc(rules: Iterable[Rule], probe_cc: str) -> list[Rule]:
    """Rules that apply to a probe in `probe_cc`: its own (any case, fix 2), `*` and ''."""
    cc = probe_cc.upper()
    return [r for r in rules if r.cc in WILDCARDS or r.cc.upper() == cc]


def _field_match(rule_value: str, value: str) -> bool:
    return rule_value in WILDCARDS or rule_value == value


def rule_matches(rule: Rule, c: Candidate) -> bool:
    """Legacy matcher: every text field wildcard or equal; rule cc only binds country lists."""
    if not (_field_match(rule.category_code, c.category_code)
            and _field_match(rule.domain, c.domain) and _field_match(rule.url, c.url)):
        return False
    if c.is_global:
        return True  # global entries ignore the rule's cc (the rules are already per probe cc)
    return rule.cc in WILDCARDS or rule.cc.upper() == c.cc.upper()


class RuleIndex:
    """Rules bucketed by (category, domain, url) with None for a wildcard.

    A candidate can only match the 8 buckets made of its own values or wildcards, so scoring
    is O(candidates) instead of O(candidates x rules). Same result as `rule_matches`.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._buckets: dict[tuple[str | None, str | None, str | None], list[Rule]] = {}
        for r in rules:
            key = tuple(None if v in WILDCARDS else v
                        for v in (r.category_code, r.domain, r.url))
            self._buckets.setdefault(key, []).append(r)  # type: ignore[arg-type]

    def priority(self, c: Candidate) -> int:
        total = 0
        cc = None if c.is_global else c.cc.upper()
        for cat in (c.category_code, None):
            for dom in (c.domain, None):
                for url in (c.url, None):
                    for r in self._buckets.get((cat, dom, url), ()):
                        if cc is None or r.cc in WILDCARDS or r.cc.upper() == cc:
                            total += r.priority
        return total


def weight(priority: int, msmt_cnt: int) -> float:
    return priority / max(msmt_cnt, 0.1)


def compute_priorities(candidates: Sequence[Candidate], msmt_cnts: Sequence[int],
                       rules: Iterable[Rule]) -> list[Scored]:
    """Score every candidate and sort by weight, descending, stable.

    `rules` must already be the ones for the probe's cc (`rules_for_cc`).
    """
    index = RuleIndex(rules)
    scored = []
    for c, n in zip(candidates, msmt_cnts, strict=True):
        p = index.priority(c)
        scored.append(Scored(c, n, p, weight(p, n)))
    scored.sort(key=lambda s: s.weight, reverse=True)
    return scored


# How many URLs one run gets (docs/current_services.md §7): check-in and OONI Run's dynamic
# lists share this rule, as in OONI's services.
LIMIT_MANUAL = 9999
LIMIT_CHARGING = 100
LIMIT_BATTERY = 20


def url_limit(run_type: str, charging: bool) -> int:
    """A manual run takes (almost) every URL; a timed one 100 on a charger, 20 on battery."""
    if run_type == "manual":
        return LIMIT_MANUAL
    return LIMIT_CHARGING if charging else LIMIT_BATTERY


def select(scored: Iterable[Scored], category_codes: Iterable[str] | None, limit: int,
           debug: bool = False) -> list[dict[str, Any]]:
    """Walk the ordered list: skip unrequested categories and priority <= 0, stop at limit."""
    if limit <= 0:
        return []  # fix 3: the legacy code returned one item here
    wanted = frozenset(category_codes or ())
    out: list[dict[str, Any]] = []
    for s in scored:
        c = s.candidate
        if wanted and c.category_code not in wanted:
            continue
        if s.priority <= 0:
            continue
        item: dict[str, Any] = {"category_code": c.category_code, "url": c.url,
                                "country_code": c.country_code}
        if debug:
            item.update(msmt_cnt=s.msmt_cnt, priority=s.priority, weight=s.weight)
        out.append(item)
        if len(out) >= limit:
            break
    return out


def generate_test_list(candidates: Sequence[Candidate], msmt_cnts: Sequence[int],
                       rules: Iterable[Rule], probe_cc: str,
                       category_codes: Iterable[str] | None, limit: int,
                       debug: bool = False) -> list[dict[str, Any]]:
    """The whole pipeline for one request, without caching (the snapshot caches)."""
    scored = compute_priorities(candidates, msmt_cnts, rules_for_cc(rules, probe_cc))
    return select(scored, category_codes, limit, debug)
