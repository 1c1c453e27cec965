"""`/api/_/show_countries_prioritization`: every test-list entry with its measurements of the
last 7 days and its priority (docs/api.md §1.2 #43), for operators and test-list editors.

The counts come from one query (citizenlab joined with the week's fastpath counts per input
and country); priorities are computed here from the active (net) rules check-in uses:
a country list entry with the rules that reach that country (its own, `*` and ''), a global
entry (cc `ZZ`) with the country-independent rules only. (Legacy summed every country's rules
into the global entries: a global URL showed -180 because of a US-only -200 rule although
probes outside the US get +20.)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oonibackend.prioritization.rules import GLOBAL_CC, WILDCARDS, Candidate, Rule, RuleIndex

FIELDS = ("domain", "url", "cc", "category_code", "msmt_cnt", "anomaly_perc", "priority")

# Global entries (cc ZZ) join the measurements of probe_cc ZZ, as legacy's query did.
SQL = """
SELECT c.domain AS domain, c.url AS url, c.cc AS cc, c.category_code AS category_code,
    x.msmt_cnt AS msmt_cnt, x.anomaly_perc AS anomaly_perc
FROM (
    SELECT domain, url, upper(replaceAll(toString(cc), '\\0', '')) AS cc, category_code
    FROM citizenlab FINAL
) AS c
LEFT JOIN (
    SELECT input, probe_cc, count() AS msmt_cnt,
        toInt32(intDiv(countIf(anomaly = 't') * 100, count())) AS anomaly_perc
    FROM fastpath
    WHERE measurement_start_time > now() - INTERVAL 7 DAY
        AND measurement_start_time < now()
        AND input IN (SELECT url FROM citizenlab)
    GROUP BY input, probe_cc
) AS x ON x.input = c.url AND x.probe_cc = c.cc
ORDER BY cc, url, category_code, domain
SETTINGS join_use_nulls = 0
"""


def prioritize(rows: Iterable[Mapping[str, Any]], rules: Sequence[Rule]) -> list[dict[str, Any]]:
    """The route's items, sorted by cc, then priority descending (ties keep the row order)."""
    by_country = RuleIndex(rules)
    everywhere = RuleIndex(r for r in rules if r.cc in WILDCARDS)
    out = []
    for r in rows:
        cc = str(r["cc"]).upper()
        c = Candidate(category_code=str(r["category_code"]), domain=str(r["domain"]),
                      url=str(r["url"]), cc=GLOBAL_CC if cc == GLOBAL_CC else cc.lower())
        index = everywhere if c.is_global else by_country
        out.append({"domain": c.domain, "url": c.url, "cc": cc,
                    "category_code": c.category_code, "msmt_cnt": int(r["msmt_cnt"] or 0),
                    "anomaly_perc": int(r["anomaly_perc"] or 0),
                    "priority": index.priority(c)})
    out.sort(key=lambda item: (item["cc"], -item["priority"]))
    return out


def to_csv(items: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(items)
    return buf.getvalue()
