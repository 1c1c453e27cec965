"""Rendering of blocking events (JSON, Atom 1.0 parsed back with xml.etree) and the feed
route's parameter checks."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from multidict import MultiDict

from oonibackend.errors import APIError, Invalid, domain_status
from oonibackend.queries import detector_feed
from oonibackend.routes.detector import events_query as build_query
from oonibackend.routes.params import Query

A = "{http://www.w3.org/2005/Atom}"
NOW = dt.datetime(2024, 5, 1, 12, 0, 0)


def event(**kw) -> dict:
    e = {"test_name": "web_connectivity", "input": "https://twitter.com/", "probe_cc": "IT",
         "probe_asn": 30722, "status": "BLOCKED", "time": dt.datetime(2024, 4, 30, 7),
         "detection_time": dt.datetime(2024, 4, 30, 9, 10, 11)}
    e.update(kw)
    return e


def atom(events: list[dict]) -> ET.Element:
    body = detector_feed.render_atom(events, self_url="https://api.example.org/api/v1/detector/events"
                            "?probe_cc=IT&format=atom", authority="api.example.org", now=NOW)
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(body)


def test_json_rendering():
    out = detector_feed.render_json([event(), event(status="OK", probe_asn=4200000001,
                                           time=dt.datetime(2024, 4, 29, 1, 2, 3, 500000))])
    assert out["v"] == 0
    assert out["events"][0] == {
        "test_name": "web_connectivity", "input": "https://twitter.com/", "probe_cc": "IT",
        "probe_asn": 30722, "status": "BLOCKED", "time": "2024-04-30T07:00:00Z",
        "detection_time": "2024-04-30T09:10:11Z"}
    assert out["events"][1]["time"] == "2024-04-29T01:02:03Z"
    assert out["events"][1]["probe_asn"] == 4200000001


def test_atom_feed_is_valid_atom():
    root = atom([event(), event(input="", test_name="telegram", probe_cc="IR",
                                probe_asn=44244, status="OK",
                                detection_time=dt.datetime(2024, 4, 30, 10))])
    assert root.tag == A + "feed"
    assert root.findtext(A + "id") == ("https://api.example.org/api/v1/detector/events"
                                      "?probe_cc=IT&format=atom")
    assert root.findtext(A + "title") == "OONI blocking events"
    assert root.findtext(A + "updated") == "2024-04-30T10:00:00Z"  # the latest detection
    self_link = root.find(A + "link")
    assert self_link is not None and self_link.get("rel") == "self"
    assert self_link.get("href").endswith("?probe_cc=IT&format=atom")
    assert root.findtext(f"{A}author/{A}name") == "OONI"
    entries = root.findall(A + "entry")
    assert [e.findtext(A + "title") for e in entries] == [
        "BLOCKED: twitter.com in IT AS30722", "OK: telegram in IR AS44244"]
    first = entries[0]
    assert first.findtext(A + "id") == ("tag:api.example.org,2025:blocking-event/"
                                        "web_connectivity/IT/AS30722/20240430T070000Z/"
                                        "https%3A%2F%2Ftwitter.com%2F")
    assert first.findtext(A + "updated") == "2024-04-30T09:10:11Z"
    content = first.find(A + "content")
    assert content is not None and content.get("type") == "text"
    assert "BLOCKED since 2024-04-30T07:00:00Z" in content.text
    assert first.find(A + "category").get("term") == "BLOCKED"
    # Every entry has the elements Atom requires.
    for e in entries:
        for tag in ("id", "title", "updated"):
            assert e.findtext(A + tag)


def test_empty_feed_is_updated_now():
    root = atom([])
    assert root.findall(A + "entry") == []
    assert root.findtext(A + "updated") == "2024-05-01T12:00:00Z"


def test_untrusted_input_is_escaped():
    hostile = 'https://x.example/?a=<b>&c="d"\'</title><script>alert(1)</script>\x00\x1b\ufffe'
    root = atom([event(input=hostile, probe_cc="<I>")])
    entry = root.find(A + "entry")
    assert entry is not None
    text = entry.findtext(A + "content")
    assert '?a=<b>&c="d"\'</title><script>alert(1)</script>' in text
    assert "\x00" not in text and "\x1b" not in text
    assert entry.findtext(A + "title") == "BLOCKED: x.example in <I> AS30722"
    entry_id = entry.findtext(A + "id")
    assert entry_id.startswith("tag:api.example.org,2025:blocking-event/web_connectivity/")
    assert not set(entry_id) & set('<>"\' \x00')
    # The raw bytes carry no unescaped markup from the input.
    body = detector_feed.render_atom([event(input=hostile)], self_url='https://h/?q="<x>"',
                            authority="h", now=NOW)
    assert b"<script>" not in body and b'"<x>"' not in body
    assert ET.fromstring(body).findtext(A + "id") == 'https://h/?q="<x>"'


def test_entry_ids_are_stable_and_distinct():
    a = detector_feed.entry_id(event(), "api.ooni.io")
    assert a == detector_feed.entry_id(event(), "api.ooni.io")
    assert a != detector_feed.entry_id(event(input="https://twitter.com/x"), "api.ooni.io")
    assert a != detector_feed.entry_id(event(time=dt.datetime(2024, 4, 30, 8)), "api.ooni.io")


@pytest.mark.parametrize("input_, test_name, expected", [
    ("https://www.Example.com:8443/path?q", "web_connectivity", "www.example.com"),
    ("http://[::1", "web_connectivity", "http://[::1"),
    ("1.1.1.1:53", "dnscheck", "1.1.1.1:53"),
    ("", "signal", "signal"),
])
def test_subject(input_, test_name, expected):
    assert detector_feed.subject(event(input=input_, test_name=test_name)) == expected


def q(**params) -> Query:
    return Query(MultiDict(params))


def test_build_query_filters():
    sql, params = build_query(q(probe_cc="it,IR", probe_asn="AS30722", test_name="telegram",
                                domain="Twitter.com", status="blocked", since="2024-04-01",
                                until="2024-05-01T00:00:00Z", limit="5"))
    assert params["ccs"] == ["IT", "IR"] and params["asns"] == [30722]
    assert params["tests"] == ["telegram"] and params["domain"] == "twitter.com"
    assert params["status"] == "BLOCKED" and params["limit"] == 5
    assert params["since"] == dt.datetime(2024, 4, 1)
    assert params["until"] == dt.datetime(2024, 5, 1)
    assert "FROM blocking_events FINAL" in sql and "ORDER BY time DESC" in sql
    sql, params = build_query(q())
    assert "WHERE 1" in sql and params == {"limit": 100}
    assert build_query(q(domain="example.org:8080"))[1]["domain"] == "example.org"


@pytest.mark.parametrize("params", [
    {"probe_cc": "ITA"}, {"probe_asn": "ASX"}, {"test_name": "web connectivity"},
    {"domain": "a b"}, {"status": "MAYBE"}, {"since": "yesterday"}, {"until": "2024-13-01"},
    {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"},
    {"since": "2024-05-01", "until": "2024-04-01"}, {"input": "https://x/<>"},
])
def test_build_query_rejects_bad_parameters(params):
    with pytest.raises((APIError, Invalid)) as e:  # the query string's or the filters'
        build_query(q(**params))
    err = e.value
    assert (err.status if isinstance(err, APIError) else domain_status(err)) == 400
