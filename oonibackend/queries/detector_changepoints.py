"""GET /api/v1/detector/changepoints: the query and the rows' shape (pure; docs/current_services.md
§5).

The rows come from OONI's analysis pipeline (table `event_detector_changepoints`, migration
0010), not from our `oonibackend detect`: that job models a different series (test and input,
fastpath verdicts) and has no per-layer probabilities, so it writes its own tables.

The default window is computed per request (OONI computed it once at process start, so a
long-running instance kept serving an old `until`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from oonibackend.errors import Invalid

DEFAULT_DAYS = 30
MAX_DOMAIN = 255

SQL = """
SELECT probe_asn, probe_cc, domain, ts, count_isp_resolver, count_other_resolver, count,
    dns_isp_blocked, dns_other_blocked, tcp_blocked, tls_blocked, change_dir, current_state,
    s_pos, s_neg, h, block_type
FROM event_detector_changepoints
WHERE {where}
ORDER BY ts, probe_cc, probe_asn, domain
"""

_INTS = ("count_isp_resolver", "count_other_resolver", "count")
_FLOATS = ("dns_isp_blocked", "dns_other_blocked", "tcp_blocked", "tls_blocked", "s_pos",
           "s_neg", "h")


def window(since: dt.datetime | None, until: dt.datetime | None, day: dt.datetime
           ) -> tuple[dt.datetime, dt.datetime]:
    """(since, until), both inclusive: by default 30 days before `day` (today 00:00 UTC) to
    `day`."""
    since = since or day - dt.timedelta(days=DEFAULT_DAYS)
    until = until or day
    if since > until:
        raise Invalid("Invalid range: since must not be after until")
    return since, until


def build_query(day: dt.datetime, *, since: dt.datetime | None = None,
                until: dt.datetime | None = None, asn: int | None = None,
                cc: str | None = None, domain: str | None = None
                ) -> tuple[str, dict[str, Any]]:
    """The SQL and its parameters; Invalid for a bad filter. `asn` 0 means "any", as in
    OONI's service; `cc` is any 2 characters, as there."""
    since, until = window(since, until, day)
    clauses = ["ts >= %(since)s", "ts <= %(until)s"]
    params: dict[str, Any] = {"since": since, "until": until}
    if asn:
        clauses.append("probe_asn = %(asn)s")
        params["asn"] = asn
    if cc is not None:
        if len(cc) != 2:
            raise Invalid("Invalid probe_cc: exactly 2 characters expected")
        clauses.append("probe_cc = %(cc)s")
        params["cc"] = cc
    if domain is not None:
        if len(domain) > MAX_DOMAIN:
            raise Invalid("Invalid domain: too long")
        clauses.append("domain = %(domain)s")
        params["domain"] = domain
    return SQL.format(where=" AND ".join(clauses)), params


def _float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) or math.isinf(f) else f


def _time(t: dt.datetime) -> str:
    """ISO 8601 in UTC with `Z`, the fraction only when non-zero (OONI's plain models)."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        s += f".{t.microsecond:06d}".rstrip("0")
    return s + "Z"


def change_dir(v: Any) -> str | None:
    """-1 is "down" (unblocked), any other value "up", null stays null."""
    if v is None:
        return None
    return "down" if int(v) == -1 else "up"


def render(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as OONI's response item (the per-layer CUSUM columns are not returned)."""
    out: dict[str, Any] = {"probe_asn": int(row["probe_asn"]), "probe_cc": row["probe_cc"],
                           "domain": row["domain"], "start_time": _time(row["ts"])}
    for k in _INTS:
        out[k] = None if row[k] is None else int(row[k])
    for k in _FLOATS[:4]:
        out[k] = _float(row[k])
    out["change_dir"] = change_dir(row["change_dir"])
    out["current_state"] = row["current_state"]
    for k in _FLOATS[4:]:
        out[k] = _float(row[k])
    out["block_type"] = row["block_type"]
    return out
