"""Submission policy: which credential age and measurement count a network's proofs must show.

A list of rules `{"match": {"probe_cc", "probe_asn"}, "policy": {"age": [lo, hi],
"min_measurement_count": n}}`; `*` matches anything, the first matching rule wins and the last
must be the catch-all, so every measurement has a policy (docs/current_services.md §1).
`age` is a range of credential emission days in the library's day numbering
(`ServerState.today()`); the upper bound is exclusive, so it must exceed today for a credential
emitted today to pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WILDCARD = "*"


class PolicyError(ValueError):
    """A submission policy that cannot be used (message says which rule and why)."""


@dataclass(frozen=True)
class Policy:
    age: tuple[int, int]
    min_measurement_count: int


@dataclass(frozen=True)
class Rule:
    probe_cc: str
    probe_asn: str
    policy: Policy

    @property
    def is_catch_all(self) -> bool:
        return self.probe_cc == WILDCARD and self.probe_asn == WILDCARD

    def matches(self, probe_cc: str, probe_asn: str) -> bool:
        return (self.probe_cc in (WILDCARD, probe_cc)
                and self.probe_asn in (WILDCARD, probe_asn))

    def document(self) -> dict[str, Any]:
        """The rule as it appears in the manifest."""
        return {"match": {"probe_cc": self.probe_cc, "probe_asn": self.probe_asn},
                "policy": {"age": list(self.policy.age),
                           "min_measurement_count": self.policy.min_measurement_count}}


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyError(f"{where} must be a non-negative integer")
    return value


def _rule(obj: Any, i: int) -> Rule:
    where = f"submission_policy[{i}]"
    if not isinstance(obj, dict) or not isinstance(obj.get("match"), dict) \
            or not isinstance(obj.get("policy"), dict):
        raise PolicyError(f"{where} must be {{match: {{...}}, policy: {{...}}}}")
    match, pol = obj["match"], obj["policy"]
    cc, asn = match.get("probe_cc"), match.get("probe_asn")
    if not isinstance(cc, str) or not isinstance(asn, str) or not cc or not asn:
        raise PolicyError(f"{where}.match needs probe_cc and probe_asn strings ('*': any)")
    age = pol.get("age")
    if not isinstance(age, list | tuple) or len(age) != 2:
        raise PolicyError(f"{where}.policy.age must be [lo, hi]")
    lo, hi = _int(age[0], f"{where}.policy.age[0]"), _int(age[1], f"{where}.policy.age[1]")
    if lo >= hi:
        raise PolicyError(f"{where}.policy.age must have lo < hi")
    count = _int(pol.get("min_measurement_count", 0), f"{where}.policy.min_measurement_count")
    return Rule(cc, asn, Policy((lo, hi), count))


def parse_rules(doc: Any) -> tuple[Rule, ...]:
    """Validated rules of a `submission_policy` list; PolicyError unless it ends in the
    catch-all (and only there: a catch-all earlier would hide the rules after it)."""
    if not isinstance(doc, list) or not doc:
        raise PolicyError("submission_policy must be a non-empty list")
    rules = tuple(_rule(r, i) for i, r in enumerate(doc))
    if not rules[-1].is_catch_all:
        raise PolicyError("the last submission_policy rule must be the catch-all "
                          "{probe_cc: '*', probe_asn: '*'}")
    if any(r.is_catch_all for r in rules[:-1]):
        raise PolicyError("only the last submission_policy rule may be the catch-all")
    return rules


def match(rules: Sequence[Rule], probe_cc: str, probe_asn: str) -> Policy | None:
    """The policy of the first rule matching the measurement's own cc and asn."""
    for r in rules:
        if r.matches(probe_cc, probe_asn):
            return r.policy
    return None


def default_rules(today: int, years: int = 10) -> list[dict[str, Any]]:
    """The embedded default: one catch-all accepting any credential of the current keys
    (emitted before `today + 365 * years`) with no minimum of measurements."""
    return [{"match": {"probe_cc": WILDCARD, "probe_asn": WILDCARD},
             "policy": {"age": [0, today + 365 * years], "min_measurement_count": 0}}]
