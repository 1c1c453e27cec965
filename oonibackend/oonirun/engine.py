"""What a probe sends to engine-descriptor, and the dynamic URL lists it gets back (pure).

OONI's current service checks the request strictly (docs/current_services.md §7), so a probe
that works against it works here, and a request it refuses is refused here too, with our one
error format (400 `{"error"}`, not FastAPI's 422). A nettest naming a dynamic list
(`targets_name`) gets it filled in per request, from the same prioritization as check-in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oonibackend import validate
from oonibackend.errors import Invalid
from oonibackend.prioritization.rules import url_limit

PRIORITIZED = "websites_list_prioritized"
# The dynamic lists we can fill in; a link naming another one is refused at create/edit.
DYNAMIC_TARGETS = frozenset({PRIORITIZED})
RUN_TYPES = ("timed", "manual")
NETWORK_TYPES = ("vpn", "wifi", "mobile", "wired_ethernet", "no_internet", "bluetooth", "usb",
                 "unknown")
# The `UserAgent` header (not User-Agent): software_name, software_version, platform,
# engine_name, engine_version, engine_version_full.
_UA_FIELDS = tuple(re.compile(p, re.ASCII) for p in (
    r"[A-Za-z0-9_-]+", r"[A-Za-z0-9_.-]+", r"[A-Za-z0-9 ]+",
    r"[A-Za-z0-9_-]+", r"[A-Za-z0-9_.-]+", r"[A-Za-z0-9_.-]+"))

# (cc, asn, category codes, limit) -> [{category_code, url, country_code}], best first.
URLLister = Callable[[str, int, Iterable[str], int], list[Mapping[str, Any]]]


def bad(message: str) -> Invalid:
    return Invalid(message, err_str="err_request_params")


@dataclass(frozen=True)
class EngineRequest:
    """A validated engine-descriptor request."""

    run_type: str
    is_charging: bool
    probe_cc: str
    probe_asn: int
    network_type: str
    category_codes: list[str]

    @property
    def url_limit(self) -> int:
        return url_limit(self.run_type, self.is_charging)


def check_user_agent(value: str | None) -> None:
    """Six comma-separated fields when the header is sent at all."""
    if value is None:
        return
    parts = value.split(",")
    if len(parts) != len(_UA_FIELDS) or not all(
            p.fullmatch(v) for p, v in zip(_UA_FIELDS, parts, strict=True)):
        raise bad("Invalid UserAgent header: software_name,software_version,platform,"
                  "engine_name,engine_version,engine_version_full")


def parse_request(body: Any, user_agent: str | None = None) -> EngineRequest:
    """The body probe-cli sends: `{is_charging, run_type, probe_cc, probe_asn, network_type,
    website_category_codes}`; 400 naming the first bad field."""
    check_user_agent(user_agent)
    if not isinstance(body, dict):
        raise bad("Invalid request body: a JSON object")
    for key in ("run_type", "is_charging", "probe_cc", "probe_asn", "network_type"):
        if key not in body:
            raise bad(f"Missing {key}")
    run_type = body["run_type"]
    if run_type not in RUN_TYPES:
        raise bad("Invalid run_type: timed or manual")
    charging = body["is_charging"]
    if isinstance(charging, int) and not isinstance(charging, bool) and charging in (0, 1):
        charging = bool(charging)
    if not isinstance(charging, bool):
        raise bad("Invalid is_charging: a boolean")
    network_type = body["network_type"]
    if network_type not in NETWORK_TYPES:
        raise bad("Invalid network_type: one of " + ", ".join(NETWORK_TYPES))
    try:  # `AS<n>` or `<n>`: upper-case AS only, the number not bounded here
        asn = validate.asn(body["probe_asn"], prefixes=("AS", ""), bounded=False)
    except validate.InvalidValue:
        raise bad("Invalid probe_asn: AS<number>") from None
    try:  # check-in's fields, refused as check-in refuses them (no err_str)
        cc = validate.probe_cc(body["probe_cc"])
        categories = validate.category_codes(body.get("website_category_codes"),
                                             "website_category_codes")
    except validate.InvalidValue as e:
        raise Invalid(e.message) from None
    return EngineRequest(
        run_type=run_type, is_charging=charging, probe_cc=cc, probe_asn=asn,
        network_type=network_type, category_codes=categories)


def fill_targets(nettests: list[dict[str, Any]], req: EngineRequest,
                 lister: URLLister) -> list[dict[str, Any]]:
    """The nettests with their dynamic lists filled in for this probe.

    `websites_list_prioritized`: the check-in list for the probe's country, network (asn 0:
    the whole country) and categories, cut at the run's limit; `inputs_extra` is aligned with
    `inputs`. An unknown list (a row written by another backend) gets no inputs, so the probe
    falls back to check-in's list rather than failing.
    """
    out = []
    for t in nettests:
        name = t.get("targets_name")
        if name is None:
            out.append(t)
            continue
        items = lister(req.probe_cc, req.probe_asn, req.category_codes,
                       req.url_limit) if name == PRIORITIZED else []
        out.append({**t, "inputs": [i["url"] for i in items],
                    "inputs_extra": [{"category_code": i["category_code"],
                                      "country_code": i["country_code"]} for i in items]})
    return out
