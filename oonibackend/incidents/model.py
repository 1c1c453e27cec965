"""What a finding may contain, checked strictly (pure; docs/api.md §2.10).

Explorer sends the legacy keys plus `themes` and `slug` (which legacy's exact key check
refused); on update it resends what show returned minus `update_time` and `mine`. Arrays are
kept as sent, in order and with repeats, as OONI's service does (docs/current_services.md §7);
country codes are only upper-cased, so that the country filter finds them.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

from oonibackend import validate
from oonibackend.errors import Invalid

FIELDS = ("ASNs", "CCs", "domains", "email_address", "end_time", "event_type", "links",
          "published", "reported_by", "short_description", "start_time", "tags", "test_names",
          "text", "title", "themes", "slug")
# Keys of show's answer that an editor may send back unchanged; they are not taken from it.
ECHOED = ("id", "create_time", "update_time", "mine")
LISTS = ("domains", "links", "tags", "test_names", "themes")
MAX_TEXT = 200_000
MAX_SHORT = 2_000
MAX_ITEMS = 1_000
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*", re.ASCII)
EVENT_TYPES = ("incident", "finding", "report")


def bad(msg: str) -> Invalid:
    return Invalid(msg, err_str="err_request_params")


def _str(v: Any, name: str, limit: int, required: bool = False) -> str:
    if v is None:
        v = ""
    if not isinstance(v, str) or len(v) > limit:
        raise bad(f"Invalid {name}")
    if required and not v.strip():
        raise bad(f"{name} must not be empty")
    return v


def _time(v: Any, name: str) -> dt.datetime | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise bad(f"Invalid {name}")
    try:
        return validate.date_time(v, name).replace(microsecond=0)
    except validate.InvalidValue:
        raise bad(f"Invalid {name}") from None


def slugify(title: str) -> str:
    s = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    return "-".join(re.findall(r"[a-z0-9]+", s))[:80] or "finding"


def parse(body: Any, *, update: bool) -> dict[str, Any]:
    """The finding's stored fields from a create/update body; 400 on anything else."""
    if not isinstance(body, dict):
        raise bad("Invalid request")
    allowed = set(FIELDS) | set(ECHOED)
    extra = set(body) - allowed
    if extra:
        raise bad(f"Invalid keys: {', '.join(sorted(extra)[:5])}")
    required = {"title", "text", "start_time"} | ({"id"} if update else set())
    missing = required - set(body)
    if missing:
        raise bad(f"Missing keys: {', '.join(sorted(missing))}")
    out: dict[str, Any] = {
        "title": _str(body.get("title"), "title", 1000, required=True),
        "text": _str(body.get("text"), "text", MAX_TEXT, required=True),
        "short_description": _str(body.get("short_description"), "short_description",
                                  MAX_SHORT),
        "reported_by": _str(body.get("reported_by"), "reported_by", 1000),
        "email_address": _str(body.get("email_address"), "email_address", 254).strip().lower(),
        "event_type": _str(body.get("event_type") or "incident", "event_type", 50),
    }
    if out["event_type"] not in EVENT_TYPES:
        raise bad("Invalid event_type")
    start, end = _time(body.get("start_time"), "start_time"), _time(body.get("end_time"),
                                                                    "end_time")
    if start is None:
        raise bad("Invalid start_time")
    if end is not None and end < start:
        raise bad("end_time is before start_time")
    out["start_time"], out["end_time"] = start, end
    published = body.get("published", False)
    if not isinstance(published, bool | int) or published not in (0, 1):
        raise bad("Invalid published")
    out["published"] = int(published)
    ccs = body.get("CCs") or []
    if not isinstance(ccs, list) or len(ccs) > 300 or \
            not all(isinstance(c, str) and validate.is_country_code(c.upper(), case="upper")
                    for c in ccs):
        raise bad("Invalid CCs")
    out["CCs"] = [c.upper() for c in ccs]  # order and repeats as sent (§7 of our docs)
    asns = body.get("ASNs") or []
    if not isinstance(asns, list) or len(asns) > MAX_ITEMS or not all(
            isinstance(a, int) and not isinstance(a, bool) and 0 <= a < 2**32 for a in asns):
        raise bad("Invalid ASNs")
    out["ASNs"] = list(asns)
    for name in LISTS:
        v = body.get(name) or []
        if not isinstance(v, list) or len(v) > MAX_ITEMS or \
                not all(isinstance(x, str) and 0 < len(x) <= 2000 for x in v):
            raise bad(f"Invalid {name}")
        out[name] = list(v)
    slug = body.get("slug") or ""
    if slug and (not isinstance(slug, str) or len(slug) > 100 or not _SLUG.fullmatch(slug)):
        raise bad("Invalid slug: lowercase letters, digits and dashes")
    out["slug"] = slug
    if update:
        if not isinstance(body["id"], str | int) or not re.fullmatch(r"[0-9]{1,20}",
                                                                      str(body["id"])):
            raise bad("Invalid id")
        out["id"] = str(body["id"])
    return out
