"""Dataset versions: a running API picks up `update-citizenlab` and URL-priority edits within
about a second (it polls `dataset_versions`), long before its periodic refresh (an hour here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Backend
from tests.integration.test_citizenlab_import import make_lists
from tests.integration.test_url_priorities import SECRET, call  # admin calls, one secret
from tests.unit.test_fingerprints_update import write_dir

PICKUP_LIMIT = 3.0  # seconds from the end of the import to URLs in check-in
CHECKIN = {"probe_cc": "IT", "probe_asn": "AS12874", "run_type": "manual",
           "software_name": "ooniprobe-cli", "software_version": "3.20.0",
           "platform": "linux", "on_wifi": True, "charging": True}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(tmp_path_factory.mktemp("versions") / "data", {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET, "test_list_refresh": 3600.0, "version_poll": 1.0},
    })
    b.start()
    yield b
    b.stop()


def checkin_urls(api: Backend) -> list[dict[str, str]]:
    status, body = call(api, "POST", "/api/v1/check-in", CHECKIN, role=None)
    assert status == 200, body
    return body["tests"]["web_connectivity"]["urls"]


def applied_rules(api: Backend) -> list[dict[str, Any]]:
    status, body = call(api, "GET", "/api/_/debug_prioritization?probe_cc=IT&probe_asn=AS12874",
                        role=None)
    assert status == 200, body
    return body["prio_rules"]


def seconds_until(predicate: Callable[[], Any], limit: float) -> float:
    """Poll `predicate` every 50 ms; the seconds it took to become true (fails after `limit`
    plus a margin, so a slow pickup is reported with its duration)."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > limit + 10:
            raise AssertionError(f"not picked up within {limit + 10:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def cli(api: Backend, *args: str) -> subprocess.CompletedProcess[str]:
    """A command against the running backend (jobs reach its database owner)."""
    return subprocess.run(
        [sys.executable, "-m", "oonibackend", *args, "--config", str(api.config),
         "--data-dir", str(api.data_dir)],
        capture_output=True, text=True, timeout=300)


def update_citizenlab(api: Backend, source) -> subprocess.CompletedProcess[str]:
    return cli(api, "update-citizenlab", "--source", str(source))


def dataset_versions(api: Backend, tmp_path) -> dict[str, int]:
    f = tmp_path / "versions.sql"
    f.write_text("SELECT name, toString(max(version)) AS v FROM dataset_versions GROUP BY name")
    r = cli(api, "db", "exec", str(f))
    assert r.returncode == 0, r.stderr
    return {row["name"]: int(row["v"]) for row in map(json.loads, r.stdout.splitlines())}


def test_checkin_sees_imports_within_a_second(api, tmp_path):
    # Fresh database: no lists, no rules, so no URLs.
    assert checkin_urls(api) == []

    # A URL-priority edit reaches check-in's snapshot without waiting for the hourly refresh.
    status, body = call(api, "POST", "/api/_/url-priorities/update",
                        {"new_entry": {"priority": 100}})
    assert status == 200, body
    took = seconds_until(lambda: applied_rules(api), PICKUP_LIMIT)
    print(f"url_priorities edit picked up by check-in in {took:.2f} s")
    assert took < PICKUP_LIMIT
    assert checkin_urls(api) == []  # rules alone: still nothing to test

    r = update_citizenlab(api, make_lists(tmp_path / "lists"))
    assert r.returncode == 0, r.stderr
    took = seconds_until(lambda: checkin_urls(api), PICKUP_LIMIT)
    print(f"update-citizenlab picked up by check-in {took:.2f} s after the command exited")
    assert took < PICKUP_LIMIT
    urls = {u["url"] for u in checkin_urls(api)}
    assert "https://www.repubblica.it/" in urls  # the IT list
    assert "https://twitter.com/" in urls  # the global list
    assert "http://www.aporrea.org/" not in urls  # VE only

    # A second import (Italy's list changed) is picked up just as fast.
    repo = make_lists(tmp_path / "lists2")
    with open(repo / "lists" / "it.csv", "a") as f:
        f.write("https://www.corriere.it/,NEWS,News,2014-04-15,,\n")
    r = update_citizenlab(api, repo)
    assert r.returncode == 0, r.stderr
    took = seconds_until(
        lambda: "https://www.corriere.it/" in {u["url"] for u in checkin_urls(api)},
        PICKUP_LIMIT)
    print(f"second update-citizenlab picked up in {took:.2f} s")
    assert took < PICKUP_LIMIT


def test_every_import_bumps_its_dataset_version(api, tmp_path):
    before = dataset_versions(api, tmp_path)
    r = cli(api, "update-fingerprints", "--source", str(write_dir(tmp_path / "fp")))
    assert r.returncode == 0, r.stderr
    doc = tmp_path / "as-org-map.json"
    doc.write_text(json.dumps({str(a): [[f"Org {a}", "IT", "2019-01-01", f"AUT-{a}", "RIPE"]]
                               for a in range(1, 20)}))
    r = cli(api, "update-asnmeta", "--source", str(doc))
    assert r.returncode == 0, r.stderr
    after = dataset_versions(api, tmp_path)
    for name in ("fingerprints", "asnmeta"):
        assert after[name] > before.get(name, 0)
        assert after[name] > time.time_ns() - 600 * 10**9  # nanoseconds of the import time
    # Refused import: nothing swapped, no new version.
    r = cli(api, "update-fingerprints", "--source", str(tmp_path / "missing"))
    assert r.returncode == 1
    assert dataset_versions(api, tmp_path)["fingerprints"] == after["fingerprints"]
