"""The rotation's decisions (pure): counts, ages, draining, adoption, names, validation."""

import dataclasses
import datetime as dt

import pytest

from oonibackend.config import RotationConfig
from oonibackend.jobs.rotation.journal import Pending
from oonibackend.jobs.rotation.provider import Droplet
from oonibackend.jobs.rotation.readiness import CheckTarget, verdict
from oonibackend.jobs.rotation.rotate import (
    Policy,
    allocate_rdn,
    droplet_name,
    make_plan,
    name_time,
    validate,
)
from oonibackend.jobs.rotation.state import Instance
from oonibackend.routes.test_helpers import live_addresses, make_test_helpers

NOW = dt.datetime(2025, 3, 10, 12, 0, 0)
ZONE = "th.example.org"
POLICY = Policy(count=2, max_age=dt.timedelta(days=7), drain=dt.timedelta(hours=24),
                provider="digitalocean", dns_zone=ZONE, name_prefix="oonith")


def host(rdn: str, days_old: float, draining_hours: float | None = None,
         zone: str = ZONE) -> tuple[Instance, Droplet]:
    created = NOW - dt.timedelta(days=days_old)
    name = droplet_name("oonith", rdn, created)
    inst = Instance(rdn=rdn, dns_zone=zone, name=name, provider="digitalocean",
                    region="ams3", ipaddr=f"10.0.0.{rdn}", ipv6addr="::",
                    draining_at=None if draining_hours is None
                    else NOW - dt.timedelta(hours=draining_hours))
    d = Droplet(id=f"id{rdn}" + ("" if zone == ZONE else zone), name=name, status="active", created_at=created,
                ipv4=f"10.0.0.{rdn}", region="ams3")
    return inst, d


def plan_of(hosts, pending=None, policy=POLICY, extra_droplets=(), dns_names=()):
    rows = [i for i, _ in hosts]
    droplets = [d for _, d in hosts if d is not None] + list(extra_droplets)
    return make_plan(policy, NOW, rows, droplets, pending, set(dns_names))


def test_empty_fleet_creates_count_hosts_with_fresh_numbers():
    p = plan_of([], dns_names={"@", "0", "www"})
    assert [(c.rdn, c.name, c.adopt) for c in p.create] == [
        ("1", "oonith-1-20250310120000", None), ("2", "oonith-2-20250310120000", None)]
    assert p.drains(2) == [] and not p.destroy and not p.forget


def test_full_young_fleet_does_nothing():
    p = plan_of([host("0", 1), host("1", 3)])
    assert not p.create and p.drains(0) == [] and not p.destroy
    assert p.describe()[-1] == "nothing to do"


def test_below_count_creates_only_the_missing_host():
    p = plan_of([host("0", 10)])  # aged, but the missing host comes first
    assert len(p.create) == 1 and p.create[0].rdn == "1"
    assert p.drains(1) == []  # live + created == count: the aged host stays until next run


def test_aged_oldest_host_gets_one_replacement_then_drains():
    hosts = [host("0", 9), host("1", 8), host("2", 1)]
    p = plan_of(hosts, policy=dataclasses.replace(POLICY, count=3))
    assert len(p.create) == 1 and "replaces oonith-0-" in p.create[0].reason
    assert p.create[0].rdn == "3"
    assert [h.inst.rdn for h in p.drains(1)] == ["0"]  # the oldest only
    assert p.drains(0) == []  # a failed replacement drains nothing


def test_rdn_of_draining_rows_is_not_reused():
    p = plan_of([host("0", 1), host("1", 2, draining_hours=1)])
    assert [c.rdn for c in p.create] == ["2"]


def test_drained_long_enough_is_destroyed_others_wait():
    hosts = [host("0", 2), host("1", 1), host("2", 9, draining_hours=25),
             host("3", 8, draining_hours=3)]
    p = plan_of(hosts)
    assert [i.rdn for i, _ in p.destroy] == ["2"]
    assert p.destroy[0][1].id == "id2"
    assert {i.rdn for i in p.draining} == {"2", "3"}
    assert not p.create  # draining hosts do not count as live, but 2 are live


def test_row_without_droplet_is_forgotten_and_replaced():
    gone, _ = host("0", 1)
    p = plan_of([(gone, None), host("1", 1)])
    assert p.forget == [gone]
    assert [c.rdn for c in p.create] == ["2"]


def test_surplus_is_drained_oldest_first_without_creating():
    p = plan_of([host("0", 2), host("1", 5), host("2", 1)])
    assert not p.create
    assert [h.inst.rdn for h in p.drains(0)] == ["1"]


def test_pending_droplet_is_adopted_not_created_again():
    pending_d = Droplet(id="idp", name="oonith-5-20250310115900", status="new",
                        created_at=None)
    pending = Pending("oonith-5-20250310115900", "5", ZONE, NOW)
    p = plan_of([host("0", 1)], pending=pending, extra_droplets=[pending_d])
    assert len(p.create) == 1
    c = p.create[0]
    assert c.adopt == pending_d and c.rdn == "5" and c.name == pending.name
    assert not p.orphans and not p.clear_pending


def test_pending_droplet_adopted_even_when_full_surplus_drained():
    pending_d = Droplet(id="idp", name="oonith-5-20250310115900", status="active",
                        created_at=NOW, ipv4="10.0.0.5")
    pending = Pending(pending_d.name, "5", ZONE, NOW)
    p = plan_of([host("0", 9), host("1", 1)], pending=pending, extra_droplets=[pending_d])
    assert [c.adopt for c in p.create] == [pending_d]  # no extra creation besides
    assert [h.inst.rdn for h in p.drains(1)] == ["0"]


def test_pending_without_droplet_is_cleared_and_creation_proceeds():
    pending = Pending("oonith-5-20250310115900", "5", ZONE, NOW)
    p = plan_of([host("0", 1)], pending=pending)
    assert p.clear_pending
    assert [(c.rdn, c.adopt) for c in p.create] == [("1", None)]


def test_pending_already_recorded_is_cleared():
    h = host("0", 1)
    p = plan_of([h, host("1", 1)], pending=Pending(h[0].name, "0", ZONE, NOW))
    assert p.clear_pending and not p.create


def test_unknown_prefixed_droplets_are_orphans_others_ignored():
    stray = Droplet(id="x", name="oonith-9-20240101000000", status="active", created_at=NOW)
    other = Droplet(id="y", name="web-1", status="active", created_at=NOW)
    p = plan_of([host("0", 1), host("1", 1)], extra_droplets=[stray, other])
    assert p.orphans == [stray]
    assert any("orphan droplet oonith-9" in line for line in p.describe())


def test_rows_of_other_zones_are_left_alone():
    p = plan_of([host("0", 30, zone="other.example.org"), host("0", 1), host("1", 1)])
    assert not p.create and not p.forget and not p.orphans
    assert [h.inst.dns_zone for h in p.live] == [ZONE, ZONE]


def test_unknown_age_is_never_replaced():
    i, d = host("0", 30)
    undated = (dataclasses.replace(i, name="oonith-x"),
               dataclasses.replace(d, name="oonith-x", created_at=None))
    p = plan_of([undated, host("1", 1)])
    assert not p.create


def test_count_zero_drains_everything():
    p = plan_of([host("0", 1), host("1", 2)], policy=dataclasses.replace(POLICY, count=0))
    assert not p.create and len(p.drains(0)) == 2


def test_describe_lists_every_action():
    hosts = [host("0", 9), host("1", 1), host("2", 9, draining_hours=30)]
    text = "\n".join(plan_of(hosts).describe())
    assert "create oonith-3-20250310120000 as 3.th.example.org: replaces oonith-0-" in text
    assert "drain oonith-0-" in text and "destroy oonith-2-" in text


def test_names_and_numbers():
    assert allocate_rdn(set()) == "0"
    assert allocate_rdn({"0", "1", "3"}) == "2"
    assert name_time("oonith-3-20250310120000") == NOW
    assert name_time("oonith-3") is None and name_time("x-99999999999999") is None


def test_validate_rejects_unusable_settings():
    validate(RotationConfig())
    for bad in ({"provider": "aws"}, {"count": -1}, {"max_age_days": 0},
                {"dns_zone": "bad zone"}, {"dns_zone": "localhost"},
                {"check_scheme": "ftp"}, {"check_port": 0}, {"name_prefix": "a_b"},
                {"region": ""}, {"poll_interval": 0}, {"api_url": "ftp://x"}):
        with pytest.raises(ValueError):
            validate(dataclasses.replace(RotationConfig(), **bad))


def test_readiness_verdict():
    ok = b'{"http_request": {}, "tcp_connect": {}, "dns": {}}'
    assert verdict(200, ok) is None
    assert verdict(502, ok) == "HTTP 502"
    assert verdict(200, b"<html>") == "the answer is not JSON"
    assert verdict(200, b"[]") == "the answer is not a JSON object"
    assert verdict(200, b'{"dns": {}}') == "the answer lacks http_request, tcp_connect"
    t = CheckTarget("https", 443)
    assert t.url("1.2.3.4") == "https://1.2.3.4:443/" and t.host_header("a.b") == "a.b"
    assert CheckTarget("http", 8080).host_header("a.b") == "a.b:8080"
    assert CheckTarget("http", 80).url("::1") == "http://[::1]:80/"


def test_live_addresses_are_validated_and_served_before_the_legacy_pair():
    assert live_addresses([("1", "th.example.org"), ("0", "TH.example.org"),
                           ("0", "th.example.org"), ("bad/x", "th.example.org"),
                           ("2", "")]) == ("https://0.th.example.org", "https://1.th.example.org")
    live = ("https://0.th.example.org", "https://1.th.example.org")
    wc = make_test_helpers(live_helpers=live)["web-connectivity"]
    assert {w["address"] for w in wc[:2]} == set(live) and wc[2]["type"] == "cloudfront"
    assert all(w["type"] == "https" for w in wc[:2]) and len(wc) == 3
    # Configured canary helpers stay an explicit override.
    canary = make_test_helpers("1.2.3.44", ["https://c.example.org"], live_helpers=live)
    assert [w["address"] for w in canary["web-connectivity"][:-1]] == ["https://c.example.org"]
