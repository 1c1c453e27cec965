"""Hostile and malformed requests on the read API, accounts, findings, OONI Run, URL priorities
and CORS pre-flights: every one gets a normal answer or a 4xx JSON `{"error": ...}`, never a 5xx.

Two parts, against the real server:
* tables of (method, target, body, expected status class) with the behaviour pinned, among them
  the regressions of the 5xx found by the sweep below: a date whose UTC offset pushes it out of
  datetime's range (9999-12-31T23:59:59-23:59: OverflowError), paging offsets past ClickHouse's
  UInt64, OONI Run revisions in non-ASCII digits (`²`: str.isdigit but not int), a login
  redirect with a bad port (urlsplit's port raising ValueError), a bearer token with a byte that
  is not UTF-8 (PyJWT's UnicodeEncodeError), a findings id so long that its lookup query
  exceeded ClickHouse's max_query_size;
* a sweep of families of nasty values (control characters, NUL, non-UTF-8 percent-encoding,
  huge and negative numbers, impossible dates, path traversal, unicode, SQL-ish text, repeated
  parameters, wrong JSON types, deep nesting, wrong content types) over every parameter, path
  parameter and body key of those routes, asserting only "not 5xx, and JSON error if 4xx".

GETs run on the shared `read_backend` (read-only); writes and authenticated calls on a backend
of this module. aiohttp's own HTTP parser answers some malformed requests (request line or a
header over 8190 bytes, control bytes in the request line) with a plain-text 400 before any
handler runs; those are only checked for "not 5xx".

The schemathesis sweep these tables came from is a manual tool, not a test dependency (it is
in the venv: `.venv/bin/schemathesis`, v4). Start a backend with the fixture rows and a known
`probe.jwt_secret` (tests.conftest.Backend + tests.readdata.load_fixture_rows, as the
`read_backend` fixture does), mint an admin token with
`oonibackend.accounts.tokens.session_token("a" * 32, "admin", now, secret, now, 1, 1)`, then:

    R1='^/api/(v1/(measurement|raw_measurement|aggregation|torsf|user_|set_|get_account|incidents)'
    R2='|_/(measurement_feedback|asn_by|countr|test_names|check_report|global|domain|asnmeta'
    R3='|networks|test_coverage|website_|vanilla|im_|network_stats|circumvention'
    R4='|account_metadata|ooni_run|url-priorities)|v2/oonirun)'
    .venv/bin/schemathesis run SPEC --url http://127.0.0.1:PORT \\
        --include-path-regex "$R1$R2$R3$R4" --checks not_a_server_error \\
        --mode all --max-examples 50 --max-time 400 -w 2 [-H "Authorization: Bearer $ADMIN"]

with SPEC the legacy spec (tests/data/apispec.json) and our own
(http://127.0.0.1:PORT/apispec_1.json), each with and without the admin header. Schemathesis
refuses a few definitions of both (response descriptions that are not strings, response schemas
it cannot parse, path parameters not declared): run it on a copy with those fixed (descriptions
as strings, response schemas dropped: only not_a_server_error is checked, missing path
parameters declared as strings). Then add what it finds to the tables here.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from oonibackend.accounts.tokens import session_token
from tests.conftest import Backend, free_port

SECRET = "h" * 32
_NOW = int(time.time())
TOKENS = {
    None: None,
    "user": session_token("b" * 32, "user", _NOW, SECRET, _NOW, 1, 1),
    "user2": session_token("d" * 32, "user", _NOW, SECRET, _NOW, 1, 1),
    "admin": session_token("a" * 32, "admin", _NOW, SECRET, _NOW, 1, 1),
}
UID = "20240101000000.000000_IT_webconnectivity_aaaaaaaaaaaaaaaa"
RID = "20240101T000000Z_webconnectivity_IT_12874_n1_aaaaaaaaaaaaaaaa"
OVERFLOW = "9999-12-31T23:59:59-23:59"  # year 10000 in UTC
UNDERFLOW = "0001-01-01T00:00:00%2B23:59"  # year 0 in UTC
HUGE_INT = "99999999999999999999999999"


# ---- HTTP ---------------------------------------------------------------------------------

def call(backend: Backend, method: str, target: str, body: Any = None,
         headers: dict[str, Any] | None = None, who: str | None = None
         ) -> tuple[int, bytes, http.client.HTTPResponse]:
    """One request with the target sent as is (percent-escapes and all). `body`: bytes as
    they are, anything else as JSON (Content-Type: JSON unless `headers` say otherwise; a
    header set to None is not sent)."""
    h: dict[str, Any] = dict(headers or {})
    if TOKENS[who]:
        h.setdefault("Authorization", "Bearer " + TOKENS[who])
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
        h["Content-Length"] = str(len(data))
    c = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=30)
    try:
        c.putrequest(method, target, skip_accept_encoding=True)
        for k, v in h.items():
            if v is not None:
                c.putheader(k, v)
        c.endheaders(data)
        r = c.getresponse()
        return r.status, r.read(), r
    finally:
        c.close()


def problem(status: int, data: bytes, resp: http.client.HTTPResponse,
            expected: int | None = None) -> str | None:
    """What is wrong with an answer: a 5xx, a 4xx that is not `{"error": ...}` JSON (except
    aiohttp's parser's plain-text 400), or a status class other than `expected` (2 or 4)."""
    if status >= 500:
        return f"{status} {data[:200]!r}"
    if expected is not None and status // 100 != expected:
        return f"expected {expected}xx, got {status} {data[:200]!r}"
    if 400 <= status < 500:
        ctype = resp.getheader("Content-Type") or ""
        if ctype.startswith("text/plain") and status == 400:
            return None  # aiohttp's HTTP parser, before any handler (see the docstring)
        try:
            body = json.loads(data)
        except ValueError:
            return f"{status} not JSON: {data[:200]!r}"
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return f"{status} without an error message: {data[:200]!r}"
    return None


def check_all(backend: Backend, cases: list[tuple], **kw: Any) -> None:
    """Run (method, target, body, expected[, who[, headers]]) cases; report every failure."""
    failures = []
    for case in cases:
        method, target, body, expected, *rest = case
        who = rest[0] if rest else None
        headers = rest[1] if len(rest) > 1 else None
        status, data, resp = call(backend, method, target, body, headers, who)
        if (p := problem(status, data, resp, expected)) is not None:
            failures.append(f"{method} {target[:150]} {str(body)[:80]} ({who}): {p}")
    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures)


# ---- the backend for writes and authenticated calls ----------------------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(tmp_path_factory.mktemp("hostile"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET},
        # Nothing listens there: a valid registration fails fast (400, "Unable to send").
        "smtp": {"port": free_port(), "timeout": 2.0},
    })
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def made(api: Backend) -> dict[str, str]:
    """One finding and two OONI Run links (v2, draft), owned by "user"."""
    out = {}
    status, data, _ = call(api, "POST", "/api/v1/incidents/create", FINDING, who="user")
    assert status == 200, data
    out["finding"] = json.loads(data)["id"]
    status, data, _ = call(api, "POST", "/api/v2/oonirun/links", RUN, who="user")
    assert status == 200, data
    out["link"] = json.loads(data)["oonirun_link_id"]
    status, data, _ = call(api, "POST", "/api/_/ooni_run/create", RUN, who="user")
    assert status == 200, data
    out["draft"] = str(json.loads(data)["ooni_run_link_id"])
    return out


def fill(cases: list[tuple], made: dict[str, str]) -> list[tuple]:
    """The `{finding}`, `{link}` and `{draft}` of targets and JSON bodies replaced."""
    out = []
    for method, target, body, *rest in cases:
        if isinstance(body, dict):
            text = json.dumps(body)
            for k, v in made.items():
                text = text.replace("{" + k + "}", v)
            body = json.loads(text)
        out.append((method, target.format(**made), body, *rest))
    return out


FINDING = {"title": "Hostile", "text": "x", "start_time": "2024-01-01T00:00:00Z",
           "CCs": ["IT"], "ASNs": [12874], "domains": ["example.com"], "tags": [],
           "links": [], "test_names": [], "short_description": "s", "reported_by": "r",
           "email_address": "", "published": False, "event_type": "incident"}
RUN = {"name": "n", "short_description": "s", "description": "d", "author": "a", "icon": "",
       "color": "#000000", "nettests": [{"test_name": "web_connectivity",
                                         "inputs": ["https://example.com/"]}]}
RULE = {"category_code": "NEWS", "cc": "IT", "domain": "*", "url": "*", "priority": 5}
DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 3000 + b"1" + b"}" * 3000


# ---- pinned behaviour: read routes (read_backend, anonymous) -------------------------------

READ_CASES = [
    # dates whose offset leaves datetime's range (were 500)
    ("GET", f"/api/v1/measurements?since={OVERFLOW}", None, 4),
    ("GET", f"/api/v1/measurements?until={UNDERFLOW}", None, 4),
    ("GET", f"/api/v1/aggregation?since={OVERFLOW}", None, 4),
    ("GET", f"/api/v1/aggregation?until={UNDERFLOW}&axis_x=probe_cc", None, 4),
    ("GET", f"/api/v1/torsf_stats?since={OVERFLOW}", None, 4),
    ("GET", f"/api/v1/torsf_stats?until={UNDERFLOW}", None, 4),
    # offsets past UInt64 (were 500)
    ("GET", f"/api/v1/measurements?offset={HUGE_INT}", None, 4),
    ("GET", f"/api/_/website_urls?probe_cc=IT&probe_asn=AS12874&offset={HUGE_INT}", None, 4),
    ("GET", "/api/v1/measurements?offset=9007199254740991&since=2024-01-01&until=2024-01-02",
     None, 2),
    ("GET", "/api/_/website_urls?probe_cc=IT&probe_asn=AS12874&offset=9007199254740991",
     None, 2),
    # other dates
    ("GET", "/api/v1/measurements?since=0000-00-00", None, 4),
    ("GET", "/api/v1/measurements?until=9999-12-31T99:99", None, 4),
    ("GET", "/api/v1/measurements?since=9999-12-31", None, 4),
    ("GET", "/api/v1/measurements?since=1969-12-31", None, 4),
    ("GET", "/api/v1/measurements?since=2024-02-30", None, 4),
    ("GET", "/api/v1/measurements?since=2024-01-02&until=2024-01-01", None, 2),
    ("GET", "/api/v1/aggregation?since=2024-01-02&until=2024-01-01", None, 4),
    ("GET", "/api/v1/aggregation?since=1970-01-01&until=2105-12-31&axis_x="
            "measurement_start_day&time_grain=hour", None, 4),
    # absent-like values, repeated parameters
    ("GET", "/api/v1/measurements?probe_cc=undefined&probe_asn=null&since=&limit=", None, 2),
    ("GET", "/api/v1/measurements?probe_cc=IT&probe_cc=DE&probe_asn=AS1,AS2", None, 2),
    ("GET", "/api/v1/measurements?limit=5&limit=7", None, 2),
    ("GET", "/api/v1/aggregation?probe_cc=IT,DE,,&probe_cc=FR&axis_x=probe_cc", None, 2),
    # control characters, NUL, non-UTF-8
    ("GET", "/api/v1/measurements?probe_cc=%00", None, 4),
    ("GET", "/api/v1/measurements?test_name=web%00connectivity", None, 4),
    ("GET", "/api/v1/measurements?input=%00%0d%0a", None, 2),
    ("GET", "/api/v1/measurements?probe_cc=%ff%fe", None, 4),
    ("GET", "/api/v1/measurement_meta?report_id=%ff%fe", None, 4),
    ("GET", f"/api/v1/measurement_meta?report_id={RID}&input=a%0d%0aX:%201", None, 4),
    ("GET", f"/api/v1/measurement_meta?report_id={RID}&input=%0d%0a", None, 2),  # stripped
    ("GET", "/api/v1/aggregation?domain=%c0%ae%c0%ae", None, 4),
    ("GET", "/api/v1/aggregation?input=%E2%80%AE", None, 2),
    # numbers
    ("GET", "/api/v1/measurements?limit=0", None, 4),
    ("GET", "/api/v1/measurements?limit=101", None, 4),
    ("GET", "/api/v1/measurements?limit=-1", None, 4),
    ("GET", "/api/v1/measurements?limit=1e3", None, 4),
    ("GET", "/api/v1/measurements?offset=-1", None, 4),
    ("GET", "/api/v1/measurements?probe_asn=AS4294967296", None, 4),
    ("GET", "/api/v1/measurements?probe_asn=AS-1", None, 4),
    ("GET", "/api/v1/measurements?ooni_run_link_id=18446744073709551616", None, 4),
    ("GET", "/api/v1/measurements?ooni_run_link_id=%C2%B2", None, 4),
    ("GET", "/api/v1/aggregation?ooni_run_link_id=%D9%A1", None, 4),
    ("GET", "/api/_/asnmeta?asn=AS99999999999", None, 4),
    ("GET", "/api/_/website_urls?probe_cc=IT&probe_asn=AS12874&limit=1001", None, 4),
    ("GET", "/api/_/website_urls?probe_cc=IT&probe_asn=AS12874&limit=-5", None, 2),
    # forbidden and missing
    ("GET", "/api/v1/measurements?probe_cc=ZZ", None, 4),
    ("GET", "/api/v1/measurements?probe_asn=AS0", None, 4),
    ("GET", "/api/_/country_overview", None, 4),
    ("GET", "/api/_/domain_metadata?domain=", None, 4),
    ("GET", "/api/_/im_stats?test_name=../signal&probe_cc=IT&probe_asn=1", None, 4),
    ("GET", "/api/_/test_coverage?probe_cc=IT&test_groups=websites,..%2f", None, 4),
    ("GET", "/api/v1/measurement_meta", None, 4),
    ("GET", "/api/v1/raw_measurement?measurement_uid=", None, 4),
    # huge values
    ("GET", "/api/v1/measurements?input=" + "x" * 3000, None, 4),
    ("GET", "/api/v1/aggregation?probe_cc=" + ",".join(["IT"] * 201), None, 2),
    ("GET", "/api/v1/aggregation?test_name=" + ",".join(f"t{i}" for i in range(201)), None, 4),
    ("GET", "/api/_/domain_metadata?domain=" + "a" * 64 + ".com", None, 4),
    ("GET", "/api/v1/measurements?" + "&".join(f"p{i}=x" for i in range(600)), None, 2),
    ("GET", "/api/v1/measurements?" + "&".join(f"p{i}=x" for i in range(2000)), None, 4),
    # SQL-ish and format-string-ish text goes in as data
    ("GET", "/api/v1/measurements?input=%27%20OR%201=1%20--&domain=%25(since)s", None, 2),
    ("GET", "/api/_/domain_metadata?domain=a%27b.com", None, 4),
    ("GET", "/api/v1/aggregation?input=x)%20OR%20(1=1&axis_x=probe_cc", None, 2),
    ("GET", "/api/v1/aggregation?input=%5C%27&axis_x=probe_cc", None, 4),  # not whitelisted
    ("GET", "/api/v1/aggregation?axis_x=probe_cc;DROP%20TABLE%20fastpath", None, 4),
    ("GET", "/api/v1/aggregation?format=xml", None, 4),
    ("GET", "/api/v1/measurements?order_by=measurement_uid%20DESC", None, 4),
    # path parameters: traversal, unicode, control characters
    ("GET", "/api/v1/measurement/..%2f..%2fetc%2fpasswd", None, 4),
    ("GET", "/api/v1/measurement/%2e%2e", None, 4),
    ("GET", "/api/v1/measurement/%E6%97%A5%E6%9C%AC%E6%97%A5%E6%9C%AC%E6%97%A5%E6%9C%AC", None,
     4),
    ("GET", f"/api/v1/measurement/{UID}%00", None, 4),
    ("GET", f"/api/v1/measurement/{UID}", None, 4),  # unknown uid: legacy's 400
    ("GET", "/api/_/measurement_feedback/..%2f..%2f..%2fetc%2fpasswd", None, 4),
    ("GET", f"/api/_/measurement_feedback/{UID}", None, 2),
    ("GET", "/measurement_spool/..%2f..%2f/x.post", None, 4),
    ("GET", "/measurement_spool/2024010100/..%2f..%2f..%2fetc%2fpasswd.post", None, 4),
    ("GET", "/measurement_spool/2024010100/" + UID + ".post", None, 4),
    ("GET", "/measurement_spool/../../etc/passwd", None, 4),
    ("GET", "/api/v1/incidents/show/..%2f..%2fetc%2fpasswd", None, 4),
    ("GET", "/api/v1/incidents/show/" + "x" * 200, None, 4),
    ("GET", "/api/v1/incidents/show/%F0%9F%98%80", None, 4),
    ("GET", "/api/_/ooni_run/fetch/..%2f", None, 4),
    ("GET", "/api/_/ooni_run/fetch/%C2%B2", None, 4),
    ("GET", "/api/_/ooni_run/fetch/18446744073709551616", None, 4),
    ("GET", "/api/v2/oonirun/links/-1", None, 4),
    ("GET", "/api/v2/oonirun/links/1%00/revisions", None, 4),
    ("GET", "/api/v2/oonirun/links/1/full-descriptor/..%2f..%2f", None, 4),
    # accounts without a session
    ("GET", "/api/v1/user_login?k=%ff%fe", None, 4),
    ("GET", "/api/v1/user_login?k=" + "x" * 2000, None, 4),
    ("GET", "/api/v1/user_login?k=a.b.c", None, 4),
    ("GET", "/api/v1/user_refresh_token", None, 4),
    ("GET", "/api/_/account_metadata", None, 2),
    ("GET", "/api/_/url-priorities/list", None, 4),
    ("GET", "/api/v1/get_account_role/a@b.co", None, 4),
    ("GET", "/api/v1/incidents/search?only_mine=maybe", None, 4),
    ("GET", "/api/v1/incidents/search?country_code=ITA", None, 4),
    ("GET", "/api/v1/incidents/search?theme=%ff%fe&only_mine=true", None, 2),
    ("GET", "/api/_/ooni_run/list?ooni_run_link_id=abc", None, 4),
    ("GET", "/api/_/ooni_run/list?include_archived=2", None, 4),
    ("GET", "/api/v2/oonirun/links?is_expired=undefined&is_mine=true", None, 2),
    # other methods
    ("DELETE", "/api/v1/measurements", None, 4),
    ("PUT", "/api/v1/incidents/search", {}, 4),
    ("POST", "/api/v1/aggregation", b"{}", 4),
]


def test_read_routes_pinned_cases(read_backend: Backend) -> None:
    check_all(read_backend, READ_CASES)


def test_bad_bearer_tokens_count_as_anonymous(read_backend: Backend) -> None:
    """A byte that is not UTF-8 in the Authorization header reached PyJWT as a surrogate and
    raised UnicodeEncodeError (500); every garbage token must count as no session."""
    garbage = [b"Bearer \xe9", b"Bearer \xff\xfe", "Bearer é".encode(), b"Bearer a.b.c",
               b"Bearer", b"Basic Zm9vOmJhcg==", b"Bearer " + b"a" * 5000,
               b"Bearer eyJhbGciOiJub25lIn0.eyJhdWQiOiJ1c2VyX2F1dGgiLCJyb2xlIjoiYWRtaW4ifQ."]
    cases = []
    for value in garbage:
        h = {"Authorization": value}
        cases += [("GET", "/api/_/account_metadata", None, 2, None, h),
                  ("GET", "/api/v1/user_refresh_token", None, 4, None, h),
                  ("GET", "/api/_/url-priorities/list", None, 4, None, h),
                  ("GET", f"/api/_/measurement_feedback/{UID}", None, 2, None, h),
                  ("GET", "/api/v1/incidents/search?only_mine=true", None, 2, None, h),
                  ("GET", "/api/v2/oonirun/links?is_mine=true", None, 2, None, h),
                  ("POST", "/api/v1/incidents/create", {}, 4, None, h)]
    check_all(read_backend, cases)
    status, data, _ = call(read_backend, "GET", "/api/_/account_metadata",
                           headers={"Authorization": b"Bearer \xe9"})
    assert (status, json.loads(data)) == (200, {"logged_in": False, "role": ""})


def test_cors_preflights_never_fail_nor_echo_what_is_not_a_header_name(
        read_backend: Backend) -> None:
    asked = [b"", b"authorization, content-type", b"x" * 600, b"a,,b", b"\xc3\xa9",
             b"x-\xc2\xb2", b"\xff", b", ,", b"-", b"a\tb"]
    for path in ("/api/v1/measurements", "/api/v1/incidents/create", "/nonexistent",
                 "/api/v2/oonirun/links/1"):
        for value in asked:
            for origin in (None, b"https://explorer.ooni.org", b"null", b"\xff\xfe",
                           b"https://explorer.ooni.org\xc3\xa9"):
                h = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": value}
                if origin is not None:
                    h["Origin"] = origin
                status, data, resp = call(read_backend, "OPTIONS", path, headers=h)
                assert status == 204, (path, value, origin, status, data[:200])
                allowed = resp.getheader("Access-Control-Allow-Headers")
                assert allowed.isascii() and "\t" not in allowed, (value, allowed)
                if origin is not None and origin != b"https://explorer.ooni.org":
                    assert resp.getheader("Access-Control-Allow-Origin") == "*"
    status, data, resp = call(read_backend, "OPTIONS", "/api/v1/measurements")
    assert status < 500 and problem(status, data, resp) is None


# ---- pinned behaviour: writing and authenticated routes (own backend) ----------------------

def _finding(**kw: Any) -> dict[str, Any]:
    return {**FINDING, **kw}


def _run(**kw: Any) -> dict[str, Any]:
    return {**RUN, **kw}


WRITE_CASES = [
    # findings
    ("POST", "/api/v1/incidents/create", _finding(start_time=OVERFLOW), 4, "user"),  # was 500
    ("POST", "/api/v1/incidents/create", _finding(end_time="0001-01-01T00:00:00+23:59"), 4,
     "user"),
    ("POST", "/api/v1/incidents/delete", {"id": "a" * 100_000}, 4, "user"),  # was 500
    ("POST", "/api/v1/incidents/publish", {"id": "9" * 101}, 4, "admin"),
    ("POST", "/api/v1/incidents/update", _finding(id="a" * 100_000), 4, "user"),  # was 500
    ("POST", "/api/v1/incidents/update", _finding(id="{finding}"), 4, "user",
     {"If-Match": OVERFLOW}),
    ("POST", "/api/v1/incidents/update", _finding(id="{finding}"), 4, "user",
     {"If-Match": '"x' * 50}),
    ("POST", "/api/v1/incidents/update", _finding(id="{finding}"), 2, "user",
     {"If-Match": '""'}),  # empty: no version check
    ("POST", "/api/v1/incidents/update", _finding(id="{finding}", update_time="x"), 4,
     "user"),
    ("POST", "/api/v1/incidents/update", _finding(id="{finding}"), 4, "user2"),
    ("POST", "/api/v1/incidents/delete", {"id": ""}, 4, "user"),
    ("POST", "/api/v1/incidents/delete", {"id": 1.5}, 4, "user"),
    ("POST", "/api/v1/incidents/delete", {"id": None}, 4, "user"),
    ("POST", "/api/v1/incidents/delete", {"id": "../../etc/passwd"}, 4, "user"),
    ("POST", "/api/v1/incidents/publish", {"id": "{finding}"}, 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(start_time="0000-00-00"), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(published=True), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(published="yes"), 4, "admin"),
    ("POST", "/api/v1/incidents/create", _finding(CCs=["I T"]), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(CCs="IT"), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(ASNs=[True]), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(ASNs=[10**30]), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(ASNs=[-1]), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(domains=[""]), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(domains=[None]), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(slug="../x"), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(slug="%2e%2e"), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(title=""), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(text=None), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(event_type="x"), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(email_address="a@b.co"), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(nope=1), 4, "user"),
    ("POST", "/api/v1/incidents/create", _finding(title="\x00\u202e😀 ../../x"), 2, "user"),
    ("POST", "/api/v1/incidents/create", FINDING, 4, None),
    ("POST", "/api/v1/incidents/%2e%2e", {"id": "1"}, 4, "user"),
    ("POST", "/api/v1/incidents/create", b"\xff\xfe", 4, "user"),
    ("POST", "/api/v1/incidents/create", b'{"title": "\\ud800"}', 4, "user"),
    ("POST", "/api/v1/incidents/create", b"x" * (600 * 1024), 4, "user"),
    # OONI Run
    ("GET", "/api/v2/oonirun/links/{link}/full-descriptor/%C2%B2", None, 4),  # was 500
    ("GET", "/api/v2/oonirun/links/{link}?revision=%C2%B2", None, 4),  # was 500
    ("POST", "/api/v2/oonirun/links/{link}/engine-descriptor/%C2%B2", {}, 4),  # was 500
    ("GET", "/api/v2/oonirun/links/{link}/full-descriptor/%D9%A1", None, 4),  # Arabic 1
    ("GET", "/api/v2/oonirun/links/{link}/full-descriptor/0", None, 4),
    ("GET", "/api/v2/oonirun/links/{link}/full-descriptor/1", None, 2),
    ("GET", "/api/v2/oonirun/links/{link}/full-descriptor/latest", None, 2),
    ("GET", "/api/v2/oonirun/links/{link}?revision=99999999999999999999999", None, 4),
    ("GET", "/api/v2/oonirun/links/{link}?revision=undefined", None, 2),
    ("POST", "/api/v2/oonirun/links/{link}/engine-descriptor/latest", [], 4),
    ("POST", "/api/v2/oonirun/links/{link}/engine-descriptor/latest", b"\xff", 4),
    ("POST", "/api/v2/oonirun/links/{link}/engine-descriptor/latest", b"", 4),  # required
    ("GET", f"/api/_/ooni_run/fetch/{{draft}}?creation_time={OVERFLOW}", None, 4),  # was 500
    ("GET", f"/api/_/ooni_run/fetch/{{draft}}?creation_time={UNDERFLOW}", None, 4),
    ("GET", "/api/_/ooni_run/fetch/{draft}?creation_time=0000-00-00", None, 4),
    ("GET", "/api/_/ooni_run/fetch/{draft}?creation_time=2024-01-01", None, 4),
    ("POST", "/api/v2/oonirun/links", _run(expiration_date=OVERFLOW), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(expiration_date="9999-12-31T99:99"), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(nettests=[]), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(nettests=[{"test_name": "../x"}]), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(nettests=[{"test_name": "dnscheck",
                                                      "inputs": [1]}]), 4, "user"),
    ("POST", "/api/v2/oonirun/links",
     _run(nettests=[{"test_name": "dnscheck", "is_manual_run_enabled": 1}]), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(nettests=[None]), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(nettests={"a": 1}), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(name=""), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(color="red"), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(name_intl={"../": "x"}), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(name_intl={"it": ""}), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(name_intl="it"), 4, "user"),
    ("POST", "/api/v2/oonirun/links", _run(name_intl=[]), 2, "user"),  # empty: none
    ("POST", "/api/v2/oonirun/links", _run(author=["a"]), 4, "user"),
    ("POST", "/api/v2/oonirun/links", RUN, 4, None),
    ("POST", "/api/v2/oonirun/links", b"x" * (600 * 1024), 4, "user"),
    ("PUT", "/api/v2/oonirun/links/{link}", RUN, 4, "user2"),
    ("PUT", "/api/v2/oonirun/links/%C2%B2", RUN, 4, "user"),
    ("PUT", "/api/v2/oonirun/links/99999999999999999999", RUN, 4, "user"),
    ("PUT", "/api/v2/oonirun/links/{link}", None, 4, "user"),
    ("POST", "/api/_/ooni_run/create?ooni_run_link_id=%C2%B2", RUN, 4, "user"),
    ("POST", "/api/_/ooni_run/create?ooni_run_link_id=-1", RUN, 4, "user"),
    ("POST", "/api/_/ooni_run/create?ooni_run_link_id={draft}", RUN, 4, "user2"),
    ("POST", "/api/_/ooni_run/create", _run(expiration_date=OVERFLOW), 4, "user"),
    ("POST", "/api/_/ooni_run/archive/..%2f", None, 4, "user"),
    ("POST", "/api/_/ooni_run/archive/%C2%B2", None, 4, "user"),
    ("POST", "/api/_/ooni_run/archive/1", None, 2, "user"),  # legacy: a silent no-op
    # URL priorities (admin)
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "priority": True}}, 4,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "priority": 1.5}}, 4,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "priority": "1e3"}}, 4,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "priority": 10**7}}, 4,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "priority": None}}, 4,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "cc": "ITA"}}, 4, "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "url": "javascript:x"}},
     4, "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "domain": "a/b"}}, 4,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "x": 1}}, 4, "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": [RULE]}, 4, "admin"),
    ("POST", "/api/_/url-priorities/update", {"old_entry": {**RULE, "priority": 77}}, 4,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": RULE, "x": 1}, 4, "admin"),
    ("POST", "/api/_/url-priorities/update", {}, 4, "admin"),
    ("POST", "/api/_/url-priorities/update", b"null", 4, "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": {**RULE, "priority": "6"}}, 2,
     "admin"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": RULE}, 4, "user"),
    ("POST", "/api/_/url-priorities/update", {"new_entry": RULE}, 4, None),
    ("GET", "/api/_/url-priorities/list?x=%00", None, 2, "admin"),
    # measurement feedback
    ("POST", "/api/_/measurement_feedback", {"measurement_uid": UID, "status": "ok"}, 2,
     "user"),
    ("POST", "/api/_/measurement_feedback", {"measurement_uid": UID, "status": "ok"}, 4),
    ("POST", "/api/_/measurement_feedback", {"measurement_uid": "../../etc/passwd",
                                             "status": "ok"}, 4, "user"),
    ("POST", "/api/_/measurement_feedback", {"measurement_uid": UID, "status": True}, 4,
     "user"),
    ("POST", "/api/_/measurement_feedback", {"measurement_uid": [UID], "status": "ok"}, 4,
     "user"),
    ("POST", "/api/_/measurement_feedback", b"x" * 5000, 4, "user"),
    ("GET", f"/api/_/measurement_feedback/{UID}", None, 2, "user"),
    # accounts
    ("POST", "/api/v1/user_register", {"email_address": "a@b.co",
                                       "redirect_to": "https://explorer.ooni.org:99999/"}, 4),
    ("POST", "/api/v1/user_register", {"email_address": "a@b.co",
                                       "redirect_to": "https://explorer.ooni.org:abc/"}, 4),
    ("POST", "/api/v1/user_register",
     b"email_address=a%40b.co&redirect_to=https%3A%2F%2Fexplorer.ooni.org%3A-1%2F", 4, None,
     {"Content-Type": "application/x-www-form-urlencoded"}),
    ("POST", "/api/v1/user_register", {"email_address": "a@b.co",
                                       "redirect_to": "https://[::1/"}, 4),
    ("POST", "/api/v1/user_register", {"email_address": "a@b.co",
                                       "redirect_to": "javascript:alert(1)"}, 4),
    ("POST", "/api/v1/user_register", {"email_address": "a@b.co\x00",
                                       "redirect_to": "https://explorer.ooni.org/"}, 4),
    ("POST", "/api/v1/user_register", {"email_address": {"a": 1},
                                       "redirect_to": "https://explorer.ooni.org/"}, 4),
    ("POST", "/api/v1/user_register", {"email_address": "a@b.co",
                                       "redirect_to": "https://explorer.ooni.org/"}, 4),
    ("POST", "/api/v1/user_register", b"x" * 9000, 4),
    ("POST", "/api/v1/set_account_role", {"email_address": "a@b.co", "role": "root"}, 4,
     "admin"),
    ("POST", "/api/v1/set_account_role", {"email_address": "a@b.co", "role": ["admin"]}, 4,
     "admin"),
    ("POST", "/api/v1/set_account_role", {"email_address": "a@b.co", "role": "admin"}, 4,
     "user"),
    ("POST", "/api/v1/set_account_role", {"email_address": "x@example.org", "role": "user"},
     2, "admin"),
    ("POST", "/api/v1/set_session_expunge", {"email_address": None}, 4, "admin"),
    ("POST", "/api/v1/set_session_expunge", {"email_address": "../../etc"}, 4, "admin"),
    ("GET", "/api/v1/get_account_role/..%2f..%2fetc%2fpasswd", None, 4, "admin"),
    ("GET", "/api/v1/get_account_role/a%00@b.co", None, 4, "admin"),
    ("GET", "/api/v1/get_account_role/nobody@example.org", None, 4, "admin"),
    ("GET", "/api/v1/get_account_role/x@example.org", None, 2, "admin"),
    ("GET", "/api/v1/user_refresh_token", None, 2, "user"),
]


def test_writing_routes_pinned_cases(api: Backend, made: dict[str, str]) -> None:
    check_all(api, fill(WRITE_CASES, made))


# ---- the sweep: families of nasty values on every parameter --------------------------------

# Percent-encoded as sent in a query string or a path segment.
NASTY = [
    "", "undefined",                                                  # absent-like
    "a%00b", "%0d%0aX-Injected:%201", "%01%1f%7f",                    # control characters
    "%ff%fe", "%ed%a0%80",                                            # not UTF-8
    "x" * 2100, "9" * 40,                                             # huge
    "-99999999999999999999", "18446744073709551616", "1e309", "0x10", "%C2%B2",  # numbers
    "0000-00-00", "9999-12-31T99:99", OVERFLOW, UNDERFLOW,            # dates
    "..%2f..%2fetc%2fpasswd", "%5c..%5c",                             # traversal
    "%E6%97%A5%E6%9C%AC", "%F0%9F%98%80%E2%80%AE",                    # unicode
    "%27%20OR%201=1%20--", "%25(since)s%5C%27",                       # SQL-ish
    ",,,", ",".join(["IT"] * 250), "true", "%5B%5D%7B%7D", "ZZ",      # lists, types
]
GET_PARAMS = {
    "/api/v1/measurements": ("report_id", "input", "domain", "probe_cc", "probe_asn",
                             "test_name", "category_code", "since", "until", "confirmed",
                             "anomaly", "failure", "software_version", "test_version",
                             "engine_version", "ooni_run_link_id", "order_by", "order",
                             "offset", "limit"),
    "/api/v1/measurement_meta": ("measurement_uid", "report_id", "input", "full"),
    f"/api/v1/raw_measurement?report_id={RID}": ("measurement_uid", "input"),
    "/api/v1/aggregation?axis_x=measurement_start_day&since=2024-01-01&until=2024-01-02": (
        "axis_x", "axis_y", "since", "until", "time_grain", "category_code", "domain", "input",
        "probe_cc", "probe_asn", "test_name", "ooni_run_link_id", "format", "download"),
    "/api/v1/torsf_stats": ("probe_cc", "since", "until"),
    "/api/v1/aggregation/observations": (
        "group_by", "test_name", "hostname", "probe_cc", "probe_asn", "ip", "measurement_uid",
        "resolver_asn", "input", "category_code", "ooni_run_link_id", "since", "until",
        "time_grain"),
    "/api/v1/aggregation/observations/ctrl?hostname=twitter.com": ("hostname", "since",
                                                                   "until"),
    "/api/v1/aggregation/analysis": (
        "axis_x", "axis_y", "test_name", "domain", "input", "measurement_uid", "probe_cc",
        "probe_asn", "category_code", "ooni_run_link_id", "since", "until", "time_grain",
        "anomaly_sensitivity", "format", "download"),
    "/api/_/check_report_id": ("report_id",),
    "/api/_/country_overview": ("probe_cc",),
    "/api/_/domain_metadata": ("domain",),
    "/api/_/asnmeta": ("asn",),
    "/api/_/test_coverage?probe_cc=IT": ("probe_cc", "test_groups"),
    "/api/_/website_networks": ("probe_cc",),
    "/api/_/website_stats?probe_cc=IT&probe_asn=AS12874&input=https://www.example.com/": (
        "probe_cc", "probe_asn", "input"),
    "/api/_/website_urls?probe_cc=IT&probe_asn=AS12874": ("probe_cc", "probe_asn", "limit",
                                                          "offset"),
    "/api/_/vanilla_tor_stats": ("probe_cc",),
    "/api/_/im_networks": ("probe_cc",),
    "/api/_/im_stats?test_name=signal&probe_cc=IT&probe_asn=AS12874": ("test_name", "probe_cc",
                                                                       "probe_asn"),
    "/api/_/network_stats": ("probe_cc",),
    "/api/v1/user_login": ("k",),
    "/api/v1/incidents/search": ("country_code", "theme", "only_mine"),
    "/api/_/ooni_run/list": ("include_archived", "only_mine", "only_latest",
                             "ooni_run_link_id"),
    "/api/v2/oonirun/links": ("is_mine", "is_expired"),
}
NO_PARAMS = ("/api/_/asn_by_month", "/api/_/countries_by_month", "/api/_/test_names",
             "/api/_/countries", "/api/_/global_overview", "/api/_/global_overview_by_month",
             "/api/_/networks", "/api/_/domains", "/api/_/circumvention_stats_by_country",
             "/api/_/circumvention_runtime_stats", "/api/_/account_metadata",
             "/api/v1/user_refresh_token", "/api/_/url-priorities/list")
PATH_ROUTES = ("/api/v1/measurement/{}", "/api/_/measurement_feedback/{}",
               "/measurement_spool/{}/x.post", "/measurement_spool/2024010100/{}.post",
               "/api/v1/get_account_role/{}", "/api/v1/incidents/show/{}",
               "/api/_/ooni_run/fetch/{}", "/api/v2/oonirun/links/{}",
               "/api/v2/oonirun/links/{}/revisions",
               "/api/v2/oonirun/links/{}/full-descriptor/latest",
               "/api/v2/oonirun/links/1/full-descriptor/{}")


def _with(route: str, extra: str) -> str:
    return route + ("&" if "?" in route else "?") + extra


@pytest.mark.parametrize("route", list(GET_PARAMS))
def test_sweep_query_parameters(read_backend: Backend, route: str) -> None:
    cases = [("GET", route, None, None)]
    for name in GET_PARAMS[route]:
        cases += [("GET", _with(route, f"{name}={v}"), None, None) for v in NASTY]
        cases += [("GET", _with(route, q), None, None)
                  for q in (f"{name}=IT&{name}=DE", name, f"{name}=&{name}=", f"{name}[]=x",
                            f"{name}=1&{name}=undefined")]
    cases.append(("GET", _with(route, "%ff%fe=%ff&%00=%00"), None, None))
    check_all(read_backend, cases)


def test_sweep_routes_without_parameters(read_backend: Backend) -> None:
    check_all(read_backend, [("GET", _with(r, q), None, None) for r in NO_PARAMS
                             for q in ("x=%00", "%ff=%fe", "limit=-1&limit=" + "9" * 40)])


@pytest.mark.parametrize("route", PATH_ROUTES)
def test_sweep_path_parameters(read_backend: Backend, route: str) -> None:
    values = [v for v in NASTY if v] + [
        "..", "%252e%252e%252f", "a@b.co%00", "%E2%80%8B@x.com", "1" * 25,
        "18446744073709551615", UID, "latest"]
    check_all(read_backend, [("GET", route.format(v), None, None) for v in values])


BAD_BODIES = [None, b"", b" ", b"null", b"[]", b'"str"', b"1", b"true", b"{}", b"{",
              b"\xff\xfe", b"\x00", b'{"a": "\\u0000"}', b'"\\ud800"', DEEP, DEEP_OBJECT,
              b"1e999", b"[" + b"1," * 50_000 + b"1]",
              b"email_address=a%40b.co&redirect_to=https%3A%2F%2Fexplorer.ooni.org%2F"]
CONTENT_TYPES = (None, "application/json", "application/x-www-form-urlencoded", "text/plain",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1")
WRITE_ROUTES = {
    "/api/_/measurement_feedback": {"measurement_uid": UID, "status": "ok"},
    "/api/v1/user_register": {"email_address": "a@b.co",
                              "redirect_to": "https://explorer.ooni.org/"},
    "/api/v1/set_account_role": {"email_address": "a@b.co", "role": "user"},
    "/api/v1/set_session_expunge": {"email_address": "a@b.co"},
    "/api/v1/incidents/create": FINDING,
    "/api/v1/incidents/update": {**FINDING, "id": "{finding}"},
    "/api/v1/incidents/delete": {"id": "1"},
    "/api/v1/incidents/publish": {"id": "1"},
    "/api/_/url-priorities/update": {"new_entry": RULE},
    "/api/_/ooni_run/create": RUN,
    "/api/_/ooni_run/archive/1": {},
    "/api/v2/oonirun/links": RUN,
    "/api/v2/oonirun/links/{link}": RUN,  # PUT
    "/api/v2/oonirun/links/{link}/engine-descriptor/latest": {
        "run_type": "timed", "is_charging": False, "probe_cc": "IT", "probe_asn": "AS1",
        "network_type": "wifi", "website_category_codes": ["NEWS"]},
}
# Values put in place of each key of a valid body (wrong types, hostile text).
BAD_VALUES = [None, True, -1, 1.5, 10**30, "", "\x00\u202e😀", "a" * 3000, [None],
              {"a": {"b": []}}, "../../etc/passwd", OVERFLOW, ["IT"] * 400]
ADMIN_ROUTES = ("/api/v1/set_account_role", "/api/v1/set_session_expunge",
                "/api/_/url-priorities/update")
# Edits validated by the same model as their create (whose variants are swept): each valid
# variant would be one more write, for nothing new.
SAME_MODEL_AS_CREATE = ("/api/v1/incidents/update", "/api/v2/oonirun/links/{link}")


def _method(path: str) -> str:
    return "PUT" if path == "/api/v2/oonirun/links/{link}" else "POST"


def _variants(valid: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`valid` with each top-level key (and each key of a nested object, or of the first
    object of a list) replaced by each bad value, or dropped; and with an unknown key."""
    for k, v in valid.items():
        for bad in BAD_VALUES:
            yield {**valid, k: bad}
        yield {kk: vv for kk, vv in valid.items() if kk != k}
        if isinstance(v, dict):
            for sub in _variants(v):
                yield {**valid, k: sub}
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for sub in _variants(v[0]):
                yield {**valid, k: [sub]}
    yield {**valid, "unknown_key": 1}


@pytest.mark.parametrize("path", list(WRITE_ROUTES))
def test_sweep_bodies(api: Backend, made: dict[str, str], path: str) -> None:
    target = path.format(**made)
    method = _method(path)
    cases: list[tuple] = []
    for who in (None, "user", "admin"):
        for body in BAD_BODIES:
            types = CONTENT_TYPES if body in (None, b"", b"{}", b"\xff\xfe") else \
                ("application/json",)
            cases += [(method, target, body, None, who, {"Content-Type": t}) for t in types]
    if path not in SAME_MODEL_AS_CREATE:
        who = "admin" if path in ADMIN_ROUTES else "user"
        cases += [(method, target, v, None, who) for v in _variants(WRITE_ROUTES[path])]
    check_all(api, fill(cases, made))
