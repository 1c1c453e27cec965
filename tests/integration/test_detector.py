"""`oonibackend detect` as a real subprocess on the embedded database, then the feed served by
the real API (`oonibackend run`) on the same data directory.

Fastpath rows with known blocking onsets are generated relative to now and loaded with
`oonibackend db exec`; the expected events are also computed with the pure detector on the
same counts. The job is SIGKILLed mid-run twice, then run to the end: the events must be
exactly the expected ones, with no duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from oonibackend.config import Config
from oonibackend.fileutil import release_flock, try_flock
from oonibackend.jobs.detector import changepoint, job, series
from tests.conftest import Backend

OONIBACKEND = [sys.executable, "-m", "oonibackend"]
A = "{http://www.w3.org/2005/Atom}"
PER_HOUR = 8
HOURS = 36
HOSTILE = 'https://evil.example/?q=<b>&x="y"'
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)
BASE = series.floor_time(NOW, 3600) - dt.timedelta(hours=40)


def at(h: int) -> dt.datetime:
    return BASE + dt.timedelta(hours=h)


def blocked_between(start: int, end: int = HOURS):
    return lambda h: start <= h < end


# (test_name, input, probe_cc, probe_asn, is_blocked(hour), every n-th measurement anomalous
# when not blocked (0: never)).
SERIES = [
    ("web_connectivity", "https://twitter.com/", "IT", 30722, blocked_between(20), 0),
    ("web_connectivity", "https://example.org/", "IT", 30722, blocked_between(99), 10),
    ("telegram", "", "IR", 44244, blocked_between(10, 24), 0),
    ("web_connectivity", HOSTILE, "IT", 30722, blocked_between(15), 0),
    ("dash", "", "IT", 30722, blocked_between(5), 0),  # not a detector test
    ("web_connectivity", "https://twitter.com/", "ZZ", 0, blocked_between(5), 0),  # unknown
]
EXPECTED = [  # (test_name, input, probe_cc, probe_asn, status, time)
    ("telegram", "", "IR", 44244, "BLOCKED", at(10)),
    ("telegram", "", "IR", 44244, "OK", at(24)),
    ("web_connectivity", "https://twitter.com/", "IT", 30722, "BLOCKED", at(20)),
    ("web_connectivity", HOSTILE, "IT", 30722, "BLOCKED", at(15)),
]


def _sql_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def generate() -> tuple[str, dict[series.SeriesKey, list[changepoint.Bucket]]]:
    """The INSERT of every fastpath row, and the counts the detector should see."""
    values, counts = [], {}
    n = 0
    for test_name, input_, cc, asn, blocked, noise in SERIES:
        buckets = []
        for h in range(HOURS):
            conf = anom = ok = 0
            for k in range(PER_HOUR):
                n += 1
                t = at(h) + dt.timedelta(minutes=7 * k, seconds=n % 60)
                is_conf = blocked(h) and k % 2 == 0
                is_anom = blocked(h) or (noise and n % noise == 0)
                conf += is_conf
                anom += bool(is_anom and not is_conf)
                ok += not is_anom
                ts = t.strftime("%Y-%m-%d %H:%M:%S")
                uid = f"{t:%Y%m%d%H%M%S}.{n:06d}_{cc}_{test_name}_x"
                values.append(
                    f"({_sql_str(uid)}, 'r{n:08d}', {_sql_str(input_)}, '{cc}', {asn}, "
                    f"'{test_name}', '{ts}', '{ts}', '{'t' if is_anom else 'f'}', "
                    f"'{'t' if is_conf else 'f'}', 'f')")
            buckets.append(changepoint.Bucket(at(h), conf, anom, ok, 0))
        counts[(test_name, input_, cc, asn)] = buckets
    sql = ("INSERT INTO fastpath (measurement_uid, report_id, input, probe_cc, probe_asn, "
           "test_name, test_start_time, measurement_start_time, anomaly, confirmed, "
           "msm_failure) VALUES\n" + ",\n".join(values) + ";\n")
    return sql, counts


def cli(b: Backend, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OONIBACKEND, *args, "--config", str(b.config),
                           "--data-dir", str(b.data_dir)],
                          capture_output=True, text=True, timeout=timeout)


def db_query(b: Backend, sql: str) -> list[dict]:
    f = b.data_dir / "query.sql"
    f.write_text(sql)
    r = cli(b, "db", "exec", str(f))
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def events_in_db(b: Backend) -> list[tuple]:
    rows = db_query(b, "SELECT test_name, input, probe_cc, probe_asn, status, time "
                       "FROM blocking_events FINAL "
                       "ORDER BY test_name, probe_cc, input, time")
    return [(r["test_name"], r["input"], r["probe_cc"], r["probe_asn"], r["status"],
             r["time"]) for r in rows]


def expected_rows() -> list[tuple]:
    return sorted([(t, i, cc, asn, s, iso(time)) for t, i, cc, asn, s, time in EXPECTED],
                  key=lambda r: (r[0], r[2], r[1], r[5]))


def detect_until_killed(b: Backend, batches: int) -> None:
    """Start `detect` and SIGKILL it once it printed `batches` batch lines."""
    proc = subprocess.Popen([*OONIBACKEND, "detect", "--config", str(b.config), "--data-dir",
                             str(b.data_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    seen = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen += line.startswith("batch ")
            if seen >= batches:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert seen >= batches, "the job ended before it could be killed"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The backend's config and data dir, with the fastpath rows loaded (not started)."""
    b = Backend(tmp_path_factory.mktemp("detector"), {
        "fastpath": {"enabled": False},
        "quotas": {"enabled": False},
        "server": {"base_url": "https://api.example.org/"},
        # One bucket per batch: many points where the job can be killed.
        "detector": {"window_hours": 72, "batch_buckets": 1},
    })
    r = cli(b, "db", "migrate")
    assert r.returncode == 0, r.stderr
    sql, _ = generate()
    (b.data_dir / "rows.sql").write_text(sql)
    r = cli(b, "db", "exec", str(b.data_dir / "rows.sql"))
    assert r.returncode == 0, r.stderr
    yield b
    b.stop()


def test_expected_events_follow_from_the_pure_detector():
    _, counts = generate()
    params = job.params_of(Config().detector)
    got = []
    for key, buckets in counts.items():
        if key[0] == "dash" or key[2] == "ZZ":
            continue
        _, changes = changepoint.run_series(changepoint.State(), buckets, params)
        got += [(*key, c.status, c.time) for c in changes]
    assert sorted(got) == sorted(EXPECTED)


def test_dry_run_prints_events_and_writes_nothing(backend):
    r = cli(backend, "detect", "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.startswith("event ")]
    assert len(lines) == len(EXPECTED)
    assert any(f"event {iso(at(20))} web_connectivity IT AS30722 https://twitter.com/ "
               "OK -> BLOCKED" in x for x in lines)
    assert "(dry run)" in r.stdout
    rows = db_query(backend, "SELECT (SELECT count() FROM blocking_status) AS s, "
                             "(SELECT count() FROM blocking_events) AS e, "
                             "(SELECT count() FROM detector_state) AS w")
    assert rows == [{"s": 0, "e": 0, "w": 0}]
    assert not (backend.data_dir / "metrics" / "detect.prom").exists()


def test_a_second_run_waits_for_the_lock(backend):
    fd = try_flock(backend.data_dir / "detect.lock")
    assert fd is not None
    try:
        r = cli(backend, "detect")
    finally:
        release_flock(fd)
    assert r.returncode == 3 and "another detect run" in r.stderr


@pytest.fixture(scope="module")
def detected(backend) -> Backend:
    """Two runs SIGKILLed mid-way, then one to the end."""
    detect_until_killed(backend, 1)
    detect_until_killed(backend, 30)
    r = cli(backend, "detect")
    assert r.returncode == 0, r.stderr
    assert "done:" in r.stdout
    return backend


def test_killed_runs_resume_to_exactly_the_expected_events(detected):
    assert events_in_db(detected) == expected_rows()
    # The rows actually stored may repeat an event rewritten by a resumed run, but always
    # under the same key (so FINAL, and merges, keep one).
    raw = db_query(detected, "SELECT count() AS n, uniqExact(test_name, input, probe_cc, "
                             "probe_asn, time) AS keys FROM blocking_events")
    assert raw[0]["keys"] == len(EXPECTED) and raw[0]["n"] >= len(EXPECTED)


def test_series_states(detected):
    rows = db_query(detected, "SELECT test_name, input, probe_cc, probe_asn, status, "
                              "old_status, cnt, last_time, stability, accessible_perc "
                              "FROM blocking_status FINAL")
    by_key = {(r["test_name"], r["input"], r["probe_cc"], r["probe_asn"]): r for r in rows}
    assert set(by_key) == {("web_connectivity", "https://twitter.com/", "IT", 30722),
                           ("web_connectivity", "https://example.org/", "IT", 30722),
                           ("telegram", "", "IR", 44244),
                           ("web_connectivity", HOSTILE, "IT", 30722)}
    twitter = by_key[("web_connectivity", "https://twitter.com/", "IT", 30722)]
    assert (twitter["status"], twitter["old_status"]) == ("BLOCKED", "OK")
    assert twitter["cnt"] == HOURS * PER_HOUR
    assert twitter["last_time"] == iso(at(HOURS - 1))
    example = by_key[("web_connectivity", "https://example.org/", "IT", 30722)]
    assert (example["status"], example["old_status"]) == ("OK", "UNKNOWN")
    assert example["accessible_perc"] > 0.8
    telegram = by_key[("telegram", "", "IR", 44244)]
    assert (telegram["status"], telegram["old_status"]) == ("OK", "BLOCKED")


def test_metrics_and_an_idle_rerun(detected):
    prom = (detected.data_dir / "metrics" / "detect.prom").read_text()
    assert "oonibackend_detect_last_run_success 1" in prom
    for name in ("series", "events", "rows", "seconds"):
        assert f"oonibackend_detect_last_run_{name} " in prom
    r = cli(detected, "detect")
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stdout or ", 0 events" in r.stdout.splitlines()[-1]
    assert events_in_db(detected) == expected_rows()


@pytest.fixture(scope="module")
def api(detected) -> Backend:
    return detected.start()


def get(b: Backend, query: str = "", headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"{b.url}/api/v1/detector/events{query}",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def feed_events(b: Backend, query: str = "") -> list[dict]:
    status, headers, body = get(b, query)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["v"] == 0
    return doc["events"]


def test_feed_json(api):
    status, headers, body = get(api)
    assert status == 200 and headers["Cache-Control"] == "max-age=60"
    events = json.loads(body)["events"]
    assert [(e["status"], e["time"]) for e in events] == [  # newest change point first
        ("OK", iso(at(24))), ("BLOCKED", iso(at(20))), ("BLOCKED", iso(at(15))),
        ("BLOCKED", iso(at(10)))]
    first = events[0]
    assert set(first) == {"test_name", "input", "probe_cc", "probe_asn", "status", "time",
                          "detection_time"}
    assert (first["test_name"], first["input"], first["probe_cc"], first["probe_asn"]) == (
        "telegram", "", "IR", 44244)
    assert first["detection_time"].endswith("Z")


@pytest.mark.parametrize("query, expected", [
    ("?probe_cc=IR", [("IR", "OK"), ("IR", "BLOCKED")]),
    ("?probe_asn=AS44244", [("IR", "OK"), ("IR", "BLOCKED")]),
    ("?probe_asn=30722&status=blocked", [("IT", "BLOCKED"), ("IT", "BLOCKED")]),
    ("?test_name=telegram&status=OK", [("IR", "OK")]),
    ("?domain=twitter.com", [("IT", "BLOCKED")]),
    ("?domain=EVIL.example", [("IT", "BLOCKED")]),
    ("?input=https://twitter.com/", [("IT", "BLOCKED")]),
    ("?probe_cc=DE", []),
    ("?limit=1", [("IR", "OK")]),
])
def test_feed_filters(api, query, expected):
    assert [(e["probe_cc"], e["status"]) for e in feed_events(api, query)] == expected


def test_feed_time_range(api):
    since = urllib.parse.quote(iso(at(15)))
    until = urllib.parse.quote(at(24).isoformat())
    got = feed_events(api, f"?since={since}&until={until}")
    assert [e["time"] for e in got] == [iso(at(20)), iso(at(15))]


def test_feed_atom(api):
    for query, headers in (("?format=atom&probe_cc=IT", {}),
                           ("?probe_cc=IT", {"Accept": "application/atom+xml"})):
        status, h, body = get(api, query, headers)
        assert status == 200, body
        assert h["Content-Type"].startswith("application/atom+xml")
        assert h["Cache-Control"] == "max-age=60"
        root = ET.fromstring(body)
        assert root.tag == A + "feed"
        assert root.findtext(A + "id").startswith(
            "https://api.example.org/api/v1/detector/events?")
        entries = root.findall(A + "entry")
        titles = [e.findtext(A + "title") for e in entries]
        assert titles == ["BLOCKED: twitter.com in IT AS30722",
                          "BLOCKED: evil.example in IT AS30722"]
        hostile = entries[1]
        assert HOSTILE in hostile.findtext(A + "content")
        assert hostile.findtext(A + "id").startswith(
            "tag:api.example.org,2025:blocking-event/web_connectivity/IT/AS30722/")
        assert root.findtext(A + "updated") == max(e.findtext(A + "updated") for e in entries)
    # JSON stays the default, and an explicit format wins over Accept.
    assert feed_events(api, "?format=json&limit=1")
    status, h, _ = get(api, "?format=json", {"Accept": "application/atom+xml"})
    assert status == 200 and h["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("query", [
    "?probe_cc=ITA", "?probe_asn=ASfoo", "?limit=5000", "?limit=0", "?format=rss",
    "?since=yesterday", "?status=GONE", "?domain=%3Cscript%3E",
    "?since=2024-02-01&until=2024-01-01", "?test_name=DROP%20TABLE",
])
def test_feed_bad_parameters(api, query):
    status, headers, body = get(api, query)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]
