"""GET /api/v1/detector/events: the query of the blocking-event feed (pure; the route is
oonibackend/routes/detector.py, the rows are written by `oonibackend detect`).

Filters: probe_cc, probe_asn (AS123 or 123), test_name (comma lists), input (exact), domain
(the input URL's host), status (OK / BLOCKED), since / until (on the change point `time`),
limit (default 100, at most 1000).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from oonibackend.errors import Invalid

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
STATUSES = ("OK", "BLOCKED")

SQL = """
SELECT test_name, input, probe_cc, toUInt32(probe_asn) AS probe_asn, status, time,
    detection_time
FROM blocking_events FINAL
WHERE {where}
ORDER BY time DESC, detection_time DESC, test_name, input, probe_cc, probe_asn
LIMIT %(limit)s
"""


def build_query(*, limit: int = DEFAULT_LIMIT, ccs: Sequence[str] = (),
                asns: Sequence[int] = (), tests: Sequence[str] = (), input_: str | None = None,
                domain: str | None = None, status: str | None = None,
                since: dt.datetime | None = None, until: dt.datetime | None = None
                ) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters for the filters (values checked by the route's query string
    parsing); Invalid for a bad status or range."""
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if ccs:
        clauses.append("has(%(ccs)s, probe_cc)")
        params["ccs"] = list(ccs)
    if asns:
        clauses.append("has(%(asns)s, toUInt32(probe_asn))")
        params["asns"] = list(asns)
    if tests:
        clauses.append("has(%(tests)s, test_name)")
        params["tests"] = list(tests)
    if input_ is not None:
        clauses.append("input = %(input)s")
        params["input"] = input_
    if domain is not None:
        if not domain.startswith("[") and domain.count(":") == 1:
            domain = domain.split(":")[0]  # host:port: the host
        clauses.append("lower(domain(input)) = %(domain)s")
        params["domain"] = domain
    if status is not None:
        if status.upper() not in STATUSES:
            raise Invalid(f"Invalid status: use one of {', '.join(STATUSES)}")
        clauses.append("status = %(status)s")
        params["status"] = status.upper()
    if since is not None and until is not None and since >= until:
        raise Invalid("Invalid range: since must be before until")
    if since is not None:
        clauses.append("time >= %(since)s")
        params["since"] = since
    if until is not None:
        clauses.append("time < %(until)s")
        params["until"] = until
    return SQL.format(where=" AND ".join(clauses) or "1"), params
