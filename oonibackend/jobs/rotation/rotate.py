"""One rotation run: decide (pure `make_plan`), then do it (`Rotator`).

Decision, from the table rows, the provider's droplets and the creation journal:
* a row whose droplet is gone is forgotten (row and DNS records removed);
* a draining row drained for `drain_hours` is destroyed (droplet, DNS records, row);
* a droplet named in the journal but not recorded (a run died after asking for it) is
  adopted: it is checked and published like a new one, never created twice;
* fewer live hosts than `count`: create the missing ones; otherwise, when the oldest live
  host is older than `max_age_days`, create one replacement. So a run creates at most one
  host unless below `count`;
* once the new hosts are ready, the oldest live hosts beyond `count` are drained: marked
  draining (no longer served by the API) and their DNS records removed.

Doing: each creation is journaled before the create call, polled until active with an IPv4
address, checked end to end (readiness.py), published in DNS (A and AAAA), and only then
recorded. A failure destroys the droplet and removes its records, and ends the run (exit 1)
before any draining: a crash loop cannot multiply machines nor drain the working ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from oonibackend.jobs.rotation import journal, readiness, state
from oonibackend.jobs.rotation.journal import Pending
from oonibackend.jobs.rotation.provider import Droplet, DropletSpec, Provider, ProviderError
from oonibackend.jobs.rotation.state import Instance
from oonibackend.storage import Database
from oonibackend.validate import is_dns_name

if TYPE_CHECKING:
    from oonibackend.config import RotationConfig

log = logging.getLogger(__name__)

PROVIDERS = ("digitalocean",)
_NAME_TIME = re.compile(r"-(\d{14})$")

OpenDB = Callable[[], contextlib.AbstractAsyncContextManager[Database]]
Say = Callable[[str], None]


class RotationError(Exception):
    """The run failed; what was done so far is consistent (the next run carries on)."""


def validate(rc: RotationConfig) -> None:
    """Raise ValueError for a [rotation] setting the job cannot work with."""
    if rc.provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
    if not rc.api_url.startswith(("http://", "https://")):
        raise ValueError("api_url must be an http(s) URL")
    if rc.count < 0:
        raise ValueError("count must not be negative")
    if rc.max_age_days <= 0 or rc.drain_hours < 0:
        raise ValueError("max_age_days must be positive and drain_hours not negative")
    if not is_dns_name(rc.dns_zone, min_labels=2):
        raise ValueError(f"dns_zone is not a domain name: {rc.dns_zone!r}")
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?", rc.name_prefix):
        raise ValueError("name_prefix must be letters, digits and '-' (at most 32)")
    if rc.check_scheme not in ("http", "https"):
        raise ValueError("check_scheme must be http or https")
    if not 0 < rc.check_port < 65536:
        raise ValueError("check_port must be a TCP port")
    if rc.check_hostname and not is_dns_name(rc.check_hostname):
        raise ValueError("check_hostname is not a host name")
    if rc.check_timeout <= 0 or rc.ready_timeout <= 0 or rc.poll_interval <= 0:
        raise ValueError("check_timeout, ready_timeout and poll_interval must be positive")
    if not (rc.region and rc.size and rc.image):
        raise ValueError("region, size and image are required")
    if rc.dns_ttl < 30:
        raise ValueError("dns_ttl must be at least 30 seconds")


# ---- the decision (pure) ----

@dataclass(frozen=True)
class Policy:
    count: int
    max_age: dt.timedelta
    drain: dt.timedelta
    provider: str
    dns_zone: str
    name_prefix: str

    @classmethod
    def from_config(cls, rc: RotationConfig) -> Policy:
        return cls(count=rc.count, max_age=dt.timedelta(days=rc.max_age_days),
                   drain=dt.timedelta(hours=rc.drain_hours), provider=rc.provider,
                   dns_zone=rc.dns_zone, name_prefix=rc.name_prefix)


@dataclass(frozen=True)
class Host:
    """A live (non-draining) row and its droplet."""

    inst: Instance
    droplet: Droplet

    @property
    def created_at(self) -> dt.datetime | None:
        return self.droplet.created_at or name_time(self.droplet.name)

    def age(self, now: dt.datetime) -> dt.timedelta | None:
        c = self.created_at
        return None if c is None else now - c


@dataclass(frozen=True)
class Creation:
    name: str
    rdn: str
    dns_zone: str
    reason: str
    adopt: Droplet | None = None  # the droplet an interrupted run asked for


@dataclass
class Plan:
    now: dt.datetime
    count: int
    live: list[Host]  # oldest first
    draining: list[Instance]
    forget: list[Instance] = field(default_factory=list)
    destroy: list[tuple[Instance, Droplet]] = field(default_factory=list)
    create: list[Creation] = field(default_factory=list)
    orphans: list[Droplet] = field(default_factory=list)
    clear_pending: bool = False

    def drains(self, created: int) -> list[Host]:
        """The hosts to drain once `created` new ones are ready: the oldest beyond count."""
        return self.live[:max(0, len(self.live) + created - self.count)]

    def describe(self) -> list[str]:
        lines = [f"live: {len(self.live)} of {self.count}"
                 + "".join(f"\n  {h.inst.fqdn} {h.droplet.name} {_age(h.age(self.now))}"
                           for h in self.live)]
        for i in self.draining:
            lines.append(f"draining: {i.fqdn} {i.name} since {i.draining_at:%Y-%m-%dT%H:%MZ}")
        lines += [f"forget {i.fqdn} ({i.name}): its droplet is gone" for i in self.forget]
        lines += [f"destroy {i.name} ({i.fqdn}, draining since "
                  f"{i.draining_at:%Y-%m-%dT%H:%MZ})" for i, _ in self.destroy]
        for c in self.create:
            verb = "adopt" if c.adopt else "create"
            lines.append(f"{verb} {c.name} as {c.rdn}.{c.dns_zone}: {c.reason}")
        lines += [f"drain {h.inst.name} ({h.inst.fqdn}) once the new hosts are ready"
                  for h in self.drains(len(self.create))]
        lines += [f"orphan droplet {d.name} (id {d.id}): in no table row, left alone"
                  for d in self.orphans]
        if not (self.forget or self.destroy or self.create or self.drains(len(self.create))):
            lines.append("nothing to do")
        return lines


def _age(age: dt.timedelta | None) -> str:
    return "age unknown" if age is None else f"{age.total_seconds() / 86400:.1f} days old"


def name_time(name: str) -> dt.datetime | None:
    """The creation time in a droplet name made by `droplet_name`."""
    m = _NAME_TIME.search(name)
    if not m:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%d%H%M%S")
    except ValueError:
        return None


def droplet_name(prefix: str, rdn: str, now: dt.datetime) -> str:
    return f"{prefix}-{rdn}-{now:%Y%m%d%H%M%S}"


def allocate_rdn(used: set[str]) -> str:
    """The lowest number not already a name in the zone (rows of any state, DNS records)."""
    n = 0
    while str(n) in used:
        n += 1
    return str(n)


def make_plan(policy: Policy, now: dt.datetime, rows: Sequence[Instance],
              droplets: Sequence[Droplet], pending: Pending | None,
              dns_names: Collection[str] = ()) -> Plan:
    """What this run should do. `rows`: current table rows; `droplets`: every droplet of the
    account; `dns_names`: record names (relative) already in the zone."""
    managed = [r for r in rows if r.provider == policy.provider and r.dns_zone == policy.dns_zone]
    by_name: dict[str, list[Droplet]] = {}
    for d in droplets:
        by_name.setdefault(d.name, []).append(d)
    claimed: set[str] = set()  # droplet ids matched to a row or the journal

    def droplet_of(name: str) -> Droplet | None:
        for d in by_name.get(name, ()):
            if d.id not in claimed:
                claimed.add(d.id)
                return d
        return None

    for r in rows:  # hosts of other zones or providers: not ours to manage, not orphans
        if r not in managed:
            droplet_of(r.name)
    live: list[Host] = []
    draining: list[Instance] = []
    plan = Plan(now=now, count=policy.count, live=live, draining=draining)
    for r in managed:
        d = droplet_of(r.name)
        if d is None:
            plan.forget.append(r)
        elif r.draining:
            draining.append(r)
            if r.draining_at is not None and now - r.draining_at >= policy.drain:
                plan.destroy.append((r, d))
        else:
            live.append(Host(r, d))
    far_future = dt.datetime.max
    live.sort(key=lambda h: (h.created_at or far_future, h.inst.name))

    used = {r.rdn for r in rows if r.dns_zone == policy.dns_zone} | set(dns_names)
    adopting = 0
    if pending is not None:
        if any(r.name == pending.name for r in rows):
            plan.clear_pending = True  # recorded: the run died just before clearing it
        else:
            d = droplet_of(pending.name)
            if d is not None:
                plan.create.append(Creation(pending.name, pending.rdn, pending.dns_zone,
                                            "asked for by an interrupted run", adopt=d))
                used.add(pending.rdn)
                adopting = 1
            else:
                plan.clear_pending = True  # the create call never happened (or failed)

    deficit = policy.count - len(live) - adopting
    if deficit > 0:
        reasons = [f"{len(live) + adopting} live of {policy.count}"] * deficit
    elif not adopting and live and (age := live[0].age(now)) is not None \
            and age >= policy.max_age:
        reasons = [f"replaces {live[0].inst.name} ({_age(age)})"]
    else:
        reasons = []
    for reason in reasons:
        rdn = allocate_rdn(used)
        used.add(rdn)
        plan.create.append(Creation(droplet_name(policy.name_prefix, rdn, now), rdn,
                                    policy.dns_zone, reason))

    prefix = policy.name_prefix + "-"
    plan.orphans = [d for d in droplets if d.name.startswith(prefix) and d.id not in claimed]
    return plan


# ---- doing it ----

@dataclass
class Result:
    created: int = 0
    drained: int = 0
    destroyed: int = 0
    forgotten: int = 0
    live: int = 0
    orphans: int = 0


class Rotator:
    """Carries out a plan against a provider, the table (opened per step, so that an
    embedded database is not held while waiting for machines) and the journal."""

    def __init__(self, rc: RotationConfig, provider: Provider, open_db: OpenDB,
                 journal_path: Path, *, now: dt.datetime, say: Say,
                 user_data: str = "") -> None:
        self.rc = rc
        self.provider = provider
        self.open_db = open_db
        self.journal_path = journal_path
        self.now = now
        self.say = say
        self.user_data = user_data
        self.policy = Policy.from_config(rc)
        self.target = readiness.CheckTarget(rc.check_scheme, rc.check_port, rc.check_ca_file,
                                            rc.check_timeout)
        # What `apply` did so far (also after a failure, for the metrics).
        self.result: Result | None = None

    async def plan(self, *, dry_run: bool = False) -> Plan:
        from oonibackend.storage.migrate import migrate

        self.say("reading test_helper_instances")
        async with self.open_db() as db:
            if not dry_run:
                await migrate(db)  # a fresh data directory has no tables yet
                rows = await state.read_instances(db)
            else:
                rows = await state.read_instances(db) if await _has_table(db) else []
        pending = journal.read(self.journal_path)
        self.say(f"listing droplets and {self.rc.dns_zone} records at {self.rc.provider}")
        droplets = await self.provider.list_droplets()
        records = await self.provider.list_records(self.rc.dns_zone)
        plan = make_plan(self.policy, self.now, rows, droplets, pending,
                         {r.name for r in records})
        if pending is not None and plan.clear_pending:
            self.say(f"journal: {pending.name} " + (
                "already recorded" if any(r.name == pending.name for r in rows)
                else "was never created"))
        return plan

    async def apply(self, plan: Plan) -> Result:
        res = self.result = Result(live=len(plan.live), orphans=len(plan.orphans))
        if plan.clear_pending:
            journal.clear(self.journal_path)
        for d in plan.orphans:
            log.warning("orphan droplet", extra={"droplet": d.name, "id": d.id})
        for inst in plan.forget:
            self.say(f"forgetting {inst.fqdn} ({inst.name}): its droplet is gone")
            await self._unpublish(inst)
            async with self.open_db() as db:
                await state.remove(db, [inst])
            res.forgotten += 1
        for inst, droplet in plan.destroy:
            self.say(f"destroying {inst.name} (id {droplet.id}), draining since "
                     f"{inst.draining_at:%Y-%m-%dT%H:%MZ}")
            await self._unpublish(inst)
            await self.provider.destroy_droplet(droplet.id)
            async with self.open_db() as db:
                await state.remove(db, [inst])
            res.destroyed += 1
        for c in plan.create:
            await self._create(c)
            res.created += 1
            res.live += 1
        for h in plan.drains(res.created):
            self.say(f"draining {h.inst.name} ({h.inst.fqdn})")
            async with self.open_db() as db:
                await state.mark_draining(db, h.inst, self.now)
            await self._unpublish(h.inst)
            res.drained += 1
            res.live -= 1
        return res

    async def _unpublish(self, inst: Instance) -> None:
        n = await self.provider.delete_records(inst.dns_zone, inst.rdn,
                                               [inst.ipaddr, inst.ipv6addr])
        if n:
            self.say(f"  deleted {n} DNS record(s) of {inst.fqdn}")

    async def _create(self, c: Creation) -> None:
        fqdn = f"{c.rdn}.{c.dns_zone}"
        t0 = time.monotonic()
        if c.adopt is None:
            journal.write(self.journal_path, Pending(c.name, c.rdn, c.dns_zone, self.now))
            self.say(f"creating droplet {c.name} ({self.rc.region}, {self.rc.size}, "
                     f"{self.rc.image}) for {fqdn}")
            try:
                droplet = await self.provider.create_droplet(self._spec(c.name))
            except ProviderError as e:
                self.say(f"create failed: {e}")
                await self._cleanup_named(c.name)
                raise RotationError(f"creating {c.name} failed: {e}") from e
        else:
            droplet = c.adopt
            self.say(f"adopting droplet {c.name} (id {droplet.id}) for {fqdn}")
        try:
            droplet = await self._wait_active(droplet, t0)
            await self._wait_ready(droplet, fqdn, t0)
            self.say(f"publishing {fqdn}: A {droplet.ipv4}"
                     + (f", AAAA {droplet.ipv6}" if droplet.ipv6 else ""))
            await self.provider.upsert_record(c.dns_zone, "A", c.rdn, droplet.ipv4,
                                              self.rc.dns_ttl)
            if droplet.ipv6:
                await self.provider.upsert_record(c.dns_zone, "AAAA", c.rdn, droplet.ipv6,
                                                  self.rc.dns_ttl)
            inst = Instance(rdn=c.rdn, dns_zone=c.dns_zone, name=droplet.name,
                            provider=self.provider.name, region=droplet.region or self.rc.region,
                            ipaddr=droplet.ipv4, ipv6addr=droplet.ipv6 or "::")
            async with self.open_db() as db:
                await state.add(db, inst)
        except Exception as e:
            self.say(f"{c.name} failed: {e}; destroying it")
            with contextlib.suppress(ProviderError):
                await self.provider.delete_records(c.dns_zone, c.rdn,
                                                   [droplet.ipv4, droplet.ipv6])
            try:
                await self.provider.destroy_droplet(droplet.id)
            except ProviderError as e2:
                self.say(f"destroying {c.name} failed too ({e2}): the next run adopts it")
                raise RotationError(f"{c.name}: {e}") from e
            journal.clear(self.journal_path)
            raise RotationError(f"{c.name}: {e}") from e
        journal.clear(self.journal_path)
        self.say(f"recorded {fqdn} ({droplet.name}, {droplet.ipv4}) in "
                 f"{time.monotonic() - t0:.1f} s")

    def _spec(self, name: str) -> DropletSpec:
        return DropletSpec(name=name, region=self.rc.region, size=self.rc.size,
                           image=self.rc.image, ssh_keys=tuple(self.rc.ssh_keys),
                           tags=tuple(self.rc.tags), user_data=self.user_data)

    async def _cleanup_named(self, name: str) -> None:
        """After a failed create call: the droplet may exist all the same. Destroy it, then
        clear the journal; if that cannot be known, keep the journal for the next run."""
        try:
            for d in await self.provider.list_droplets():
                if d.name == name:
                    self.say(f"destroying {name} (id {d.id}), created despite the error")
                    await self.provider.destroy_droplet(d.id)
        except ProviderError as e:
            self.say(f"cannot check for {name} ({e}): the next run will")
            return
        journal.clear(self.journal_path)

    async def _wait_active(self, droplet: Droplet, t0: float) -> Droplet:
        deadline = t0 + self.rc.ready_timeout
        status = None
        while not droplet.ready:
            if droplet.status != status:
                status = droplet.status
                self.say(f"  {droplet.name}: {status or 'unknown'}, waiting for active")
            if time.monotonic() >= deadline:
                raise RotationError(f"not active after {self.rc.ready_timeout:g} s")
            await asyncio.sleep(self.rc.poll_interval)
            got = await self.provider.get_droplet(droplet.id)
            if got is None:
                raise RotationError("the droplet disappeared")
            droplet = got
        self.say(f"  {droplet.name}: active at {droplet.ipv4}"
                 + (f" and {droplet.ipv6}" if droplet.ipv6 else ""))
        return droplet

    async def _wait_ready(self, droplet: Droplet, fqdn: str, t0: float) -> None:
        deadline = t0 + self.rc.ready_timeout
        hostname = self.rc.check_hostname or fqdn
        ctx = readiness.ssl_context(self.rc.check_ca_file) if self.rc.check_scheme == "https" \
            else None
        self.say(f"  checking {self.target.url(droplet.ipv4)} as {hostname}")
        last = None
        async with aiohttp.ClientSession() as session:
            while True:
                why = await readiness.check(session, self.target, droplet.ipv4, hostname, ctx)
                if why is None:
                    self.say(f"  {fqdn} answers the control request")
                    return
                if why != last:
                    self.say(f"  not ready: {why}")
                    last = why
                if time.monotonic() + self.rc.poll_interval >= deadline:
                    raise RotationError(f"not ready after {self.rc.ready_timeout:g} s: {why}")
                await asyncio.sleep(self.rc.poll_interval)


async def _has_table(db: Database) -> bool:
    row = await db.query_one(
        "SELECT count() AS n FROM system.tables WHERE database = currentDatabase() "
        "AND name = %(t)s", {"t": state.TABLE})
    return bool(row and row["n"])

