"""Blocking events as JSON and as an Atom 1.0 feed (pure).

Every string of an event comes from measurements (untrusted): in Atom it is XML-escaped, and
characters XML 1.0 cannot carry at all (most control characters, lone surrogates) are dropped.
Entry ids are tag URIs (RFC 4151) built from the event key, so they never change.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from oonibackend.jsonutil import rfc3339

ATOM_NS = "http://www.w3.org/2005/Atom"
CONTENT_TYPE = "application/atom+xml"
TAG_DATE = "2025"
# Not allowed in XML 1.0 documents, even escaped.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

Event = Mapping[str, Any]


def event_json(e: Event) -> dict[str, Any]:
    return {"test_name": e["test_name"], "input": e["input"], "probe_cc": e["probe_cc"],
            "probe_asn": int(e["probe_asn"]), "status": e["status"],
            "time": rfc3339(e["time"]), "detection_time": rfc3339(e["detection_time"])}


def render_json(events: Sequence[Event]) -> dict[str, Any]:
    return {"v": 0, "events": [event_json(e) for e in events]}


def xml_text(s: str) -> str:
    """`s` safe as XML character data or a double-quoted attribute value."""
    s = _INVALID_XML.sub("", s)
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def subject(e: Event) -> str:
    """What was blocked: the input's host for a URL, else the input, else the test name."""
    input_ = e["input"]
    if "://" in input_:
        try:
            host = urllib.parse.urlsplit(input_).hostname
        except ValueError:  # e.g. unbalanced IPv6 brackets
            host = None
        if host:
            return host
    return input_ or e["test_name"]


def title(e: Event) -> str:
    return f"{e['status']}: {subject(e)} in {e['probe_cc']} AS{int(e['probe_asn'])}"


def entry_id(e: Event, authority: str) -> str:
    """tag:<authority>,<date>:blocking-event/<test>/<cc>/<asn>/<time>/<input>; the input
    percent-encoded, so the id is a valid URI whatever it holds."""
    t = e["time"].strftime("%Y%m%dT%H%M%SZ")
    input_ = urllib.parse.quote(e["input"], safe="")
    return (f"tag:{authority},{TAG_DATE}:blocking-event/{urllib.parse.quote(e['test_name'])}/"
            f"{urllib.parse.quote(e['probe_cc'])}/AS{int(e['probe_asn'])}/{t}/{input_}")


def _content(e: Event) -> str:
    what = e["input"] or e["test_name"]
    return (f"{e['test_name']} measurements of {what} from {e['probe_cc']} "
            f"AS{int(e['probe_asn'])}: status {e['status']} since {rfc3339(e['time'])} "
            f"(detected {rfc3339(e['detection_time'])}).")


def render_atom(events: Sequence[Event], *, self_url: str, authority: str,
                now: dt.datetime) -> bytes:
    """An Atom 1.0 feed of `events` (newest first). The feed id is its self URL; `updated` is
    the latest detection time, or `now` for an empty feed."""
    updated = max((e["detection_time"] for e in events), default=now)
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<feed xmlns="{ATOM_NS}">',
        f"<id>{xml_text(self_url)}</id>",
        "<title>OONI blocking events</title>",
        "<subtitle>Changes of the blocking status of tested websites and apps, per "
        "country and network, detected in OONI measurements</subtitle>",
        f"<updated>{rfc3339(updated)}</updated>",
        f'<link rel="self" type="{CONTENT_TYPE}" href="{xml_text(self_url)}"/>',
        "<author><name>OONI</name></author>",
    ]
    for e in events:
        out += [
            "<entry>",
            f"<id>{xml_text(entry_id(e, authority))}</id>",
            f"<title>{xml_text(title(e))}</title>",
            f"<updated>{rfc3339(e['detection_time'])}</updated>",
            f"<published>{rfc3339(e['detection_time'])}</published>",
            f'<category term="{xml_text(e["status"])}"/>',
            f'<content type="text">{xml_text(_content(e))}</content>',
            "</entry>",
        ]
    out.append("</feed>")
    return ("\n".join(out) + "\n").encode("utf-8")
