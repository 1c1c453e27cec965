"""Per-series status and change points (pure, deterministic).

A series is every measurement of one (test_name, input, probe_cc, probe_asn), cut into time
buckets (hourly by default); a bucket holds counts of its measurements by outcome:

* confirmed: `confirmed = 't'` (a blocking fingerprint matched);
* pure anomaly: an anomaly that is not confirmed;
* accessible: neither anomaly nor failure;
* failure: the measurement itself failed; it says nothing about blocking and is ignored.

The algorithm, after OONI's analysis detector, for each bucket with n > 0 useful measurements
(n = confirmed + pure anomaly + accessible), in time order:

1. Moving averages weighted by count. With `alpha` the weight of one measurement, the bucket
   weighs w = 1 - (1 - alpha)^n (its first bucket initialises the series: w = 1), and
   `confirmed_perc`, `pure_anomaly_perc` and `accessible_perc` each become
   (1 - w) * previous + w * the bucket's own share. A bucket of many measurements thus moves
   the averages more than a bucket of one; the three averages always sum to 1. `cnt` counts
   the measurements seen.
2. Status with hysteresis. Once `cnt` reaches `min_count` (before that the status stays
   UNKNOWN), the status becomes BLOCKED when confirmed_perc + pure_anomaly_perc
   >= `blocked_threshold` or confirmed_perc >= `confirmed_threshold`, OK when accessible_perc
   >= `ok_threshold`, and otherwise stays what it was. `validate` requires the thresholds to
   leave a dead band between the two conditions, so a series hovering in between never flaps.
3. Change point. Each bucket votes, by the same thresholds applied to its own shares, for
   BLOCKED, OK, or neither (abstains). The "streak" is the run of buckets voting for one
   status, started by the first bucket voting for it after a bucket voting otherwise;
   abstaining and empty buckets neither break nor extend it. When the status changes from OK
   to BLOCKED or back, an event is emitted whose `time` is the start of the streak of the new
   status: the first bucket of the run that caused the change (the change point), not the
   later bucket where the moving average crossed the threshold (`detected`). The averages are
   convex combinations, so a crossing always happens on a bucket voting for the new status
   and the change point is never before the previous detection. The first status of a series
   (from UNKNOWN) is the start of observation, not a change: no event.
4. Stability: a moving average (same weight w) of 1 - d, d being the total variation
   distance between the bucket's shares and the averages before it (half the sum of the
   absolute differences). 1: every bucket looked like the past; near 0: the series keeps
   changing. `change` is the last bucket's signed change of accessible_perc.

Every stored number is rounded to float32 after each bucket (the columns are Float32), so a
run resumed from the database computes exactly what an uninterrupted run would. A bucket at
or before the series' `last_time` is skipped: applying a batch twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from collections.abc import Iterable
from dataclasses import dataclass

OK = "OK"
BLOCKED = "BLOCKED"
UNKNOWN = "UNKNOWN"


def f32(x: float) -> float:
    """`x` rounded to the nearest float32, as a Float32 column stores it."""
    return struct.unpack("f", struct.pack("f", x))[0]


@dataclass(frozen=True)
class Params:
    """Detector parameters (the [detector] config section)."""

    alpha: float = 0.05
    blocked_threshold: float = 0.6
    confirmed_threshold: float = 0.3
    ok_threshold: float = 0.8
    min_count: int = 10

    def validate(self) -> None:
        """Raise ValueError unless the parameters make sense (a dead band between OK and
        BLOCKED, shares within 0..1)."""
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be within (0, 1]")
        for name in ("blocked_threshold", "confirmed_threshold", "ok_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within (0, 1]")
        if self.ok_threshold + min(self.blocked_threshold, self.confirmed_threshold) <= 1:
            raise ValueError("ok_threshold + min(blocked_threshold, confirmed_threshold) must "
                             "exceed 1 (no dead band: a series could be OK and BLOCKED at once)")
        if self.min_count < 0:
            raise ValueError("min_count must not be negative")


@dataclass(frozen=True)
class Bucket:
    """Measurement counts of one series in one time bucket (`time` = the bucket's start)."""

    time: dt.datetime
    confirmed: int = 0
    pure_anomaly: int = 0
    accessible: int = 0
    failure: int = 0

    @property
    def useful(self) -> int:
        return self.confirmed + self.pure_anomaly + self.accessible


@dataclass(frozen=True)
class State:
    """What the detector keeps per series between buckets (a blocking_status row)."""

    confirmed_perc: float = 0.0
    pure_anomaly_perc: float = 0.0
    accessible_perc: float = 0.0
    cnt: float = 0.0
    status: str = UNKNOWN
    old_status: str = UNKNOWN
    change: float = 0.0
    stability: float = 0.0
    last_time: dt.datetime | None = None
    streak_status: str = ""
    streak_start: dt.datetime | None = None


@dataclass(frozen=True)
class Change:
    """A status change: `time` is the change point, `detected` the bucket where the moving
    average crossed the threshold."""

    time: dt.datetime
    detected: dt.datetime
    old_status: str
    status: str


def _judge(confirmed: float, pure_anomaly: float, accessible: float, p: Params) -> str | None:
    if confirmed + pure_anomaly >= p.blocked_threshold or confirmed >= p.confirmed_threshold:
        return BLOCKED
    if accessible >= p.ok_threshold:
        return OK
    return None


def update(state: State, bucket: Bucket, p: Params) -> tuple[State, Change | None]:
    """Apply one bucket to a series' state: the new state, and the change it caused if any."""
    if state.last_time is not None and bucket.time <= state.last_time:
        return state, None  # already applied (a resumed run)
    n = bucket.useful
    if n == 0:
        return dataclasses.replace(state, last_time=bucket.time), None
    share_c, share_a, share_k = (bucket.confirmed / n, bucket.pure_anomaly / n,
                                 bucket.accessible / n)
    first = state.cnt <= 0
    w = 1.0 if first else 1.0 - (1.0 - p.alpha) ** n
    conf = f32((1 - w) * state.confirmed_perc + w * share_c)
    pure = f32((1 - w) * state.pure_anomaly_perc + w * share_a)
    acc = f32((1 - w) * state.accessible_perc + w * share_k)
    if first:
        stability = 1.0
    else:
        d = (abs(share_c - state.confirmed_perc) + abs(share_a - state.pure_anomaly_perc)
             + abs(share_k - state.accessible_perc)) / 2
        stability = (1 - w) * state.stability + w * (1 - min(d, 1.0))
    cnt = f32(state.cnt + n)

    vote = _judge(share_c, share_a, share_k, p)
    streak_status, streak_start = state.streak_status, state.streak_start
    if vote is not None and vote != streak_status:
        streak_status, streak_start = vote, bucket.time

    status, old_status, change = state.status, state.old_status, None
    if cnt >= p.min_count:
        new = _judge(conf, pure, acc, p) or status
        if new != status:
            if status != UNKNOWN:
                at = streak_start if streak_status == new and streak_start else bucket.time
                change = Change(time=at, detected=bucket.time, old_status=status, status=new)
            old_status, status = status, new
    new_state = State(confirmed_perc=conf, pure_anomaly_perc=pure, accessible_perc=acc,
                      cnt=cnt, status=status, old_status=old_status,
                      change=f32(acc - state.accessible_perc) if not first else 0.0,
                      stability=f32(stability), last_time=bucket.time,
                      streak_status=streak_status, streak_start=streak_start)
    return new_state, change


def run_series(state: State, buckets: Iterable[Bucket], p: Params) -> tuple[State, list[Change]]:
    """Apply buckets (in time order) to a series; the final state and every change."""
    changes = []
    for b in buckets:
        state, ch = update(state, b, p)
        if ch is not None:
            changes.append(ch)
    return state, changes
