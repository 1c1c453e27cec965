"""SQL for the MAT's observation charts: `GET /api/v1/aggregation/observations` (`obs_web`)
and `/observations/ctrl` (`obs_web_ctrl`), docs/current_services.md §6.

Pure: a normalised request in, `(sql, params)` out; the route parses the query string and
renders the rows. What is decided here:
* which columns group the counts: the `group_by` values, plus every filter given exactly one
  value (so `?probe_cc=IT` rows carry `"probe_cc": "IT"`, as OONI's service answers). A filter
  with several values is summed over unless it is also grouped by, so a comma list of domains
  does not split a chart's bars per domain;
* the failure label of an observation (§6.2): the first failing layer, DNS split by whose
  resolver failed;
* the time window, half-open `[since, until)` on `measurement_start_time`, compared as UTC
  DateTime64 whatever the server's time zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from oonibackend.queries import mat

Query = tuple[str, dict[str, Any]]

GROUP_BY = ("timestamp", "failure", "hostname", "ip", "probe_cc", "probe_asn", "test_name",
            "measurement_uid", "category_code")
DEFAULT_GROUP_BY = ("failure",)
# Filters that become a grouping key when given one value (OONI's service: always).
KEYED_FILTERS = ("probe_cc", "probe_asn", "hostname", "test_name", "ip", "measurement_uid",
                 "resolver_asn")

_FAILURE = """multiIf(
    dns_failure IS NOT NULL,
        concat(if(resolver_asn = probe_asn, 'dns_isp.', 'dns_other.'), {dns}),
    tcp_failure IS NOT NULL, concat('tcp.', {tcp}),
    tls_failure IS NOT NULL, concat('tls.', {tls}),
    http_failure IS NOT NULL,
        concat(if(startsWith(ifNull(http_request_url, ''), 'https://'), 'https.', 'http.'),
               {http}),
    'none')""".format(dns=mat.failure_name("dns_failure"), tcp=mat.failure_name("tcp_failure"),
                      tls=mat.failure_name("tls_failure"),
                      http=mat.failure_name("http_failure"))

_COLUMN = {
    "failure": _FAILURE,
    "hostname": "assumeNotNull(obs_web.hostname)",
    "ip": "assumeNotNull(obs_web.ip)",
    "probe_cc": "obs_web.probe_cc",
    "probe_asn": "obs_web.probe_asn",
    "test_name": "obs_web.test_name",
    "measurement_uid": "obs_web.measurement_uid",
    "resolver_asn": "obs_web.resolver_asn",
    "category_code": "citizenlab.category_code",
}

# ASNs of the large cloud and CDN networks (§6.3 is_cloud_provider): Cloudflare, Akamai,
# Amazon, Google, Fastly, Microsoft.
CLOUD_ASNS = frozenset({13335, 209242, 20940, 9002, 16625, 63949, 16509, 14618, 15169,
                        396982, 54113, 8075, 8068})


@dataclass(frozen=True)
class Observations:
    """One normalised observations request: filters are sorted tuples (equal requests are
    equal cache keys); `since` / `until` are already resolved (None: unbounded)."""

    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    time_grain: str = "day"
    test_name: tuple[str, ...] = ()
    hostname: tuple[str, ...] = ()
    probe_cc: tuple[str, ...] = ()
    probe_asn: tuple[int, ...] = ()
    ip: tuple[str, ...] = ()
    measurement_uid: tuple[str, ...] = ()
    resolver_asn: tuple[int, ...] = ()
    input: tuple[str, ...] = ()
    category_code: tuple[str, ...] = ()
    ooni_run_link_id: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """The grouping columns, in output order: group_by first, then keyed filters."""
        out = list(dict.fromkeys(self.group_by))
        for name in KEYED_FILTERS:
            if len(getattr(self, name)) == 1 and name not in out:
                out.append(name)
        return tuple(out)


def build(o: Observations) -> Query:
    """Counts of observations per distinct combination of `o.keys`, largest first."""
    params: dict[str, Any] = {}
    where = mat.window("obs_web", o.since, o.until, params)
    for name in ("test_name", "hostname", "probe_cc", "probe_asn", "ip", "measurement_uid",
                 "resolver_asn", "input", "ooni_run_link_id"):
        values = getattr(o, name)
        if values:
            where.append(f"obs_web.{name} IN %({name})s")
            params[name] = list(values)
    if "failure" in o.group_by:
        # Only observations tied to a DNS answer or an address get a failure label
        # (docs/current_services.md §6.2): HTTP-only rows are left out, as OONI's are.
        where.append("(obs_web.dns_failure IS NOT NULL OR obs_web.ip IS NOT NULL)")
    if "hostname" in o.keys:
        where.append("obs_web.hostname IS NOT NULL")
    if "ip" in o.keys:
        where.append("obs_web.ip IS NOT NULL")
    join = ""
    if o.category_code or "category_code" in o.keys:
        join = mat.citizenlab_join("obs_web.input", o.category_code, o.probe_cc, params)
    select = [f"{_key_sql(k, o.time_grain)} AS {k}" for k in o.keys]
    select.append("count() AS observation_count")
    sql = f"SELECT {', '.join(select)}\nFROM obs_web{join}"
    if where:
        sql += "\nWHERE " + "\n    AND ".join(where)
    if o.keys:
        sql += f"\nGROUP BY {', '.join(o.keys)}"
    # Largest first (OONI's order); the keys break ties so that answers are stable.
    sql += "\nORDER BY " + ", ".join(("observation_count DESC", *o.keys))
    return sql, params


def _key_sql(key: str, grain: str) -> str:
    if key == "timestamp":
        return mat.time_bucket("obs_web.measurement_start_time", grain)
    return _COLUMN[key]


# ---- /observations/ctrl ----

def build_ctrl(hostnames: tuple[str, ...], since: dt.datetime, until: dt.datetime) -> Query:
    """Per (hostname, ip, port) test-helper counts; `render_ctrl` derives the rest."""
    params: dict[str, Any] = {"hostname": list(hostnames)}
    where = mat.window("obs_web_ctrl", since, until, params)
    where.append("hostname IN %(hostname)s")
    sql = f"""SELECT hostname, ip, port,
    anyIf(ip_asn, ip_asn IS NOT NULL) AS asn,
    anyIf(ip_as_org_name, ip_as_org_name IS NOT NULL) AS as_org_name,
    countIf(tcp_success = 1) AS tcp_success_count,
    countIf(tcp_success = 0) AS tcp_failure_count,
    countIf(tls_success = 1) AS tls_success_count,
    countIf(tls_success = 0 OR (tls_success IS NULL AND tls_failure IS NOT NULL))
        AS tls_failure_count,
    countIf(dns_success = 1) AS dns_success_count,
    countIf(dns_failure = 'dns_nxdomain_error') AS dns_nxdomain_count,
    countIf(dns_failure IS NOT NULL AND dns_failure != 'dns_nxdomain_error')
        AS dns_other_failure_count
FROM obs_web_ctrl
WHERE {' AND '.join(where)}
GROUP BY hostname, ip, port
ORDER BY hostname, ip, port"""
    return sql, params


def render_ctrl(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (hostname, ip, port) with an address. The DNS counts are per hostname
    (repeated on each of its rows, DNS failures having no address); `in_dns_answers` and
    `tls_consistent` are per (hostname, ip), any port."""
    dns: dict[str, dict[str, int]] = {}
    answered: set[tuple[str, str]] = set()
    tls_ok: set[tuple[str, str]] = set()
    for r in rows:
        d = dns.setdefault(r["hostname"], {"dns_success_count": 0, "dns_nxdomain_count": 0,
                                           "dns_other_failure_count": 0})
        for k in d:
            d[k] += r[k]
        if r["dns_success_count"]:
            answered.add((r["hostname"], r["ip"]))
        if r["tls_success_count"]:
            tls_ok.add((r["hostname"], r["ip"]))
    out = []
    for r in rows:
        if not r["ip"]:
            continue
        target = (r["hostname"], r["ip"])
        item: dict[str, Any] = {
            "hostname": r["hostname"], "ip": r["ip"], "port": r["port"], "asn": r["asn"],
            "as_org_name": r["as_org_name"],
            "is_cloud_provider": r["asn"] in CLOUD_ASNS,
            "in_dns_answers": target in answered,
            "tls_consistent": target in tls_ok,
        }
        for k in ("tcp_success_count", "tcp_failure_count", "tls_success_count",
                  "tls_failure_count"):
            item[k] = r[k]
        item.update(dns[r["hostname"]])
        out.append({k: v for k, v in item.items() if v is not None})
    return out
